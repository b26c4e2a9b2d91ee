"""Evaluation metrics: FID / KID / precision-recall via torch-fidelity, NLL in bits/dim via the ELBO.

Files: ``evaluate.py`` (the entry point, JSON records), ``fidelity.py`` (torch-fidelity call and
reference cache), ``inception.py`` (offline weights, sha256), ``images.py`` (uint8 datasets:
streamed samples, reference split), ``nll.py`` (dequantisation and bits/dim around each process's own
ELBO terms, ``process.elbo``), ``in_training.py`` (the evaluation callback ``genproc.train`` passes to the engine).

    from genproc.metrics import evaluate
    records = evaluate("runs/ihdm_mnist", "fid,kid,nll", n=10000, inception_weights="weights.pth")
"""

from genproc.metrics.evaluate import METRICS, evaluate, format_table, parse_metrics
from genproc.metrics.nll import bits_per_dim, evaluate_nll

__all__ = ["METRICS", "bits_per_dim", "evaluate", "evaluate_nll", "format_table", "parse_metrics"]

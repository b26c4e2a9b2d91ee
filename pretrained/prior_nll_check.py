"""How much the stored (compressed) KDE prior moves the NLL bound: the blur and IHDM full runs evaluated on the first
200 test images with the prior blurred from the training set (exact) and with the released stored prior, same seed.
Run from the repository root on the machine that trained them (it reads runs/):
python pretrained/prior_nll_check.py > pretrained/prior_nll_check.txt"""

from dataclasses import replace

import genproc
from genproc.engine import checkpoint as ckpt
from genproc.metrics import evaluate

for name in ("blur_mnist_small", "ihdm_mnist_small"):
    full = genproc.load(f"runs/{name}", data_root="../shared/data/mnist")
    rel_ck = ckpt.list_checkpoints(f"pretrained/{name}")[-1]
    stored = full.process.prior_from_state(ckpt.load_prior(rel_ck))
    out = {}
    for label, run in (("data prior", replace(full, stored_prior=None)), ("stored prior", replace(full, stored_prior=stored))):
        (rec,) = evaluate(run, "nll", n=200, seed=0, log=lambda *_: None)
        out[label] = rec
        print(f"{name}, {label}: {rec['value']:.5f} bits/dim ± {rec['std_error_bits_per_dim']:.5f}; "
              f"L_K {rec['terms_nats']['L_K']:.4f} nats per image")
    print(f"{name}: stored - data = {out['stored prior']['value'] - out['data prior']['value']:+.5f} bits/dim "
          f"(stored prior max pixel error {stored.max_error:.2e})")

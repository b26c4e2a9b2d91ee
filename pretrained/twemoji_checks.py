"""Prints the figures pretrained/README.md quotes for the Twemoji releases: training time and median img/s from each
release's metrics.jsonl, the release's size in bytes and MiB, and the stored prior (IHDM/blur: DCT coefficients kept
per channel, measured error). Run from the repository root: python pretrained/twemoji_checks.py > pretrained/twemoji_checks.txt"""

import json
from pathlib import Path

from safetensors.torch import load_file

for rel in sorted(Path("pretrained").glob("*_twemoji_small")):
    rows = [json.loads(line) for line in (rel / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    ips = sorted(r["img_per_s"] for r in rows)
    size = sum(f.stat().st_size for f in rel.rglob("*") if f.is_file())
    line = (f"{rel.name}: steps {rows[0]['step']}-{rows[-1]['step']} logged over {(rows[-1]['time'] - rows[0]['time']) / 60:.1f} min, "
            f"median {ips[len(ips) // 2]:.1f} img/s | size {size} bytes = {size / 2**20:.2f} MiB")
    for prior in rel.glob("checkpoints/*/prior.safetensors"):
        s = load_file(str(prior))
        if "coef" in s:
            line += (f" | prior: {int(s['index'].numel())} of {int(s['hw'].prod())} DCT coefficients per channel for "
                     f"{s['coef'].shape[0]} centres, {str(s['coef'].dtype).replace('torch.', '')}, measured max error "
                     f"{float(s['max_error'][0]):.2e}")
    print(line)
total = sum(f.stat().st_size for f in Path("pretrained").rglob("*") if f.is_file())
print(f"pretrained/ in all: {total} bytes = {total / 2**20:.2f} MiB")

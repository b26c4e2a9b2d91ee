"""The released models sample as they did before samplers became their own units (issue 20): 4 samples at seed 3 of
each release under its recorded settings (DDPM and BDM: ancestral, 1000 calls; IHDM: its chain) and DDPM with DDIM over
10 levels, by the code of commit c93acab (the last before the change) and by this checkout.

    git worktree add /tmp/oldtree c93acab
    python docs/samplers/same_as_before.py /tmp/oldtree /tmp/old.pt old
    python docs/samplers/same_as_before.py . /tmp/new.pt new
    python docs/samplers/same_as_before.py --diff /tmp/old.pt /tmp/new.pt      # -> same_as_before.txt
"""

import sys

import torch

if sys.argv[1] == "--diff":
    a, b = torch.load(sys.argv[2]), torch.load(sys.argv[3])
    for k in a:
        d = (a[k] - b[k]).abs()
        print(f"{k:<10} max |old - new| {float(d.max()):.3g}  mean {float(d.mean()):.3g}  (images in [0, 1])")
    sys.exit()
sys.path.insert(0, sys.argv[1])
from genproc.run import load  # noqa: E402

out = {}
for key in ("ddpm", "bdm", "ihdm", "ddpm_ddim"):
    r = load(f"pretrained/{key.split('_')[0]}_mnist_small", device="cpu")
    if key == "ddpm_ddim":  # the old spelling, then the new one
        r = r.with_sampling(sampler="ddim", **({"ddim_steps": 10} if sys.argv[3] == "old" else {"steps": 10}))
    out[key] = r.sample(4, seed=3, capture_every=-1).images
torch.save(out, sys.argv[2])

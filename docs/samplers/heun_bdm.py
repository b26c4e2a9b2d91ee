"""Why 'heun' refuses BDM (issue 20): the largest per-coordinate step ratio sigma~_c(k) / sigma~_c(s) along EDM's
schedule (rho = 7, in the DC coefficient's sigma~, as Heun picks its levels) on the released bdm_mnist_small, and the
same for ddpm_mnist_small, where every coordinate shares sigma~. Heun's correction multiplies the change of the
denoised estimate between a step's ends by (r - 1) / 2 in a coordinate with ratio r.

    python docs/samplers/heun_bdm.py > docs/samplers/heun_bdm.txt
"""

import genproc
from genproc.samplers.edm import edm_levels, reference_sigmas, sigma_tilde

for name in ("ddpm_mnist_small", "bdm_mnist_small"):
    p = genproc.load(f"pretrained/{name}", data_root="../shared/data/mnist").process
    hw = (28, 28)
    ref = reference_sigmas(p, (8, 8))
    for steps in (5, 10, 25):
        lv = edm_levels(ref, p.num_levels, steps, 7.0)
        r = [float((sigma_tilde(p, k, hw) / sigma_tilde(p, s, hw)).max()) for k, s in zip(lv[:-1], lv[1:])]
        worst = max(range(len(r)), key=r.__getitem__)
        print(f"{name}: {steps} Heun levels ({2 * len(lv) - 1} calls): largest per-coordinate sigma~ ratio of a step "
              f"{r[worst]:.1f} (levels {lv[worst]} -> {lv[worst + 1]}); levels {lv if steps <= 10 else '...'}")

#!/usr/bin/env bash
# The FID-per-network-call frontier of the four released MNIST models (issue 20), in the order that measures the
# deciding cost points first. Every point lands in points/ as soon as it is measured and a rerun measures only what is
# missing, so this script resumes where it stopped. Raw output: run.txt beside it (appended by each run).
#   n = 500 samples per point, sample seed 0, against the 10,000 MNIST test images (torch-fidelity; the reference
#   statistics are embedded once and cached). The n = 1000, two-seed points at 20 and 50 calls are a later pass
#   (--n 1000 --seeds 0,1 --calls 20,50 into the same folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
export GENPROC_INCEPTION_WEIGHTS=${GENPROC_INCEPTION_WEIGHTS:-../shared/weights/weights-inception-2015-12-05-6726825d.pth}
OUT=docs/frontier_mnist_small
P=pretrained
COMMON=(--n 500 --seeds 0 --data-root ../shared/data/mnist --out "$OUT" --no-full-chain --no-floor)
GAUSS=(--samplers ancestral --samplers ddim --samplers dpmpp_2m --samplers heun)  # x̂₀ clamped (every sampler's default)
# 1. the deciding costs: 20 and 50 calls
genproc frontier $P/ddpm_mnist_small $P/bdm_mnist_small --calls 20,50 "${GAUSS[@]}" "${COMMON[@]}"
genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 50 --samplers chain "${COMMON[@]}"
genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 20,25 --samplers heat_jump "${COMMON[@]}"
# 2. 10 calls
genproc frontier $P/ddpm_mnist_small $P/bdm_mnist_small --calls 10 "${GAUSS[@]}" "${COMMON[@]}"
genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 10 --samplers heat_jump "${COMMON[@]}"
# 3. the naive baseline: IHDM's own chain over fewer levels (one level's residual per call, the level index jumping)
genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 10,20 --samplers chain "${COMMON[@]/--no-floor/--floor}"

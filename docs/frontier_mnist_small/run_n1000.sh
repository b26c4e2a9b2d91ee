#!/usr/bin/env bash
# The deciding costs (20 and 50 network calls) at n = 1000, for each process's best sampler at n = 500 (run.sh's
# table): DDPM heun, BDM ancestral, IHDM and blur heat_jump at 20 and their own chain at 50 (K = 50: heat_jump with
# steps = K is the chain itself), sample seed 0; a second seed (1) for the two best at each cost (BDM ancestral and
# IHDM heat_jump at 20, BDM ancestral and blur's chain at 50), then for the others. Then the
# real-vs-real floor at n = 1000. Resumes per point like run.sh; raw output: run_n1000.txt (appended).
set -euo pipefail
cd "$(dirname "$0")/../.."
export GENPROC_INCEPTION_WEIGHTS=${GENPROC_INCEPTION_WEIGHTS:-../shared/weights/weights-inception-2015-12-05-6726825d.pth}
OUT=docs/frontier_mnist_small
P=pretrained
COMMON=(--n 1000 --data-root ../shared/data/mnist --out "$OUT" --no-full-chain --no-floor)
genproc frontier $P/ddpm_mnist_small --calls 20,50 --samplers heun --seeds 0 "${COMMON[@]}"
genproc frontier $P/bdm_mnist_small --calls 20,50 --samplers ancestral --seeds 0,1 "${COMMON[@]}"
genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 20 --samplers heat_jump --seeds 0 "${COMMON[@]}"
genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 50 --samplers chain --seeds 0 "${COMMON[@]}"
genproc frontier $P/ihdm_mnist_small --calls 20 --samplers heat_jump --seeds 1 "${COMMON[@]}"
genproc frontier $P/blur_mnist_small --calls 50 --samplers chain --seeds 1 "${COMMON[@]}"
# seed 1 for the others, as far as the session's time went (a rerun finishes what is missing)
genproc frontier $P/ihdm_mnist_small --calls 50 --samplers chain --seeds 1 "${COMMON[@]}"
genproc frontier $P/blur_mnist_small --calls 20 --samplers heat_jump --seeds 1 "${COMMON[@]}"
genproc frontier $P/ddpm_mnist_small --calls 20,50 --samplers heun --seeds 1 "${COMMON[@]}"
# the floor at n = 1000 (the first 1000 training images against the same 10,000 test images), and the report
genproc frontier $P/ihdm_mnist_small --calls 50 --samplers chain --n 1000 --seeds 0 --data-root ../shared/data/mnist --out "$OUT" --no-full-chain --floor

#!/usr/bin/env bash
# The deciding costs (20 and 50 network calls) at n = 1000 and two sample seeds (issue 20), for each process's best
# sampler at n = 500 (run.sh's table): DDPM heun, BDM ancestral, IHDM and blur heat_jump at 20 and their own chain at
# 50 (K = 50: heat_jump with steps = K is the chain itself). Resumes per point like run.sh; raw output: run_n1000.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GENPROC_INCEPTION_WEIGHTS=${GENPROC_INCEPTION_WEIGHTS:-../shared/weights/weights-inception-2015-12-05-6726825d.pth}
OUT=docs/frontier_mnist_small
P=pretrained
for SEED in 0 1; do
  COMMON=(--n 1000 --seeds $SEED --data-root ../shared/data/mnist --out "$OUT" --no-full-chain --no-floor)
  genproc frontier $P/ddpm_mnist_small --calls 20,50 --samplers heun "${COMMON[@]}"
  genproc frontier $P/bdm_mnist_small --calls 20,50 --samplers ancestral "${COMMON[@]}"
  genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 20 --samplers heat_jump "${COMMON[@]}"
  genproc frontier $P/ihdm_mnist_small $P/blur_mnist_small --calls 50 --samplers chain "${COMMON[@]}"
done
# the floor at n = 1000 (the first 1000 training images against the same 10,000 test images)
genproc frontier $P/ihdm_mnist_small --calls 50 --samplers chain --n 1000 --seeds 0 --data-root ../shared/data/mnist --out "$OUT" --no-full-chain --floor

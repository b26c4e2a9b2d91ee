#!/usr/bin/env bash
# The heat_jump sampler's settings on pretrained/ihdm_mnist_small: FID of n = 500 samples vs the first 1000 MNIST test
# images (torch-fidelity), seed 0, the protocol of issue 20's baseline table (the 50-call chain: 44.6 there).
# Output: heat_jump_probe.txt beside this file.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GENPROC_INCEPTION_WEIGHTS=${GENPROC_INCEPTION_WEIGHTS:-../shared/weights/weights-inception-2015-12-05-6726825d.pth}
for cfg in "$@"; do
  args=(); for kv in $cfg; do args+=(--sampling "$kv"); done
  echo "## heat_jump $cfg"
  genproc evaluate pretrained/ihdm_mnist_small --metrics fid --n 500 --n-ref 1000 --data-root ../shared/data/mnist \
    --sampling sampler=heat_jump "${args[@]}" 2>&1 | grep -E "^fid|calls" || true
done

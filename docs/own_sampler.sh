#!/bin/bash
# FID/KID of each released MNIST model with its own full sampler (IHDM and blur: K = 50; DDPM and BDM: ancestral,
# T = 1000), and DDPM/BDM at DDIM-50 at the same n, 128 samples each, seed 0, against the 10,000 test images.
# Run from the repository root: bash docs/own_sampler.sh > docs/compare_mnist_small/own_sampler.txt 2>&1
export GENPROC_INCEPTION_WEIGHTS=../shared/weights/weights-inception-2015-12-05-6726825d.pth
for m in ihdm blur ddpm bdm; do
  echo "== $m, own sampler"; date -u
  genproc evaluate pretrained/${m}_mnist_small --metrics fid,kid --n 128 --seed 0 --data-root ../shared/data/mnist
done
for m in ddpm bdm; do
  echo "== $m, DDIM-50"; date -u
  genproc evaluate pretrained/${m}_mnist_small --metrics fid,kid --n 128 --seed 0 --data-root ../shared/data/mnist \
      --sampling sampler=ddim --sampling steps=50
done
date -u

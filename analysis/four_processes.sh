#!/bin/bash
# The studies' four-process rows (issue 12) on the released models, one after another. From the repository root:
# bash analysis/four_processes.sh > analysis/four_processes.log 2>&1
cd "$(dirname "$0")/.."
export GENPROC_DATA=${GENPROC_DATA:-../shared/data}  # the folder that holds mnist/
P="pretrained/ihdm_mnist_small pretrained/ddpm_mnist_small pretrained/bdm_mnist_small pretrained/blur_mnist_small"
set -x
date; time genproc analyze gradients $P --n 16 --out analysis/gradients
date; time genproc analyze interpolation $P --pairs 8 --frames 9 --sampling sampler=ddim --sampling steps=100 --sampling eta=1.0 --out analysis/interpolation
date; time genproc analyze neighbours $P --n 64 --k 3 --n-test 1000 --sampling sampler=ddim --sampling steps=50 --out analysis/neighbours
date; time genproc analyze spectra $P --n 16 --out analysis/spectra
date

# The colour comparison (issue 22): the released Twemoji models, n = 371 samples (the test folder's size) at seeds 0
# and 1 against all 371 test images, each process at about 50 network calls per image with the sampler that was
# best at 50 calls on MNIST (docs/frontier_mnist_small): IHDM its K = 50 chain, DDPM EDM's Heun over 25 steps
# (49 calls), BDM its ancestral sampler over 50 levels; x^0 clamped as on the frontier. The NLL is left out (its
# 1000-level ELBO on the diffusions costs more CPU than the session had). Not run yet; its raw output goes to compare_output.txt.
cd "$(dirname "$0")/../.." && /usr/bin/time -f "wall %e s" genproc compare ihdm ddpm bdm \
    --runs pretrained/ihdm_twemoji_small pretrained/ddpm_twemoji_small pretrained/bdm_twemoji_small \
    --data-root ../shared/data/twemoji --n 371 --more-seeds 1 --metrics fid,kid \
    --sampling ddpm:sampler=heun --sampling ddpm:steps=25 --sampling ddpm:clip=clamp \
    --sampling bdm:steps=50 --sampling bdm:clip=clamp \
    --inception-weights ../shared/weights/weights-inception-2015-12-05-6726825d.pth --out docs/compare_twemoji_small

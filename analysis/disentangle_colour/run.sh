# Colour and shape (issue 22; paper Sec. 4, Fig. 7a): the released Twemoji models, 6 priors x 6 noise sequences,
# each with the sampler of its recipe (IHDM: its chain; DDPM and BDM: the ancestral sampler over all 1000 levels,
# whose step noise is what "shared noise" fixes). Not run yet; its raw output goes to run.txt.
cd "$(dirname "$0")/../.." && /usr/bin/time -f "wall %e s" genproc analyze disentangle \
    pretrained/ihdm_twemoji_small pretrained/ddpm_twemoji_small pretrained/bdm_twemoji_small \
    --rows 6 --cols 6 --out analysis/disentangle_colour

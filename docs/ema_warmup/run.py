"""The README's library example at its 300 steps (EMA warm-up on, the default), then 16 samples (seed 0) from its EMA
weights and from its raw weights."""
import time

import genproc
from genproc import HeatConfig, Recipe, TrainConfig, UNetConfig

recipe = Recipe(name="demo", process=HeatConfig(K=20, sigma_blur_max=8.0),  # embedded digits data, 16x16
                net=UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,)),
                train=TrainConfig(lr=1e-3, warmup_steps=100, max_steps=300))
t0 = time.time()
run = genproc.train(recipe, "runs/demo", progress=False)
print(f"trained runs/demo in {time.time() - t0:.0f} s; train.ema_warmup={run.recipe.train.ema_warmup}")
run.sample(16, seed=0).save("out/ema_warmup")
genproc.load("runs/demo", weights="model").sample(16, seed=0).save("out/raw_weights")
print("wrote out/ema_warmup, out/raw_weights (16 samples each, seed 0)")

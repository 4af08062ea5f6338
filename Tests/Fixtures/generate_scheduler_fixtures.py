"""diffusers DDIMScheduler outputs for the spacings and beta schedules the tiny models do not use
-> Tests/Fixtures/expected/schedulers.safetensors.

Run: venv/bin/python Tests/Fixtures/generate_scheduler_fixtures.py   (pins: Tests/Fixtures/requirements.txt)
Tensor names: timesteps.<spacing>.o<steps_offset>.n<steps> (as F32) and alphas_cumprod.<beta_schedule>.
"""
import os

import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                set_alpha_to_one=False, num_train_timesteps=1000)
TIMESTEP_CASES = [("trailing", 0, 7), ("trailing", 0, 10), ("trailing", 0, 16), ("trailing", 0, 1), ("trailing", 0, 61),
                  ("linspace", 0, 7), ("linspace", 0, 10), ("linspace", 0, 1), ("leading", 1, 7), ("leading", 0, 1)]

out = {}
for spacing, offset, steps in TIMESTEP_CASES:
    scheduler = DDIMScheduler(**SD_BETAS, timestep_spacing=spacing, steps_offset=offset)
    scheduler.set_timesteps(steps)
    out[f"timesteps.{spacing}.o{offset}.n{steps}"] = scheduler.timesteps.float()
for schedule in ["linear", "squaredcos_cap_v2"]:
    scheduler = DDIMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule=schedule)
    out[f"alphas_cumprod.{schedule}"] = scheduler.alphas_cumprod.float()

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected", "schedulers.safetensors")
save_file({k: v.contiguous().clone() for k, v in out.items()}, path)
print(f"wrote {len(out)} tensors to {path}")

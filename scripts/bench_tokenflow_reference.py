"""Benchmark driver (not a test): the REFERENCE TokenFlow-PnP edit (omerbt/TokenFlow) of a clip's decoded frames,
run by scripts/bench_tokenflow.sh as one process timed from outside (model loading included).

    venv/bin/python scripts/bench_tokenflow_reference.py --reference /tmp/tokenflow-ref --model DIR \
        --frames clip.rgb --size 256x160 [--steps 4] [--inversion-steps 4] [--threads 2]

--frames: packed RGB24 frames (`clip_tool probe CLIP RGB_OUT` writes the decoded frames of a clip so).
The reference's code is imported from --reference and driven exactly as the fixture generator drives it
(Tests/Fixtures/generate_tokenflow_fixtures.py, `pnp_edit`: fp32 on CPU, its prompts, batch size 8, guidance
7.5, pnp_attn_t 0.5, pnp_f_t 0.8): encode, DDIM inversion (without preprocess.py's reconstruction), PnP
sampling, decode.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures"))
import generate_tokenflow_fixtures as gen  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="the *.py files of omerbt/TokenFlow (git archive | tar -x)")
    ap.add_argument("--model", required=True, help="a diffusers model folder")
    ap.add_argument("--frames", required=True, help="packed RGB24 frames")
    ap.add_argument("--size", required=True, help="WxH of the frames")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--inversion-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sd-version", default="2.1", help="the reference's sd_version (only names the hub model)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    ref, _, _ = gen.setup_reference(args.reference, args.threads)
    frames_u8 = np.fromfile(args.frames, dtype=np.uint8).reshape(-1, height, width, 3)
    n = len(frames_u8)
    if n % gen.BATCH_SIZE:
        raise SystemExit(f"{n} frames: the reference edits a multiple of its batch size {gen.BATCH_SIZE}")
    # The keyframe per batch and step (the reference draws it with torch.randint), seeded.
    offsets = torch.randint(0, gen.BATCH_SIZE, (args.steps, n // gen.BATCH_SIZE),
                            generator=torch.Generator().manual_seed(gen.KEYFRAME_SEED))
    models = gen.Models(args.model, None, torch.float32)
    decoded, seconds = gen.pnp_edit(ref, models, args.sd_version, gen.to_reference_frames(frames_u8, torch.float32),
                                    offsets, inversion_steps=args.inversion_steps, steps=args.steps)
    assert decoded.shape == (n, 3, height, width) and torch.isfinite(decoded).all()
    print(f"reference_pnp_edit frames={n} size={width}x{height} steps={args.steps} inversion_steps={args.inversion_steps} "
          f"threads={torch.get_num_threads()} edit_seconds={seconds:.1f}")


if __name__ == "__main__":
    main()

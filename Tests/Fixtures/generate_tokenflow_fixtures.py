"""Run the REFERENCE TokenFlow implementation (omerbt/TokenFlow, MIT) on the tiny test models and record
the expected outputs the Swift TokenFlow engine is tested against.

Usage (from the repository root, with the pinned venv of Tests/Fixtures/requirements.txt):

    mkdir -p /tmp/tokenflow-ref && git -C <TokenFlow clone> archive HEAD -- '*.py' | tar -x -C /tmp/tokenflow-ref
    venv/bin/python Tests/Fixtures/generate_tokenflow_fixtures.py --reference /tmp/tokenflow-ref \
        --out Tests/Fixtures/expected

No reference code is copied here: the reference modules (preprocess.py, run_tokenflow_pnp.py,
run_tokenflow_sdedit.py, tokenflow_utils.py, util.py) are IMPORTED at run time from --reference and driven
from outside. What runs is the reference's own code:
    Preprocess.get_text_embeds / encode_imgs / ddim_inversion / ddim_sample, preprocess.get_timesteps,
    TokenFlow.encode_imgs / get_ddim_eps / get_text_embeds / get_pnp_inversion_prompt / init_method /
    batched_denoise_step (-> denoise_step, tokenflow_utils.register_* and the TokenFlowBlock) /
    decode_latents, for both run_tokenflow_pnp.TokenFlow and run_tokenflow_sdedit.TokenFlow.
The adaptations, all made from outside the reference code:
  * CPU and fp32 (the reference hard-codes CUDA and fp16): models are loaded from the local tiny model
    folders in float32 (sd15-tiny's F16 `.fp16.safetensors` variant files are upcast on load), frames and
    latents are never cast to fp16. `batched_denoise_step` is decorated with
    `torch.autocast(dtype=float16, device_type='cuda')`; on a machine without CUDA torch disables that
    autocast (with a warning), so everything runs in fp32.
  * The classes are built with `cls.__new__(cls)` + `nn.Module.__init__` and the attributes their methods
    use are set here (their __init__ would download hub models and read frames from PNG files). The few
    lines of the scripts' __init__/edit_video/sample_loop/extract_latents/prep that are glue (set_timesteps,
    the SDEdit timestep slice, int(steps * pnp_f_t), add_noise, the `for t in timesteps` loop) are written
    out below, each marked with the reference line it mirrors.
  * Inverted latents are written by Preprocess.ddim_inversion into a temporary directory
    (<tmp>/latents/noisy_latents_<t>.pt, plus <tmp>/inversion_prompt.txt as prep() writes it); the
    TokenFlow objects read them back from there with torch.load (get_ddim_eps, load_source_latents_t).
  * Keyframes: batched_denoise_step draws them with `torch.randint(batch_size, (len(x)//batch_size,))`;
    during each call torch.randint is replaced by a function that checks those arguments and returns this
    step's row of a fixed schedule (drawn once from a seeded generator and stored in the fixtures).
  * util.py imports torchvision, kornia and cv2 (video I/O and helpers); none of them is used by the code
    paths above, and they are not in the fixture venv. If an import is missing, a stub module is inserted
    into sys.modules whose attributes raise when called (see `install_stubs`), so an accidental use fails
    loudly. PyYAML, tqdm and Pillow (also imported by the reference) are real: pinned in requirements.txt.
    tqdm progress bars are silenced with TQDM_DISABLE=1.

Input clip (uint8 RGB, 16 frames of 64x64, x = column, y = row, f = frame, all integers):
    r = (4x + 3f) mod 256,  g = (4y + 5f) mod 256,  b = (2(x + y) + 7f) mod 256,
    then a white (255, 255, 255) 16x16 square at rows 8+f .. 23+f, columns 4+2f .. 19+2f (inclusive).
The reference's float frames are T.ToTensor()'s float32(v) / 255 (NCHW); encode_imgs feeds 2 * frames - 1.

Cases (steps = 10 sampling steps, batch_size 8, guidance 7.5, pnp_attn_t 0.5, pnp_f_t 0.8, eta 0):
  main     16 frames, inversion_steps 10: inversion, reconstruction, TokenFlow-PnP
  short    13 frames (the first 13), same inversion: TokenFlow-PnP with a short last batch
  inv20    16 frames, inversion_steps 20: the 10 sampling timesteps are a subset of the 20 inversion ones
           (leading spacing, steps_offset 1: 1, 51, ..., 951 contains 1, 101, ..., 901). get_ddim_eps takes
           eps from the noisiest latents on disk (t = 951, saved after the inversion loop) and edit_video adds
           it at t = 901, so inv20.pnp.init is not inv20.inverted.901.
  sdedit   16 frames, inversion_steps 10: TokenFlow-SDEdit (extended attention + propagation, no injection)

The short last batch: the reference never runs 13 frames (get_latents_path rounds n_frames down to a multiple
of batch_size; bypassed here). Run anyway, batched_denoise_step asks torch.randint for 13 // 8 = 1 offset r,
broadcast onto torch.arange(0, 13, 8) = [0, 8]: keyframes r and 8 + r (so r <= 4). Frames 8..12 form a
5-frame batch, and the TokenFlowBlock computes the blend positions from that batch's OWN length n = 5:
s = arange(5) + 1 * 5 = 5..9, centres p1 = 1 * 5 + 5 // 2 = 7 and p2 = 0 * 5 + 2 = 2, w = sigmoid(d2 / (d1 + d2))
= 0.6457, 0.6900, 0.7311, 0.7021, 0.6852 (clip indices 8..12 with centres 12 and 4 would give 0.6225 ...
0.7311). Batch 0 at step 0 only depends on the keyframe pass and its own frames, so short.step0[0:8] can be
compared tightly by an engine that treats the short batch differently; from step 1 on, keyframe 8 + r comes
from the short batch and enters the keyframe pass, so everything depends on the reference's choice.

SDEdit start: run_tokenflow_sdedit slices timesteps[int(1 - start * len(timesteps)):], i.e. it keeps the
last floor(start * n) - 1 timesteps when start * n >= 1 (start 0.9, n 10: 8 timesteps 701, ..., 1; not 801);
all n when 0 < start * n < 1, and n - 1 for start 0. With use_ddim_noise the noise is eps from the noisiest
saved latents (t = 901), added at timesteps[0] = 701.

Output files (all tensors F32 except `frames`, stored as F16, exact for uint8 values; see the README.md section
"generate_tokenflow_fixtures.py: TokenFlow reference outputs" for the tensor list): expected/tokenflow-frames.safetensors (the clip, shared by both models),
expected/tokenflow-<model>.safetensors (main case), expected/tokenflow-<model>-variants.safetensors (short,
inv20, sdedit). Each file's metadata has a single key, `info`: sorted JSON with the settings (safetensors
writes several metadata keys in hash order, which would make regenerated files differ byte-wise).

Also printed: per-tensor statistics, sanity checks (finite; edit differs from reconstruction; the keyframe
schedule matters), the smallest top-1/top-2 margin of the nearest-neighbour argmax (how close the NN field is
to a tie), the fp32-vs-fp64 discrepancy of every case (the same reference code run in float64), and the
wall-clock time of the reference PnP run (inversion + sampling + decode, 16 frames, torch.set_num_threads(2)).
"""
import argparse
import contextlib
import glob
import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import tempfile
import time
import types
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402,F401
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------

MODELS = {
    # name: (diffusers weight variant, sd_version string given to the reference classes)
    "sd2-tiny": (None, "2.1"),
    "sd15-tiny": ("fp16", "1.5"),
}
N_FRAMES = 16
SHORT_FRAMES = 13
SIZE = 64
STEPS = 10  # sampling timesteps (config n_timesteps)
INVERSION_STEPS = 10  # config n_inversion_steps / preprocess --steps
INVERSION_STEPS_SUBSET = 20  # the inv20 case: 10 sampling timesteps taken from a 20-step inversion
BATCH_SIZE = 8  # TokenFlow batch_size; also the Preprocess (inversion / reconstruction) batch size
GUIDANCE = 7.5
PNP_ATTN_T = 0.5
PNP_F_T = 0.8
PROMPT = "a marble sculpture"
NEGATIVE_PROMPT = "ugly, blurry"
INVERSION_PROMPT = "a colorful video"
SDEDIT_START = 0.9  # the reference's config_sdedit.yaml default
KEYFRAME_SEED = 2024  # torch.Generator seed of the keyframe schedules
DECODED_FRAMES = [0, 7, 8, 15]  # frames of pnp.decoded kept in the fixture (first/last of each batch)
SQUARE = 16

FRAMES_FORMULA = (
    "uint8 RGB frames [16, 64, 64, 3] (NHWC; x = column, y = row, f = frame): r = (4x + 3f) % 256, "
    "g = (4y + 5f) % 256, b = (2(x + y) + 7f) % 256; then a white (255, 255, 255) 16x16 square at rows "
    "8+f..23+f and columns 4+2f..19+2f (inclusive)"
)

REFERENCE_FILES = ["preprocess.py", "run_tokenflow_pnp.py", "run_tokenflow_sdedit.py", "tokenflow_utils.py", "util.py"]


def make_frames(n=N_FRAMES, size=SIZE):
    f = np.arange(n, dtype=np.int64)[:, None, None]
    y = np.arange(size, dtype=np.int64)[None, :, None]
    x = np.arange(size, dtype=np.int64)[None, None, :]
    r = (4 * x + 3 * f) % 256
    g = (4 * y + 5 * f) % 256
    b = (2 * (x + y) + 7 * f) % 256
    frames = np.stack(np.broadcast_arrays(r, g, b), axis=-1).astype(np.uint8)  # [n, H, W, 3]
    for i in range(n):
        y0, x0 = 8 + i, 4 + 2 * i
        frames[i, y0:y0 + SQUARE, x0:x0 + SQUARE, :] = 255
    return frames


def keyframe_schedules():
    """Per-step keyframe offsets, as torch.randint(batch_size, (n_batches,)) would return them.

    main/inv20: [STEPS, 2] offsets in [0, 8) (one per batch of 8);
    short: [STEPS, 1] offsets in [0, 5): the reference asks randint for 13 // 8 = 1 value and broadcasts it
    onto torch.arange(0, 13, 8) = [0, 8], so both keyframes share the offset and 8 + r must be <= 12;
    sdedit: [len(sdedit timesteps), 2]."""
    g = torch.Generator().manual_seed(KEYFRAME_SEED)
    main = torch.randint(0, BATCH_SIZE, (STEPS, N_FRAMES // BATCH_SIZE), generator=g)
    short = torch.randint(0, SHORT_FRAMES - BATCH_SIZE, (STEPS, SHORT_FRAMES // BATCH_SIZE), generator=g)
    sdedit = torch.randint(0, BATCH_SIZE, (STEPS, N_FRAMES // BATCH_SIZE), generator=g)
    return {"main": main, "short": short, "sdedit": sdedit}


def absolute_keyframes(offsets, n_frames):
    """pivotal_idx = offsets + torch.arange(0, n_frames, batch_size) (broadcast), per step."""
    return offsets + torch.arange(0, n_frames, BATCH_SIZE)[None, :]


# ----------------------------------------------------------------------------------------------------
# Importing the reference
# ----------------------------------------------------------------------------------------------------

class _StubModule(types.ModuleType):
    """Stands in for a package the reference imports but the exercised code never uses."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        qual = f"{self.__name__}.{attr}"

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{qual} is a stub in generate_tokenflow_fixtures.py: this code path needs the real package")

        unavailable.__name__ = attr
        return unavailable


STUBBED = ["torchvision", "torchvision.io", "torchvision.transforms", "kornia", "kornia.geometry",
           "kornia.geometry.transform", "kornia.utils", "kornia.utils.grid", "cv2"]


def install_stubs():
    """Insert stubs for the packages in STUBBED that are not installed (must run after diffusers and
    transformers are imported: they probe optional packages with importlib.util.find_spec)."""
    installed = []
    for name in STUBBED:
        root = name.split(".")[0]
        if root in sys.modules and not isinstance(sys.modules[root], _StubModule):
            continue
        if root not in sys.modules and importlib.util.find_spec(root) is not None:
            continue
        mod = _StubModule(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
        mod.__path__ = []
        sys.modules[name] = mod
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, mod)
        installed.append(name)
    return installed


def import_reference(ref_dir):
    ref_dir = os.path.abspath(ref_dir)
    for f in REFERENCE_FILES:
        if not os.path.isfile(os.path.join(ref_dir, f)):
            raise SystemExit(f"--reference {ref_dir}: missing {f} (export a TokenFlow work tree there)")
    stubs = install_stubs()
    sys.path.insert(0, ref_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mods = types.SimpleNamespace(
            utils=importlib.import_module("tokenflow_utils"),
            preprocess=importlib.import_module("preprocess"),
            pnp=importlib.import_module("run_tokenflow_pnp"),
            sdedit=importlib.import_module("run_tokenflow_sdedit"),
        )
    for m in vars(mods).values():
        assert os.path.dirname(os.path.abspath(m.__file__)) == ref_dir, m.__file__
    sha = {}
    for f in REFERENCE_FILES:
        with open(os.path.join(ref_dir, f), "rb") as fh:
            sha[f] = hashlib.sha256(fh.read()).hexdigest()
    return mods, stubs, sha


# ----------------------------------------------------------------------------------------------------
# Models and reference objects
# ----------------------------------------------------------------------------------------------------

class Models:
    def __init__(self, folder, variant, dtype):
        self.folder, self.variant, self.dtype = folder, variant, dtype
        kw = self._kw()
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw).to(dtype).eval()
        self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw).to(dtype).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")

    def _kw(self):
        return dict(torch_dtype=torch.float32, variant=self.variant)

    def fresh_unet(self):
        # A new UNet for every reference object: the register_* functions patch forward methods and
        # set_tokenflow swaps the BasicTransformerBlock classes in place.
        return UNet2DConditionModel.from_pretrained(self.folder, subfolder="unet", **self._kw()).to(self.dtype).eval()

    def scheduler(self):
        return DDIMScheduler.from_pretrained(self.folder, subfolder="scheduler")


def new_preprocess(ref, models, sd_version):
    """preprocess.Preprocess without its __init__ (which loads hub models and PNG frames)."""
    cls = ref.preprocess.Preprocess
    p = cls.__new__(cls)
    torch.nn.Module.__init__(p)
    p.device = "cpu"
    p.sd_version = sd_version
    p.use_depth = False
    p.vae = models.vae
    p.tokenizer = models.tokenizer
    p.text_encoder = models.text_encoder
    p.unet = models.fresh_unet()
    p.scheduler = models.scheduler()
    return p


def new_editor(module, models, sd_version, n_frames, latents_path, frames, sdedit_start=None, steps=STEPS):
    """run_tokenflow_pnp.TokenFlow / run_tokenflow_sdedit.TokenFlow without __init__; the attributes are
    computed with the class's own methods, in the order its __init__ / get_data compute them."""
    cls = module.TokenFlow
    e = cls.__new__(cls)
    torch.nn.Module.__init__(e)
    e.config = {
        "device": "cpu", "sd_version": sd_version, "n_timesteps": steps, "n_frames": n_frames,
        "batch_size": BATCH_SIZE, "guidance_scale": GUIDANCE, "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT, "pnp_attn_t": PNP_ATTN_T, "pnp_f_t": PNP_F_T,
        "start": sdedit_start, "use_ddim_noise": True,
    }
    e.device = "cpu"
    e.sd_version = sd_version
    e.vae = models.vae
    e.tokenizer = models.tokenizer
    e.text_encoder = models.text_encoder
    e.unet = models.fresh_unet()
    e.scheduler = models.scheduler()
    e.scheduler.set_timesteps(steps, device="cpu")  # __init__: set_timesteps(config["n_timesteps"])
    if sdedit_start is not None:
        # run_tokenflow_sdedit.TokenFlow.__init__:
        #   self.scheduler.timesteps = self.scheduler.timesteps[int(1 - config["start"] * len(self.scheduler.timesteps)):]
        e.scheduler.timesteps = e.scheduler.timesteps[int(1 - sdedit_start * len(e.scheduler.timesteps)):]
    e.latents_path = latents_path
    # get_data (frames come from PNGs there; here from the procedural clip, no fp16 casts)
    e.latents = e.encode_imgs(frames, deterministic=True)
    e.eps = e.get_ddim_eps(e.latents, range(n_frames))
    e.text_embeds = e.get_text_embeds(PROMPT, NEGATIVE_PROMPT)
    inversion_prompt = e.get_pnp_inversion_prompt()
    e.pnp_guidance_embeds = e.get_text_embeds(inversion_prompt, inversion_prompt).chunk(2)[0]
    return e


@contextlib.contextmanager
def scheduled_randint(offsets, batch_size, n_frames):
    """Make batched_denoise_step's `torch.randint(batch_size, (len(x)//batch_size,))` return `offsets`."""
    real = torch.randint
    calls = []

    def fake(*args, **kwargs):
        assert not kwargs and args == (batch_size, (n_frames // batch_size,)), f"unexpected torch.randint{args}"
        calls.append(args)
        return offsets.clone().to(torch.int64)

    torch.randint = fake
    try:
        yield calls
    finally:
        torch.randint = real


class MarginRecorder:
    """Wraps tokenflow_utils.batch_cosine_sim (same result object returned) to record how close the
    nearest-neighbour argmax is to a tie: top-1 minus top-2 cosine similarity per query token, within each
    keyframe's block of columns (the TokenFlowBlock chunks the similarity per keyframe)."""

    def __init__(self, utils):
        self.utils, self.real = utils, utils.batch_cosine_sim
        self.min_margin, self.rows, self.close = float("inf"), 0, 0

    def __enter__(self):
        def wrapped(x, y):
            sim = self.real(x, y)
            n_kf = len(sys._getframe(1).f_locals.get("batch_idxs", [0]))
            for chunk in sim.chunk(n_kf, dim=1):
                if chunk.shape[1] < 2:  # a 1x1 feature map: a single candidate token
                    continue
                top = chunk.topk(2, dim=-1).values
                margin = top[:, 0] - top[:, 1]
                self.min_margin = min(self.min_margin, margin.min().item())
                self.rows += margin.numel()
                self.close += int((margin < 1e-4).sum())
            return sim

        self.utils.batch_cosine_sim = wrapped
        return self

    def __exit__(self, *exc):
        self.utils.batch_cosine_sim = self.real


# ----------------------------------------------------------------------------------------------------
# Running the reference
# ----------------------------------------------------------------------------------------------------

def invert(ref, models, sd_version, latents, inversion_steps, work_dir, reconstruct=True, steps=STEPS, preprocess=None):
    """preprocess.prep() + Preprocess.extract_latents(), minus the hub/PNG/video parts. Returns the saved
    latents by timestep, the final inverted latents, the reconstruction and the inversion time. `steps`: the
    sampling steps whose timesteps are saved (prep's save_steps); `preprocess`: a Preprocess to use (else a new one)."""
    save_path = tempfile.mkdtemp(prefix=f"inv{inversion_steps}-", dir=work_dir)
    os.makedirs(os.path.join(save_path, "latents"), exist_ok=True)  # prep()
    with open(os.path.join(save_path, "inversion_prompt.txt"), "w") as f:  # prep()
        f.write(INVERSION_PROMPT)
    # prep(): timesteps to save = the sampling schedule of `save_steps` (= the editing n_timesteps) steps
    toy_scheduler = models.scheduler()
    toy_scheduler.set_timesteps(steps)
    timesteps_to_save, _ = ref.preprocess.get_timesteps(toy_scheduler, num_inference_steps=steps, strength=1.0,
                                                        device="cpu")
    p = preprocess if preprocess is not None else new_preprocess(ref, models, sd_version)
    t0 = time.perf_counter()
    # extract_latents(): set_timesteps(num_steps); cond = get_text_embeds(inversion_prompt, "")[1]
    p.scheduler.set_timesteps(inversion_steps)
    cond = p.get_text_embeds(INVERSION_PROMPT, "", device="cpu")[1].unsqueeze(0)
    # ddim_inversion updates latent_frames in place (in the reference that is Preprocess.latents): clone
    inverted = p.ddim_inversion(cond, latents.clone(), save_path, batch_size=BATCH_SIZE, save_latents=True,
                                timesteps_to_save=timesteps_to_save)
    t_inv = time.perf_counter() - t0
    t0 = time.perf_counter()
    reconstruction = p.ddim_sample(inverted.clone(), cond, batch_size=BATCH_SIZE) if reconstruct else None
    t_rec = time.perf_counter() - t0
    saved = {}
    for path in glob.glob(os.path.join(save_path, "latents", "noisy_latents_*.pt")):
        t = int(os.path.basename(path)[len("noisy_latents_"):-len(".pt")])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load's weights_only FutureWarning
            saved[t] = torch.load(path)
    last_t = int(p.scheduler.timesteps.max())
    assert torch.equal(saved[last_t], inverted), "the last saved latents are the returned ones"
    return dict(path=os.path.join(save_path, "latents"), saved=saved, last_t=last_t, inverted=inverted,
                reconstruction=reconstruction, t_inversion=t_inv, t_reconstruction=t_rec,
                saved_ts=[int(t) for t in timesteps_to_save])


def edit(ref, module, models, sd_version, frames, n_frames, latents_path, offsets, *, sdedit_start=None,
         margins=None, teacher=None, steps=STEPS):
    """TokenFlow.edit_video() + sample_loop(), recording the latents after every step.

    teacher: optional {"init", "step<i>"} latents of another run; step i then starts from the teacher's
    step i-1 (teacher forcing, used by the fp64 report) and the loop stops where the teacher's steps end."""
    t0 = time.perf_counter()
    e = new_editor(module, models, sd_version, n_frames, latents_path, frames[:n_frames], sdedit_start, steps)
    if sdedit_start is None:
        # run_tokenflow_pnp.TokenFlow.edit_video
        pnp_f_t = int(e.config["n_timesteps"] * e.config["pnp_f_t"])
        pnp_attn_t = int(e.config["n_timesteps"] * e.config["pnp_attn_t"])
        e.init_method(conv_injection_t=pnp_f_t, qk_injection_t=pnp_attn_t)
    else:
        # run_tokenflow_sdedit.TokenFlow.edit_video (use_ddim_noise=True -> noise = self.eps)
        e.init_method()
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = e.scheduler.add_noise(e.latents, e.eps, e.scheduler.timesteps[0])
    out = {"init": x.clone()}
    indices = torch.arange(n_frames)
    with margins if margins is not None else contextlib.nullcontext():
        for i, t in enumerate(e.scheduler.timesteps):  # sample_loop
            if teacher is not None:
                if f"step{i}" not in teacher:
                    break
                x = (teacher["init"] if i == 0 else teacher[f"step{i - 1}"]).to(x.dtype)
            with scheduled_randint(offsets[i], BATCH_SIZE, n_frames) as calls:
                x = e.batched_denoise_step(x, t, indices)
            assert len(calls) == 1
            out[f"step{i}"] = x.clone()
    if teacher is not None:
        return out, None
    out["final"] = x
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["decoded"] = e.decode_latents(x)
    t_decode = time.perf_counter() - t0
    info = dict(timesteps=[int(t) for t in e.scheduler.timesteps], t_setup=t_setup, t_sampling=t_sample,
                t_decode=t_decode, latents=e.latents,
                text=dict(uncond=e.text_embeds[0:1], cond=e.text_embeds[1:2], source=e.pnp_guidance_embeds))
    if sdedit_start is None:
        info["conv_injection_timesteps"] = [int(t) for t in e.conv_injection_timesteps]
        info["qk_injection_timesteps"] = [int(t) for t in e.qk_injection_timesteps]
    return out, info


def model_folder(name):
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", name)


def to_reference_frames(frames_u8, dtype):
    # T.ToTensor(): float32(v) / 255, NCHW
    return torch.from_numpy(frames_u8).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255).to(dtype)


@torch.no_grad()
def run_reference(ref, name, frames_u8, work_dir, schedules):
    """All cases for one model, fp32. Returns (main tensors, variants tensors, case info, timings, state)."""
    variant, sd_version = MODELS[name]
    models = Models(model_folder(name), variant, torch.float32)
    frames = to_reference_frames(frames_u8, torch.float32)
    main, var, info, timing = {}, {}, {}, {}

    # ---- main: encode (Preprocess.get_data), inversion (10 steps), PnP, decode: the timed run
    p = new_preprocess(ref, models, sd_version)
    t0 = time.perf_counter()
    latents = p.encode_imgs(frames, deterministic=True)
    timing["encode"] = time.perf_counter() - t0
    inv = invert(ref, models, sd_version, latents, INVERSION_STEPS, work_dir)
    timing["inversion"], timing["reconstruction"] = inv["t_inversion"], inv["t_reconstruction"]
    pnp, pinfo = edit(ref, ref.pnp, models, sd_version, frames, N_FRAMES, inv["path"], schedules["main"])
    for k in ["setup", "sampling", "decode"]:
        timing[k] = pinfo[f"t_{k}"]

    main["latents"] = latents
    for t, x in inv["saved"].items():
        main[f"inverted.{t}"] = x
    main["inverted.last"] = inv["inverted"]
    main["reconstruct.final"] = inv["reconstruction"]
    assert torch.equal(pinfo["latents"], latents), "TokenFlow.encode_imgs == Preprocess.encode_imgs"
    main["timesteps"] = torch.tensor(pinfo["timesteps"], dtype=torch.float32)
    main["keyframes"] = absolute_keyframes(schedules["main"], N_FRAMES).float()
    for k, v in pinfo["text"].items():
        main[f"text.{k}"] = v
    for k, v in pnp.items():
        main[f"pnp.{k}"] = v[DECODED_FRAMES] if k == "decoded" else v
    main["pnp.decoded_frames"] = torch.tensor(DECODED_FRAMES, dtype=torch.float32)
    info["main"] = dict(inversion_saved_timesteps=sorted(inv["saved"]), inversion_last_timestep=inv["last_t"],
                        conv_injection_timesteps=pinfo["conv_injection_timesteps"],
                        qk_injection_timesteps=pinfo["qk_injection_timesteps"])

    # ---- short: the first 13 frames, same inverted latents (the reference indexes the saved ones by frame)
    short, _ = edit(ref, ref.pnp, models, sd_version, frames, SHORT_FRAMES, inv["path"], schedules["short"])
    var["short.keyframes"] = absolute_keyframes(schedules["short"], SHORT_FRAMES).float()
    for k, v in short.items():
        if k not in ("decoded", "init"):  # init = pnp.init[:13]
            var[f"short.{k}"] = v

    # ---- inv20: 20-step inversion, 10-step sampling
    inv20 = invert(ref, models, sd_version, latents, INVERSION_STEPS_SUBSET, work_dir)
    for t, x in inv20["saved"].items():
        var[f"inv20.inverted.{t}"] = x
    var["inv20.inverted.last"] = inv20["inverted"]
    var["inv20.reconstruct.final"] = inv20["reconstruction"]
    p20, _ = edit(ref, ref.pnp, models, sd_version, frames, N_FRAMES, inv20["path"], schedules["main"])
    var["inv20.keyframes"] = main["keyframes"]
    for k in ["init", "step0", "final"]:
        var[f"inv20.pnp.{k}"] = p20[k]
    info["inv20"] = dict(inversion_saved_timesteps=sorted(inv20["saved"]), inversion_last_timestep=inv20["last_t"])

    # ---- sdedit
    sd, sdinfo = edit(ref, ref.sdedit, models, sd_version, frames, N_FRAMES, inv["path"], schedules["sdedit"],
                      sdedit_start=SDEDIT_START)
    n_sd = len(sdinfo["timesteps"])
    var["sdedit.timesteps"] = torch.tensor(sdinfo["timesteps"], dtype=torch.float32)
    var["sdedit.keyframes"] = absolute_keyframes(schedules["sdedit"][:n_sd], N_FRAMES).float()
    for k, v in sd.items():
        if k != "decoded":
            var[f"sdedit.{k}"] = v
    info["sdedit"] = dict(timesteps=sdinfo["timesteps"])

    # ---- diagnostics (not stored)
    diag = {}
    margins = MarginRecorder(ref.utils)
    again, _ = edit(ref, ref.pnp, models, sd_version, frames, N_FRAMES, inv["path"], schedules["main"],
                    margins=margins)
    diag["repeatable"] = torch.equal(again["final"], pnp["final"])
    diag["margins"] = margins
    alt, _ = edit(ref, ref.pnp, models, sd_version, frames, N_FRAMES, inv["path"], (schedules["main"] + 1) % BATCH_SIZE)
    diag["keyframe_sensitivity"] = (alt["final"] - pnp["final"]).abs().max().item()
    state = dict(inv_path=inv["path"], inv20_path=inv20["path"])
    return main, var, info, timing, diag, state


@torch.no_grad()
def fp64_report(ref, name, frames_u8, schedules, main_t, var_t, state, work_dir):
    """The same reference code in float64, to show the fp32 rounding floor a Swift port can expect.

    Inversion: fp64 DDIM inversion of the fp32 `latents` (its error grows with every step).
    Sampling: teacher-forced, each step from the fp32 run's previous latents and reading the fp32 run's
    inverted latents, so the numbers are one step's error, not the error of the inversion fed forward."""
    variant, sd_version = MODELS[name]
    torch.set_default_dtype(torch.float64)  # CLIP's causal mask and the blend weights follow it
    try:
        m64 = Models(model_folder(name), variant, torch.float64)
        frames = to_reference_frames(frames_u8, torch.float64)
        rows = []
        inv = invert(ref, m64, sd_version, main_t["latents"].double(), INVERSION_STEPS, work_dir)
        for t in sorted(inv["saved"]):
            rows.append((f"inverted.{t}", main_t[f"inverted.{t}"], inv["saved"][t]))
        rows.append(("reconstruct.final", main_t["reconstruct.final"], inv["reconstruction"]))
        inv20 = invert(ref, m64, sd_version, main_t["latents"].double(), INVERSION_STEPS_SUBSET, work_dir)
        rows.append(("inv20.inverted.last", var_t["inv20.inverted.last"], inv20["inverted"]))
        cases = [
            ("pnp", ref.pnp, N_FRAMES, state["inv_path"], schedules["main"], None, main_t, "pnp."),
            ("short", ref.pnp, SHORT_FRAMES, state["inv_path"], schedules["short"], None, var_t, "short."),
            ("inv20.pnp", ref.pnp, N_FRAMES, state["inv20_path"], schedules["main"], None, var_t, "inv20.pnp."),
            ("sdedit", ref.sdedit, N_FRAMES, state["inv_path"], schedules["sdedit"], SDEDIT_START, var_t, "sdedit."),
        ]
        for label, module, n, path, offsets, start, src, prefix in cases:
            teacher = {k[len(prefix):]: v for k, v in src.items() if k.startswith(prefix)}
            if "init" not in teacher:
                teacher["init"] = main_t["pnp.init"][:n]  # add_noise is per frame
            out, _ = edit(ref, module, m64, sd_version, frames, n, path, offsets, sdedit_start=start,
                          teacher=teacher)
            rows.append((f"{prefix}init", teacher["init"], out["init"]))
            for k in sorted((k for k in out if k.startswith("step")), key=lambda k: int(k[4:])):
                rows.append((f"{prefix}{k} (forced)", teacher[k], out[k]))
    finally:
        torch.set_default_dtype(torch.float32)
    print("    fp32 vs fp64 (same reference code): max abs diff / max|fp64|")
    for k, a, b in rows:
        print(f"      {k:32s} {(a.double() - b).abs().max().item():.2e} / {b.abs().max().item():.2f}")


# ----------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------

def describe(tensors):
    for k in sorted(tensors, key=natural_key):
        t = tensors[k].float()
        print(f"    {k:28s} {str(list(t.shape)):18s} mean {t.mean():+9.4f} std {t.std() if t.numel() > 1 else 0:8.4f}"
              f" max|.| {t.abs().max():9.4f}")


def natural_key(k):
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in k.replace("step", "step.").split(".")]


def sanity_check(main, var):
    for d in (main, var):
        for k, t in d.items():
            assert torch.isfinite(t).all(), f"{k} is not finite"
    d_edit = (main["pnp.final"] - main["reconstruct.final"]).abs().max().item()
    d_rec = (main["reconstruct.final"] - main["latents"]).abs().max().item()
    d_sd = (var["sdedit.final"] - main["pnp.final"]).abs().max().item()
    d_inv = (var["inv20.pnp.final"] - main["pnp.final"]).abs().max().item()
    print(f"    max|pnp.final - reconstruct.final| {d_edit:.4f}  max|reconstruct.final - latents| {d_rec:.4f}"
          f"  max|sdedit.final - pnp.final| {d_sd:.4f}  max|inv20.pnp.final - pnp.final| {d_inv:.4f}")
    assert d_edit > 0.1 and d_sd > 0.1 and d_inv > 1e-3
    # main.inverted.last is the 901 latent; add_noise(latents, eps, 901) reproduces it
    d_init = (main["pnp.init"] - main["inverted.901"]).abs().max().item()
    print(f"    max|pnp.init - inverted.901| {d_init:.2e} (eps round trip)")
    # inv20: eps comes from the noisiest saved latents (t = 951) but is added at t = 901
    d20 = (var["inv20.pnp.init"] - var["inv20.inverted.901"]).abs().max().item()
    print(f"    max|inv20.pnp.init - inv20.inverted.901| {d20:.3f} (eps from t=951, added at t=901)")
    # short: at step 0 the first batch only depends on frames 0..7 and the two keyframes
    print(f"    short.step0 vs pnp.step0, frames 0..7: max diff "
          f"{(var['short.step0'][:8] - main['pnp.step0'][:8]).abs().max().item():.3e} (different keyframes)")


def save(tensors, path, info):
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata={"info": json.dumps(info, sort_keys=True)})
    print(f"    wrote {path} ({os.path.getsize(path) / 1e6:.3f} MB, {len(tensors)} tensors)")


@torch.no_grad()
def pnp_edit(ref, models, sd_version, frames, offsets, inversion_steps=INVERSION_STEPS, steps=STEPS):
    """One whole reference PnP edit of `frames`: encode, DDIM inversion (preprocess.py; its reconstruction is
    left out), editor set-up, sampling, decode. Returns the decoded frames and the seconds taken (not counting
    the preprocess UNet's loading). The inversion's Preprocess is dropped before the editor loads its own UNet:
    the reference runs them as two processes (preprocess.py, run_tokenflow_pnp.py), one UNet at a time."""
    with tempfile.TemporaryDirectory(prefix="tokenflow-timing-") as work:
        p = new_preprocess(ref, models, sd_version)
        t0 = time.perf_counter()
        latents = p.encode_imgs(frames, deterministic=True)
        inv = invert(ref, models, sd_version, latents, inversion_steps, work, reconstruct=False, steps=steps,
                     preprocess=p)
        del p
        out, _ = edit(ref, ref.pnp, models, sd_version, frames, len(frames), inv["path"], offsets, steps=steps)
        return out["decoded"], time.perf_counter() - t0


@torch.no_grad()
def time_reference(ref, name, frames_u8, schedules, repeats):
    """Wall-clock time of the reference PnP edit of the 16-frame clip: encode + inversion + editor set-up
    (its own encode, eps, text embeddings, hooks) + sampling + decode; median of `repeats` runs."""
    variant, sd_version = MODELS[name]
    models = Models(model_folder(name), variant, torch.float32)
    frames = to_reference_frames(frames_u8, torch.float32)
    totals = [pnp_edit(ref, models, sd_version, frames, schedules["main"])[1] for _ in range(repeats)]
    la = os.getloadavg()
    print(f"    # load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}; runs: " + " ".join(f"{t:.3f}" for t in totals))
    print(f"    reference_pnp_seconds_median model={name} frames={N_FRAMES} threads={torch.get_num_threads()} "
          f"repeats={repeats} median={sorted(totals)[len(totals) // 2]:.3f} min={min(totals):.3f}")


def setup_reference(ref_dir, threads):
    """Torch settings of every run (threads, deterministic algorithms, quiet CPU-only warnings), then the
    reference's modules imported from `ref_dir`."""
    if importlib.util.find_spec("ftfy") is not None:
        raise SystemExit("uninstall ftfy: the tiny models' token ids are defined without it")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
    warnings.filterwarnings("ignore", message=".*weights_only=False.*")
    ref, stubs, sha = import_reference(ref_dir)
    print(f"reference modules from {os.path.abspath(ref_dir)}; stubbed imports: {', '.join(stubs) or 'none'}")
    return ref, stubs, sha


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="a work tree of omerbt/TokenFlow (git archive | tar -x)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected"))
    ap.add_argument("--reference-commit", default="", help="recorded in the metadata if given")
    ap.add_argument("--skip-fp64", action="store_true", help="skip the fp32-vs-fp64 report")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads; the fixtures are defined with 2 (the inversion's rounding, hence "
                         "the NN fields, depend on it)")
    ap.add_argument("--time-repeats", type=int, default=0,
                    help="after generating, time N more reference PnP runs per model and print the median")
    ap.add_argument("--time-only", action="store_true", help="only the timing runs (default 5), write nothing")
    args = ap.parse_args()
    if args.time_only and args.time_repeats == 0:
        args.time_repeats = 5

    ref, stubs, sha = setup_reference(args.reference, args.threads)
    os.makedirs(args.out, exist_ok=True)

    frames_u8 = make_frames()
    schedules = keyframe_schedules()
    if args.time_only:
        for name in args.models:
            print(f"== {name}")
            time_reference(ref, name, frames_u8, schedules, args.time_repeats)
        return
    common = {
        "generator": "Tests/Fixtures/generate_tokenflow_fixtures.py",
        "reference": "omerbt/TokenFlow" + (f" @ {args.reference_commit}" if args.reference_commit else ""),
        "reference_sha256": sha,
        "torch": torch.__version__.split("+")[0],
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "frames": FRAMES_FORMULA,
    }
    save({"frames": torch.from_numpy(frames_u8).to(torch.float16)},
         os.path.join(args.out, "tokenflow-frames.safetensors"),
         dict(common, note="uint8 values stored as F16 (exact for integers <= 2048)"))

    for name in args.models:
        print(f"== {name}")
        with tempfile.TemporaryDirectory(prefix="tokenflow-fixtures-") as work:
            main_t, var_t, case_info, timing, diag, state = run_reference(ref, name, frames_u8, work, schedules)
            info = dict(common, model=f"models/{name}", sd_version=MODELS[name][1],
                        weights=("float16" if MODELS[name][0] else "float32") + " on disk, run in float32",
                        n_frames=N_FRAMES, short_n_frames=SHORT_FRAMES, steps=STEPS, inversion_steps=INVERSION_STEPS,
                        inv20_inversion_steps=INVERSION_STEPS_SUBSET, batch_size=BATCH_SIZE,
                        inversion_batch_size=BATCH_SIZE, guidance_scale=GUIDANCE, pnp_attn_t=PNP_ATTN_T,
                        pnp_f_t=PNP_F_T, prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT,
                        inversion_prompt=INVERSION_PROMPT, sdedit_start=SDEDIT_START, use_ddim_noise=True, eta=0.0,
                        keyframe_seed=KEYFRAME_SEED, decoded_frames=DECODED_FRAMES, vae_scale=0.18215,
                        **{f"{k}_case": v for k, v in case_info.items()})
            describe({**main_t, **var_t})
            sanity_check(main_t, var_t)
            m = diag["margins"]
            print(f"    repeat of the main PnP run is bit-identical: {diag['repeatable']}")
            print(f"    NN argmax (main PnP run): {m.rows} token queries, smallest top1-top2 cosine margin "
                  f"{m.min_margin:.2e}, {m.close} below 1e-4")
            print(f"    keyframe schedule shifted by one: max|pnp.final change| {diag['keyframe_sensitivity']:.4f}")
            assert diag["repeatable"] and diag["keyframe_sensitivity"] > 1e-3
            save(main_t, os.path.join(args.out, f"tokenflow-{name}.safetensors"), info)
            save(var_t, os.path.join(args.out, f"tokenflow-{name}-variants.safetensors"), info)
            total = sum(timing[k] for k in ["encode", "inversion", "setup", "sampling", "decode"])
            la = os.getloadavg()
            print(f"    # load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} (other processes distort the timing)")
            print(f"    reference_pnp_seconds model={name} frames={N_FRAMES} size={SIZE}x{SIZE} steps={STEPS} "
                  f"inversion_steps={INVERSION_STEPS} threads={torch.get_num_threads()} "
                  + " ".join(f"{k}={timing[k]:.3f}" for k in ["encode", "inversion", "setup", "sampling", "decode"])
                  + f" total={total:.3f} (reconstruction, not included: {timing['reconstruction']:.3f})")
            if not args.skip_fp64:
                fp64_report(ref, name, frames_u8, schedules, main_t, var_t, state, work)
        if args.time_repeats:
            time_reference(ref, name, frames_u8, schedules, args.time_repeats)


if __name__ == "__main__":
    main()

"""Where the time of a sampling step goes, against diffusers' ``AmusedPipeline`` on identical weights.

    python -m lab.bench.perf --out DIR [--device cuda] [--dtype float16] [--budget 280] [--preset full] TASK ...

Tasks (each appends its rows to ``DIR/perf.json`` and prints a markdown table; ``DIR/perf.md`` collects them):

* ``identity``: on this machine's torch, ``torch.multinomial(p, 1, generator=g)`` equals ``argmax(p / E)``
  with ``E`` filled by ``exponential_`` from the same generator, which ends in the same state -- the fact
  reference-exact drawing ahead rests on (``tcts/sampling/draw_ahead.py``); checked before timing anything.
* ``parity``: our tokens (drawn ahead on a GPU, in turn on the CPU) equal diffusers' for the same seed.
* ``steps``: time per step and peak device memory for ``stream`` (the serial exponential stream alone: what
  the reference's CPU draws cost without any model), ``ours`` (the default: reference-exact, drawn ahead
  off the CPU), ``ours-in-turn`` (reference-exact, drawn in turn on the CPU after each forward),
  ``ours-on-device`` (``draw_on_device``: per-image generators on the GPU) and ``diffusers``, at 256, 1024
  and 4096 tokens (aMUSEd-256 at 256 px, aMUSEd-512 at 512 px, Meissonic at 1024 px: ours only, diffusers
  has no Meissonic pipeline) and batch 1, then throughput at batch 4 and 16 (256 tokens).
* ``memory``: peak device memory of loading a pipeline and making one decoded image, ours fully resident,
  ours sequential (each component on the device for its phase) and diffusers, at every batch-1 setting.
* ``floor``: time per step of ours and diffusers divided by the time of the same matrix products alone
  (every linear layer, convolution and attention product of one step, replayed), measured in the same run,
  at the preset's largest batch-1 setting that diffusers also runs.
* ``compile``: ``ours-on-device`` at batch 1 as it is and with the generator under ``torch.compile`` (CUDA
  graphs on a GPU), step times, compilation seconds and token equality.

Weights are random at the released configs (``lab/bench/speed.py``). ``--preset reduced`` keeps aMUSEd-256's
full-size weights at 64-256 px (16-256 tokens) and batch 1-16 at 128 px, for a CPU; ``--preset quick`` uses the
tiny test fixtures, to try the script in seconds. A task that would start with less than ``--min-start`` seconds
of the budget left is skipped and said so; everything measured so far is already on disk.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO = Path(__file__).resolve().parents[2]
FIXTURES = {"tiny": REPO / "tests" / "fixtures" / "amused-tiny",
            "meissonic-tiny": REPO / "tests" / "fixtures" / "meissonic-tiny"}
TASKS = ("identity", "parity", "steps", "memory", "floor", "compile")
MODES = ("stream", "ours", "ours-in-turn", "ours-on-device", "diffusers")
PROMPT = "a photo of a red cat"


@dataclass
class Setting:
    model: str          # a lab.bench.speed.CONFIGS name, "meissonic", or a FIXTURES name
    size: int           # px
    batch: int = 1


FULL_STEPS = [Setting("amused-256", 256), Setting("amused-512", 512), Setting("meissonic", 1024),
              Setting("amused-256", 256, 4), Setting("amused-256", 256, 16)]
REDUCED_STEPS = [Setting("amused-256", 64), Setting("amused-256", 128), Setting("amused-256", 256),
                 Setting("amused-256", 128, 4), Setting("amused-256", 128, 16)]
QUICK_STEPS = [Setting("tiny", 64), Setting("tiny", 128), Setting("tiny", 256), Setting("meissonic-tiny", 512),
               Setting("tiny", 64, 4), Setting("tiny", 64, 16)]
PRESETS = {"full": FULL_STEPS, "reduced": REDUCED_STEPS, "quick": QUICK_STEPS}


def has_reference(model: str) -> bool:
    """diffusers has no Meissonic pipeline: Meissonic rows are ours only."""
    return "meissonic" not in model


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_folder(name: str, weights: Path) -> Path:
    if name in FIXTURES:
        return FIXTURES[name]
    from .speed import build_random_meissonic, build_random_model

    return build_random_meissonic(weights) if name == "meissonic" else build_random_model(name, weights)


# --- identity and parity ------------------------------------------------------------------------------

def check_identity(device: torch.device) -> dict[str, Any]:
    """The exponential-race identity of ``torch.multinomial`` on this torch, for CPU probabilities and for
    fp16 probabilities computed on ``device``."""
    results = []
    for positions, codebook, dtype in ((1024, 8192, torch.float32), (4096, 8192, torch.float16)):
        logits = torch.randn(positions, codebook, generator=torch.Generator().manual_seed(positions)) * 4
        p = logits.to(device, dtype).softmax(dim=-1).float().cpu()
        a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        drawn = torch.multinomial(p, 1, generator=a)[:, 0]
        raced = (p / torch.empty_like(p).exponential_(1, generator=b)).argmax(dim=-1)
        results.append({"shape": [positions, codebook], "probabilities": f"{dtype} on {device}",
                        "tokens_equal": bool(torch.equal(drawn, raced)),
                        "state_equal": bool(torch.equal(a.get_state(), b.get_state()))})
    return {"task": "identity", "torch": torch.__version__, "checks": results,
            "holds": all(r["tokens_equal"] and r["state_equal"] for r in results)}


def load_ours(folder: Path, device: torch.device, dtype: torch.dtype):
    from tcts.pipeline import Pipeline

    pipe = Pipeline.from_folder(folder, dtype=dtype, device=str(device))
    for module in (pipe.transformer, pipe.vq, pipe.text_encoder.model):
        module.to(device)
    return pipe


def load_diffusers(folder: Path, device: torch.device, dtype: torch.dtype):
    import diffusers

    pipe = diffusers.AmusedPipeline.from_pretrained(str(folder), torch_dtype=dtype).to(device)
    pipe.vqvae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def drawing(mode: str) -> Iterator[bool]:
    """The engine's draw mode for ``mode``; yields ``draw_on_device``."""
    import tcts.engine

    saved = tcts.engine.DRAW_AHEAD_DEVICE_TYPES
    if mode == "ours-in-turn":
        tcts.engine.DRAW_AHEAD_DEVICE_TYPES = frozenset()
    try:
        yield mode == "ours-on-device"
    finally:
        tcts.engine.DRAW_AHEAD_DEVICE_TYPES = saved


def ours_tokens(pipe, size: int, steps: int, cfg: float, seed: int, mode: str = "ours", batch: int = 1,
                callback: Callable | None = None):
    from tcts.settings import Sampling
    from tcts.starts import TextToImage

    with drawing(mode) as on_device:
        return pipe.generate(PROMPT, start=TextToImage(size, size), seed=seed, batch_size=batch, callback=callback,
                             sampling=Sampling(steps=steps, cfg=cfg, draw_on_device=on_device)).tokens


def diffusers_tokens(pipe, size: int, steps: int, cfg: float, seed: int, batch: int = 1,
                     callback: Callable | None = None) -> torch.Tensor:
    with torch.no_grad():
        return pipe(PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=cfg,
                    num_images_per_prompt=batch, generator=torch.Generator().manual_seed(seed),
                    output_type="latent", callback=callback).images


def check_parity(setting: Setting, weights: Path, device: torch.device, dtype: torch.dtype,
                 steps: int) -> dict[str, Any]:
    folder = model_folder(setting.model, weights)
    ours = load_ours(folder, device, dtype)
    got = {mode: ours_tokens(ours, setting.size, steps, 10.0, 0, mode).cpu() for mode in ("ours", "ours-in-turn")}
    del ours
    free(device)
    reference = diffusers_tokens(load_diffusers(folder, device, dtype), setting.size, steps, 10.0, 0).cpu()
    free(device)
    return {"task": "parity", "model": setting.model, "size": setting.size, "steps": steps, "device": str(device),
            **{f"{mode}_equals_diffusers": bool(torch.equal(t, reference)) for mode, t in got.items()},
            "tokens_differing_ours": int((got["ours"] != reference).sum())}


# --- step times -----------------------------------------------------------------------------------------

def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def stream_step_seconds(positions: int, codebook: int, batch: int, steps: int) -> float:
    """Per step: the exponentials of every image drawn one after the other from CPU generators."""
    generators = [torch.Generator().manual_seed(i) for i in range(batch)]
    start = time.perf_counter()
    for _ in range(steps):
        for g in generators:
            torch.empty(positions, codebook).exponential_(1, generator=g)
    return (time.perf_counter() - start) / steps


def timed(run: Callable[[Callable], Any], device: torch.device) -> dict[str, float]:
    """Median seconds between step callbacks, wall seconds of the run and peak device memory of it."""
    marks: list[float] = []

    def mark(*_):
        synchronize(device)
        marks.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    run(mark)
    synchronize(device)
    seconds = time.perf_counter() - start
    step = statistics.median(b - a for a, b in zip(marks, marks[1:])) if len(marks) > 1 else seconds
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"step_s": step, "image_s": seconds, "peak_mb": peak}


def time_setting(setting: Setting, weights: Path, device: torch.device, dtype: torch.dtype, steps: int,
                 modes: tuple[str, ...]) -> list[dict[str, Any]]:
    folder = model_folder(setting.model, weights)
    rows = []
    base = {"task": "steps", "model": setting.model, "size": setting.size, "batch": setting.batch, "steps": steps,
            "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    ours_modes = [m for m in modes if m.startswith("ours")]
    if ours_modes:
        pipe = load_ours(folder, device, dtype)
        positions = (setting.size // pipe.vq_factor) ** 2
        codebook = pipe.transformer.codebook_size
        if "stream" in modes:
            rows.append({**base, "mode": "stream", "tokens": positions,
                         "step_s": stream_step_seconds(positions, codebook, setting.batch, min(steps, 4))})
        for mode in ours_modes:
            ours_tokens(pipe, setting.size, 2, 10.0, 0, mode, setting.batch)           # warm-up
            rows.append({**base, "mode": mode, "tokens": positions, **timed(
                lambda mark: ours_tokens(pipe, setting.size, steps, 10.0, 0, mode, setting.batch, mark), device)})
        del pipe
        free(device)
    if "diffusers" in modes:
        pipe = load_diffusers(folder, device, dtype)
        diffusers_tokens(pipe, setting.size, 2, 10.0, 0, setting.batch)
        positions = rows[0]["tokens"] if rows else None
        rows.append({**base, "mode": "diffusers", "tokens": positions, **timed(
            lambda mark: diffusers_tokens(pipe, setting.size, steps, 10.0, 0, setting.batch, mark), device)})
        del pipe
        free(device)
    for row in rows:
        row["images_per_s"] = setting.batch / (row["step_s"] * steps) if row.get("step_s") else None
    return rows


# --- launch overhead: the compiled step -------------------------------------------------------------------

def compile_mode(device: torch.device) -> str:
    """CUDA graphs (``reduce-overhead``) where they exist: they remove the kernel launches of a small step."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def measure_compiled(setting: Setting, weights: Path, device: torch.device, dtype: torch.dtype,
                     steps: int) -> list[dict[str, Any]]:
    """``ours-on-device`` with the generator as it is and under ``torch.compile`` (:func:`compile_mode`), in
    one process: step time, the compilation's seconds (the first run) and whether the tokens stay equal."""
    folder = model_folder(setting.model, weights)
    pipe = load_ours(folder, device, dtype)
    base = {"task": "compile", "model": setting.model, "size": setting.size, "batch": setting.batch,
            "steps": steps}
    ours_tokens(pipe, setting.size, 2, 10.0, 0, "ours-on-device", setting.batch)
    plain = ours_tokens(pipe, setting.size, steps, 10.0, 0, "ours-on-device", setting.batch).cpu()
    rows = [{**base, "mode": "ours-on-device", "compile_s": 0.0, **timed(
        lambda mark: ours_tokens(pipe, setting.size, steps, 10.0, 0, "ours-on-device", setting.batch, mark), device)}]
    pipe.transformer = torch.compile(pipe.transformer, mode=compile_mode(device), dynamic=False)
    start = time.perf_counter()
    compiled = ours_tokens(pipe, setting.size, steps, 10.0, 0, "ours-on-device", setting.batch).cpu()
    synchronize(device)
    rows.append({**base, "mode": f"ours-on-device, torch.compile {compile_mode(device)}",
                 "compile_s": time.perf_counter() - start, "tokens_equal_uncompiled": bool(torch.equal(plain, compiled)),
                 **timed(lambda mark: ours_tokens(pipe, setting.size, steps, 10.0, 0, "ours-on-device", setting.batch,
                                                  mark), device)})
    del pipe
    free(device)
    return rows


# --- memory of a whole generation -------------------------------------------------------------------------

MEMORY_MODES = ("ours", "ours-sequential", "diffusers")


def whole_generation(mode: str, folder: Path, setting: Setting, device: torch.device, dtype: torch.dtype,
                     steps: int) -> None:
    """Load ``mode``'s pipeline onto ``device`` and make one decoded image: what a user's first image costs."""
    from tcts.pipeline import Pipeline
    from tcts.settings import Sampling
    from tcts.starts import TextToImage

    if mode == "diffusers":
        pipe = load_diffusers(folder, device, dtype)
        with torch.no_grad():
            pipe(PROMPT, height=setting.size, width=setting.size, num_inference_steps=steps, guidance_scale=10.0,
                 generator=torch.Generator().manual_seed(0), output_type="np")
        return
    pipe = load_ours(folder, device, dtype) if mode == "ours" else \
        Pipeline.from_folder(folder, dtype=dtype, sequential=True, device=str(device))
    pipe.generate(PROMPT, start=TextToImage(setting.size, setting.size), sampling=Sampling(steps=steps, cfg=10.0))


def measure_memory(setting: Setting, weights: Path, device: torch.device, dtype: torch.dtype,
                   steps: int) -> list[dict[str, Any]]:
    """Peak device memory of loading and making one decoded image, per mode (``ours``: every component
    resident, as in the library; ``ours-sequential``: each component on the device for its phase only, as a
    one-shot CLI run; ``diffusers``). ComfyUI's model manager decides residency itself."""
    folder = model_folder(setting.model, weights)
    rows = []
    for mode in (m for m in MEMORY_MODES if m != "diffusers" or has_reference(setting.model)):
        free(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        whole_generation(mode, folder, setting, device, dtype, steps)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append({"task": "memory", "model": setting.model, "size": setting.size, "mode": mode, "steps": steps,
                     "load_and_image_s": time.perf_counter() - start, "peak_mb": peak})
        free(device)
    return rows


# --- the floor: matrix products alone --------------------------------------------------------------------

@contextlib.contextmanager
def recording_products(root: torch.nn.Module, products: list[Callable[[], torch.Tensor]]) -> Iterator[None]:
    """Record every linear layer, convolution and attention product that ``root``'s forward passes run inside
    the block, each as a closure that repeats only that product on the same operands."""
    import torch.nn.functional as F

    inside = {"forward": False}
    hooks = [root.register_forward_pre_hook(lambda *_: inside.update(forward=True)),
             root.register_forward_hook(lambda *_: inside.update(forward=False))]

    def on_linear(module, inputs, _):
        x, w = inputs[0].detach(), module.weight.detach()
        products.append(lambda: F.linear(x, w))

    def on_conv(module, inputs, _):
        x, w = inputs[0].detach(), module.weight.detach()
        stride, padding, dilation, groups = module.stride, module.padding, module.dilation, module.groups
        products.append(lambda: F.conv2d(x, w, None, stride, padding, dilation, groups))

    real_sdpa = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        if inside["forward"]:
            q_, k_, v_ = q.detach(), k.detach(), v.detach()
            weights = (q_ @ k_.transpose(-2, -1)).softmax(dim=-1)
            products.append(lambda: q_ @ k_.transpose(-2, -1))
            products.append(lambda: weights @ v_)
        return real_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)

    for module in root.modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(on_linear))
        elif isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(on_conv))
    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real_sdpa
        for hook in hooks:
            hook.remove()


def products_seconds(products: list[Callable[[], torch.Tensor]], device: torch.device, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for product in products:
            product()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def measure_floor(setting: Setting, weights: Path, device: torch.device, dtype: torch.dtype,
                  steps: int) -> list[dict[str, Any]]:
    """Step time of ours and of diffusers over the time of one step's matrix products alone (recorded from
    our transformer's forward at the same size; diffusers' transformer runs the same products)."""
    folder = model_folder(setting.model, weights)
    pipe = load_ours(folder, device, dtype)
    products: list[Callable[[], torch.Tensor]] = []
    from tcts.settings import Sampling
    from tcts.starts import TextToImage

    with recording_products(pipe.transformer, products):   # one step: the CFG forward of both rows
        pipe.generate(PROMPT, start=TextToImage(setting.size, setting.size), sampling=Sampling(steps=1, cfg=10.0))
    alone = products_seconds(products, device)
    count = len(products)
    del products
    rows = time_setting(setting, weights, device, dtype, steps, ("ours", "diffusers"))
    del pipe
    free(device)
    for row in rows:
        row.update(task="floor", products_s=alone, products=count, over_products=row["step_s"] / alone)
    return rows


# --- reporting ---------------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def steps_table(rows: list[dict]) -> str:
    lines = ["| model | px | tokens | batch | mode | s / step | × stream | × diffusers | images / s | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = [o for o in rows if (o["model"], o["size"], o["batch"]) == (r["model"], r["size"], r["batch"])]
        stream = next((o["step_s"] for o in same if o["mode"] == "stream"), None)
        diffusers = next((o["step_s"] for o in same if o["mode"] == "diffusers"), None)
        lines.append(f"| {r['model']} | {r['size']} | {fmt(r.get('tokens'))} | {r['batch']} | {r['mode']} | "
                     f"{fmt(r['step_s'], 4)} | {fmt(r['step_s'] / stream if stream else None, 2)} | "
                     f"{fmt(r['step_s'] / diffusers if diffusers else None, 2)} | "
                     f"{fmt(r.get('images_per_s'), 2)} | {fmt(r.get('peak_mb'), 0)} |")
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    lines = ["| model | px | mode | load + one image (s) | peak MB | × diffusers |", "|---|---|---|---|---|---|"]
    for r in rows:
        reference = next((o["peak_mb"] for o in rows if (o["model"], o["size"], o["mode"]) ==
                          (r["model"], r["size"], "diffusers")), None)
        ratio = r["peak_mb"] / reference if r["peak_mb"] and reference else None
        lines.append(f"| {r['model']} | {r['size']} | {r['mode']} | {fmt(r['load_and_image_s'], 2)} | "
                     f"{fmt(r['peak_mb'], 0)} | {fmt(ratio, 2)} |")
    return "\n".join(lines)


def floor_table(rows: list[dict]) -> str:
    lines = ["| model | px | implementation | s / step | matrix products alone (s) | step / products |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']} | {r['mode']} | {fmt(r['step_s'], 4)} | "
                     f"{fmt(r['products_s'], 4)} | {fmt(r['over_products'], 2)} |")
    return "\n".join(lines)


def compile_table(rows: list[dict]) -> str:
    lines = ["| model | px | mode | s / step | × uncompiled | compilation (s) | same tokens |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        plain = next(o["step_s"] for o in rows if (o["model"], o["size"], o["mode"]) ==
                     (r["model"], r["size"], "ours-on-device"))
        lines.append(f"| {r['model']} | {r['size']} | {r['mode']} | {fmt(r['step_s'], 4)} | "
                     f"{fmt(r['step_s'] / plain, 2)} | {fmt(r['compile_s'], 1)} | "
                     f"{fmt(r.get('tokens_equal_uncompiled', True))} |")
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    env = results["environment"]
    parts = [f"# Step performance\n\n{env['device_name']} · torch {env['torch']} · {env['dtype']} · "
             f"{env['threads']} CPU thread(s) · {results['steps_per_run']} steps per run\n"]
    for check in results.get("identity", []):
        parts.append("## Identity\n\n" + "\n".join(
            f"- {c['shape'][0]} x {c['shape'][1]}, {c['probabilities']}: tokens equal {c['tokens_equal']}, "
            f"generator state equal {c['state_equal']}" for c in check["checks"]))
    for row in results.get("parity", []):
        parts.append(f"## Parity with diffusers\n\n{row['model']} at {row['size']} px, {row['steps']} steps: drawn "
                     f"ahead equals diffusers {row['ours_equals_diffusers']}, drawn in turn "
                     f"{row['ours-in-turn_equals_diffusers']}")
    if results.get("steps"):
        parts.append("## Time per step and memory\n\n" + steps_table(results["steps"]))
    if results.get("memory"):
        parts.append("## Peak memory of a whole generation\n\n" + memory_table(results["memory"]))
    if results.get("floor"):
        parts.append("## The floor: the same matrix products alone\n\n" + floor_table(results["floor"]))
    if results.get("compile"):
        parts.append("## Launch overhead: the compiled step\n\n" + compile_table(results["compile"]))
    if results.get("skipped"):
        parts.append("Skipped at the budget: " + ", ".join(results["skipped"]))
    return "\n\n".join(parts) + "\n"


def write(results: dict[str, Any], out: Path) -> None:
    from .report import write_json_atomic, write_text_atomic

    write_json_atomic(out / "perf.json", results)
    write_text_atomic(out / "perf.md", render(results))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.bench.perf", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("tasks", nargs="+", choices=TASKS, help="what to measure, in this order")
    p.add_argument("--out", type=Path, required=True, help="results folder (perf.json, perf.md)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--dtype", default=None, help="model dtype (default float16 on a GPU, float32 on the CPU)")
    p.add_argument("--steps", type=int, default=12, help="sampling steps of every timed run")
    p.add_argument("--budget", type=float, default=280.0, help="seconds for all tasks together")
    p.add_argument("--min-start", type=float, default=15.0, help="skip a measurement that would start with less left")
    p.add_argument("--weights", type=Path, default=None, help="folder for the random full-size weights")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full",
                   help="sizes: full (a GPU), reduced (full-size aMUSEd-256 at small sizes: a CPU), quick (tiny fixtures)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    budget = Budget(args.budget)
    weights = args.weights or Path(tempfile.mkdtemp(prefix="tcts-perf-weights-"))
    args.out.mkdir(parents=True, exist_ok=True)
    settings = PRESETS[args.preset]
    floor_setting = max((s for s in settings if s.batch == 1 and has_reference(s.model)), key=lambda s: s.size)
    results: dict[str, Any] = {"environment": {
        "torch": torch.__version__, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"},
        "steps_per_run": args.steps, "preset": args.preset, "skipped": []}

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        if budget.left() < args.min_start:
            results["skipped"].append(name)
            print(f"skipped {name}: {budget.left():.0f} s of the budget left", file=sys.stderr)
            return None
        start = time.monotonic()
        value = fn()
        print(f"{name}: {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
        return value

    for task in args.tasks:
        if task == "identity":
            check = attempt("identity", lambda: check_identity(device))
            if check is not None:
                results.setdefault("identity", []).append(check)
                if not check["holds"]:
                    write(results, args.out)
                    print("the multinomial identity does not hold on this torch: drawing ahead is not exact here",
                          file=sys.stderr)
                    return 1
        elif task == "parity":
            row = attempt("parity", lambda: check_parity(settings[0], weights, device, dtype, min(args.steps, 4)))
            if row is not None:
                results.setdefault("parity", []).append(row)
        elif task == "steps":
            for s in settings:
                modes = MODES if s.batch == 1 else ("ours", "ours-on-device", "diffusers")
                modes = modes if has_reference(s.model) else tuple(m for m in modes if m != "diffusers")
                rows = attempt(f"steps {s.model} {s.size}px batch {s.batch}",
                               lambda: time_setting(s, weights, device, dtype, args.steps, modes))
                results.setdefault("steps", []).extend(rows or [])
                write(results, args.out)
        elif task == "memory":
            for s in (s for s in settings if s.batch == 1):
                rows = attempt(f"memory {s.model} {s.size}px",
                               lambda: measure_memory(s, weights, device, dtype, min(args.steps, 4)))
                results.setdefault("memory", []).extend(rows or [])
                write(results, args.out)
        elif task == "floor":
            rows = attempt("floor", lambda: measure_floor(floor_setting, weights, device, dtype, min(args.steps, 4)))
            results.setdefault("floor", []).extend(rows or [])
        elif task == "compile":
            rows = attempt("compile", lambda: measure_compiled(settings[0], weights, device, dtype, args.steps))
            results.setdefault("compile", []).extend(rows or [])
        write(results, args.out)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

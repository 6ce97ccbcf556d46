"""Speed and memory of our pipeline against diffusers' ``AmusedPipeline`` on identical full-size weights.

``python -m tcts bench-speed [--models amused-256 amused-512] [--steps 12] [--repeats 2] [--impls ...]
[--compile] [--out DIR]``

Builds random full-size weights for the released configs once (docs/models.md, aMUSEd transformer; saved as a
diffusers-layout folder in a temp or given folder), then times, alternating in the same run, our
``Pipeline.generate`` and diffusers' ``AmusedPipeline.__call__`` with the same prompt, steps, CFG and
seed, each in a fresh subprocess so peak memory (VmHWM) is per pipeline. Prints a markdown table with
ratios and writes it (and the raw JSON) to ``--out``. Timings exclude loading (reported separately).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tcts.cli_common import EXIT_STATUS, HelpFormatter

FIXTURE_TOKENIZER = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "amused-tiny"
MEISSONIC_FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "meissonic-tiny"

UVIT_256 = {"_class_name": "UVit2DModel", "hidden_size": 1024, "use_bias": False, "hidden_dropout": 0.0,
            "cond_embed_dim": 768, "micro_cond_encode_dim": 256, "micro_cond_embed_dim": 1280,
            "encoder_hidden_size": 768, "vocab_size": 8256, "codebook_size": 8192, "in_channels": 768,
            "block_out_channels": 768, "num_res_blocks": 3, "downsample": False, "upsample": False,
            "block_num_heads": 12, "num_hidden_layers": 22, "num_attention_heads": 16, "attention_dropout": 0.0,
            "intermediate_size": 2816, "layer_norm_eps": 1e-6, "ln_elementwise_affine": True, "sample_size": 16}
CONFIGS = {"amused-256": UVIT_256,
           "amused-512": {**UVIT_256, "downsample": True, "upsample": True, "sample_size": 32}}
VQ = {"_class_name": "VQModel", "act_fn": "silu", "block_out_channels": [128, 256, 256, 512, 768],
      "down_block_types": ["DownEncoderBlock2D"] * 5, "up_block_types": ["UpDecoderBlock2D"] * 5,
      "force_upcast": True, "in_channels": 3, "out_channels": 3, "latent_channels": 64, "layers_per_block": 2,
      "lookup_from_codebook": True, "mid_block_add_attention": False, "norm_num_groups": 32, "norm_type": "group",
      "num_vq_embeddings": 8192, "sample_size": 32, "scaling_factor": 0.18215, "vq_embed_dim": None}
CLIP_L = {"architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model", "hidden_size": 768,
          "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_act": "quick_gelu",
          "projection_dim": 768, "max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-5,
          "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def save_component(folder: Path, config: dict, module: torch.nn.Module, filename: str) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / filename))


def build_random_model(name: str, root: Path, seed: int = 0) -> Path:
    """A diffusers-layout folder with random full-size weights (tokenizer: the fixtures' small BPE)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from tcts.models.uvit import UVit2DTransformer
    from tcts.models.vq import VQModel

    folder = root / name
    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(seed)
    tmp = root / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    save_component(tmp / "transformer", CONFIGS[name], UVit2DTransformer(CONFIGS[name]),
                   "diffusion_pytorch_model.safetensors")
    save_component(tmp / "vqvae", VQ, VQModel(VQ), "diffusion_pytorch_model.safetensors")
    text = CLIPTextModelWithProjection(CLIPTextConfig(**{k: v for k, v in CLIP_L.items() if k != "architectures"}))
    save_component(tmp / "text_encoder", CLIP_L, text, "model.safetensors")
    for part in ("tokenizer", "scheduler", "model_index.json"):
        source = FIXTURE_TOKENIZER / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp / part)
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "AmusedScheduler", "mask_token_id": 8255, "masking_schedule": "cosine"}))
    tmp.rename(folder)
    return folder


CLIP_H = {**CLIP_L, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
          "num_attention_heads": 16, "hidden_act": "gelu", "projection_dim": 1024}


def build_random_meissonic(root: Path, seed: int = 0) -> Path:
    """A Meissonic folder with random weights at the released sizes (transformer ``MEISSONIC_RELEASED_CONFIG``,
    the f16 VQ, a CLIP-H/14-sized text encoder; tokenizer and scheduler: the tiny fixture's), stored in fp16
    (1.0 B + 0.15 B + 0.35 B parameters)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from tcts.models.meissonic import MEISSONIC_RELEASED_CONFIG, MeissonicTransformer
    from tcts.models.vq import VQModel

    folder = root / "meissonic"
    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(seed)
    tmp = root / ".meissonic.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    parts = [("transformer", MEISSONIC_RELEASED_CONFIG, lambda: MeissonicTransformer(MEISSONIC_RELEASED_CONFIG),
              "diffusion_pytorch_model.safetensors"),
             ("vqvae", VQ, lambda: VQModel(VQ), "diffusion_pytorch_model.safetensors"),
             ("text_encoder", CLIP_H, lambda: CLIPTextModelWithProjection(
                 CLIPTextConfig(**{k: v for k, v in CLIP_H.items() if k != "architectures"})), "model.safetensors")]
    for name, config, build, filename in parts:
        save_component(tmp / name, config, build().half(), filename)
    for part in ("tokenizer", "scheduler", "model_index.json"):
        source = MEISSONIC_FIXTURE / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp / part)
    scheduler = json.loads((tmp / "scheduler" / "scheduler_config.json").read_text())
    scheduler["mask_token_id"] = MEISSONIC_RELEASED_CONFIG["vocab_size"] - 1
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    tmp.rename(folder)
    return folder


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def warms_up(device: str) -> bool:
    """On a GPU the first call pays for CUDA context, cuBLAS handles and kernel loading; both pipelines get the
    same untimed 2-step warm-up there (counted in ``load_s``). The sequential mode frees its modules after each
    phase, so it gets none: its ``image_s`` includes loading by design."""
    return device.startswith("cuda")


def run_ours(args: argparse.Namespace, sequential: bool = False) -> dict:
    """Our pipeline, fully loaded (as in ComfyUI and the library) or ``sequential`` (the CLI's one-shot
    mode: each component loaded for its phase and freed after it, so its loads fall inside ``image_s``).
    ``args``: the child's command line (folder, size, steps, cfg, prompt, device, dtype, compile,
    draw_on_device)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer  # noqa: F401  imports outside the timing,
                                                                          # as for diffusers
    from tcts.pipeline import Pipeline
    from tcts.settings import Sampling
    from tcts.starts import TextToImage

    t0 = time.perf_counter()
    pipe = Pipeline.from_folder(args.folder, dtype=getattr(torch, args.dtype), sequential=sequential,
                                device=args.device)
    start = TextToImage(args.size, args.size)
    draw = bool(args.draw_on_device)
    if not sequential:
        for module in (pipe.transformer, pipe.vq, pipe.text_encoder.model):
            module.to(args.device)
        if args.compile:
            pipe.transformer = torch.compile(pipe.transformer)
        if args.compile or warms_up(args.device):  # a 2-step warm-up (compilation, CUDA kernels) counts as load
            pipe.generate(args.prompt, start=start, sampling=Sampling(steps=2, cfg=args.cfg, draw_on_device=draw))
    load = time.perf_counter() - t0
    marks: list[float] = []
    t0 = time.perf_counter()
    pipe.generate(args.prompt, start=start, sampling=Sampling(steps=args.steps, cfg=args.cfg, draw_on_device=draw),
                  callback=lambda r: marks.append(time.perf_counter()))
    total = time.perf_counter() - t0
    return {"load_s": load, "image_s": total, "total_s": load + total,
            "step_s": statistics.median(b - a for a, b in zip(marks, marks[1:]))}


def run_diffusers(folder: str, size: int, steps: int, cfg: float, prompt: str, device: str, dtype: str) -> dict:
    import diffusers

    t0 = time.perf_counter()
    pipe = diffusers.AmusedPipeline.from_pretrained(folder, torch_dtype=getattr(torch, dtype)).to(device)
    pipe.vqvae.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if warms_up(device):
        with torch.no_grad():
            pipe(prompt, height=size, width=size, num_inference_steps=2, guidance_scale=cfg,
                 generator=torch.Generator().manual_seed(0), output_type="np")
    load = time.perf_counter() - t0
    marks: list[float] = []
    t0 = time.perf_counter()
    with torch.no_grad():
        pipe(prompt, height=size, width=size, num_inference_steps=steps, guidance_scale=cfg,
             generator=torch.Generator().manual_seed(0), output_type="np",
             callback=lambda i, t, latents: marks.append(time.perf_counter()))
    total = time.perf_counter() - t0
    return {"load_s": load, "image_s": total, "total_s": load + total,
            "step_s": statistics.median(b - a for a, b in zip(marks, marks[1:]))}


IMPLS = ("ours", "ours-sequential", "diffusers")


def child(args: argparse.Namespace) -> None:
    if args.child == "diffusers":
        result = run_diffusers(args.folder, args.size, args.steps, args.cfg, args.prompt, args.device, args.dtype)
    else:
        result = run_ours(args, sequential=args.child == "ours-sequential")
    result["peak_rss_mb"] = peak_rss_mb()
    if args.device.startswith("cuda"):
        result["max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result))


def measure(impl: str, folder: Path, size: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "lab.bench.speed", "--child", impl, "--folder", str(folder), "--size", str(size),
           "--steps", str(args.steps), "--cfg", str(args.cfg), "--device", args.device, "--dtype", args.dtype,
           *(["--compile"] if args.compile else []), *(["--draw-on-device"] if args.draw_on_device else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][7:])


def summarise(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def table(results: dict, args: argparse.Namespace) -> str:
    lines = [f"Device {args.device}, {args.dtype}, {args.steps} steps, cfg {args.cfg}, {args.repeats} alternating "
             f"repeats (medians); torch {torch.__version__}, {os.cpu_count()} CPUs"
             f"{', ours with torch.compile' if args.compile else ''}"
             f"{', ours drawing tokens on the device (--draw-on-device)' if args.draw_on_device else ''}. "
             "``ours`` = fully loaded (ComfyUI, library); ``seq`` = the CLI's sequential one-shot mode (component "
             "loads fall inside its image time).", "",
             "| model | metric | ours | seq | diffusers | ours/diffusers | seq/diffusers | target |",
             "|---|---|---|---|---|---|---|---|"]
    targets = {"image_s": "≤ 0.67", "step_s": "≤ 0.67", "total_s": "—", "peak_rss_mb": "≤ 0.8",
               "max_allocated_mb": "≤ 0.8", "load_s": "—"}
    for name, runs in results.items():
        ref = runs["diffusers"]
        for key in ("image_s", "step_s", "load_s", "total_s", "peak_rss_mb", "max_allocated_mb"):
            if key not in ref:
                continue
            cells, ratios = [], []
            for impl in ("ours", "ours-sequential"):
                value = runs.get(impl, {}).get(key)
                cells.append("—" if value is None else f"{value:.2f}")
                ratios.append("—" if value is None else f"{value / ref[key]:.2f}")
            lines.append(f"| {name} | {key} | {cells[0]} | {cells[1]} | {ref[key]:.2f} | {ratios[0]} | {ratios[1]} | "
                         f"{targets[key]} |")
    return "\n".join(lines)


#: the reference release the comparison was written against (requirements-dev.txt)
DIFFUSERS_REQUIREMENT = "diffusers==0.42.1"


def require_diffusers() -> None:
    """bench-speed compares against diffusers: say how to install it before any weights are built."""
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        raise ValueError(f"bench-speed times diffusers' AmusedPipeline as the reference, and diffusers is not "
                         f"installed; install it with: pip install {DIFFUSERS_REQUIREMENT} (or run "
                         f"bash scripts/test.sh once, which installs the test requirements)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcts bench-speed", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter, epilog=EXIT_STATUS)
    parser.add_argument("--models", nargs="+", default=["amused-256", "amused-512"], choices=sorted(CONFIGS),
                        help="full-size configs to build with random weights")
    parser.add_argument("--steps", type=int, default=12, help="sampling steps")
    parser.add_argument("--cfg", type=float, default=10.0, help="classifier-free guidance scale")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per pipeline (order alternates)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default=None,
                        help="float32/float16/bfloat16 (default: float32 on CPU, float16 on GPU)")
    parser.add_argument("--weights", type=Path, default=None, help="folder to keep the random weights in")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for speed.md / speed.json")
    parser.add_argument("--prompt", default="a photo of a red cat", help="the prompt of every run")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS,
                        help="what to time (diffusers is the reference and always included)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile our transformer (worth it on GPU; compiling + a 2-step warm-up count as load)")
    parser.add_argument("--draw-on-device", action="store_true",
                        help="ours draws tokens on --device (Sampling(draw_on_device=True)) instead of the "
                             "reference's CPU draws; diffusers always draws on the CPU")
    parser.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "float16")
    if args.child:
        child(args)
        return 0
    require_diffusers()
    weights = args.weights or Path(tempfile.mkdtemp(prefix="tcts-bench-"))
    results = {}
    for name in args.models:
        folder = build_random_model(name, weights)
        size = CONFIGS[name]["sample_size"] * 16
        impls = [i for i in IMPLS if i in args.impls or i == "diffusers"]
        runs: dict[str, list[dict]] = {impl: [] for impl in impls}
        for repeat in range(args.repeats):
            for impl in (impls if repeat % 2 == 0 else impls[::-1]):
                runs[impl].append(measure(impl, folder, size, args))
                print(f"{name} {impl} #{repeat + 1}: {runs[impl][-1]}", file=sys.stderr)
        results[name] = {impl: summarise(r) for impl, r in runs.items()}
    report = table(results, args)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.md").write_text(report + "\n")
    (args.out / "speed.json").write_text(json.dumps(results, indent=2))
    if args.weights is None:
        shutil.rmtree(weights, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export the trained shapes-demo generator as a standard diffusers-layout aMUSEd folder.

Exact command (reads the latest generator checkpoint and the trained VQ; a few seconds)::

    nice -n 19 .venv/bin/python lab/scripts/export.py --out models/shapes-demo

Writes ``model_index.json`` (``AmusedPipeline``), ``transformer/`` (``UVit2DModel`` config + fp16
``diffusion_pytorch_model.safetensors``, the EMA weights), ``vqvae/`` (``VQModel``, fp32),
``text_encoder/`` (``CLIPTextModelWithProjection``, EMA weights, fp32), ``tokenizer/`` (CLIP
``vocab.json`` + ``merges.txt``), ``scheduler/scheduler_config.json`` (``AmusedScheduler``, cosine)
and ``training.json`` (provenance: steps, images seen, the last evaluation lines). Checks that the
folder loads with ``tcts.pipeline.Pipeline.from_folder`` and stays under ``--max-mb``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tcts.models.uvit import UVit2DTransformer  # noqa: E402
from lab.shapes.checkpointing import DEFAULT_ROOT, latest_checkpoint, load_checkpoint  # noqa: E402

ROOT = DEFAULT_ROOT / "shapes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gen", type=Path, default=ROOT / "gen", help="generator run folder (uses its latest checkpoint)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a specific step-XXXXXXX folder")
    ap.add_argument("--vq", type=Path, default=ROOT / "vq" / "final")
    ap.add_argument("--out", type=Path, default=Path("models/shapes-demo"))
    ap.add_argument("--max-mb", type=float, default=40.0)
    ap.add_argument("--note", default="", help="free text stored in training.json")
    args = ap.parse_args()
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    ckpt = args.checkpoint or latest_checkpoint(args.gen)
    if ckpt is None:
        sys.exit(f"no generator checkpoint in {args.gen}")
    state = json.loads((ckpt / "state.json").read_text())
    gcfg, tcfg = state["generator_config"], state["text_config"]
    gen = UVit2DTransformer(gcfg)
    text = CLIPTextModelWithProjection(CLIPTextConfig(**{k: v for k, v in tcfg.items() if k != "architectures"}))
    load_checkpoint(ckpt, {"ema_gen": gen, "ema_text": text})

    out = args.out
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("transformer", "vqvae", "text_encoder", "tokenizer", "scheduler"):
        (tmp / sub).mkdir(parents=True)
    (tmp / "model_index.json").write_text(json.dumps({
        "_class_name": "AmusedPipeline", "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "AmusedScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "transformer": ["diffusers", "UVit2DModel"],
        "vqvae": ["diffusers", "VQModel"]}, indent=2) + "\n")
    (tmp / "transformer" / "config.json").write_text(json.dumps(gcfg, indent=2, sort_keys=True) + "\n")
    save_file({k: v.half().contiguous() for k, v in gen.state_dict().items()},
              str(tmp / "transformer" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    shutil.copy(args.vq / "config.json", tmp / "vqvae" / "config.json")
    shutil.copy(args.vq / "diffusion_pytorch_model.safetensors", tmp / "vqvae" / "diffusion_pytorch_model.safetensors")
    (tmp / "text_encoder" / "config.json").write_text(json.dumps(
        {**tcfg, "dtype": "float32", "transformers_version": "5.24.0"}, indent=2, sort_keys=True) + "\n")
    text_state = {k: v.contiguous() for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    save_file(text_state, str(tmp / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(args.gen / "tokenizer" / name, tmp / "tokenizer" / name)
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "AmusedScheduler", "_diffusers_version": "0.42.1",
        "mask_token_id": int(gcfg["vocab_size"]) - 1, "masking_schedule": "cosine"}, indent=2) + "\n")
    log = (args.gen / "train.log").read_text().splitlines() if (args.gen / "train.log").is_file() else []
    evals = [json.loads(line.split(" eval ", 1)[1]) for line in log if " eval {" in line]
    (tmp / "training.json").write_text(json.dumps({
        "checkpoint": str(ckpt), "world": state.get("world", "v2"), "step": state["step"], "images_seen": state.get("images_seen"),
        "recipe": "lab/scripts/train_generator.py (+ fit_codes.py, train_vq.py); see docs/shapes-world.md",
        "note": args.note, "last_evals": evals[-4:]}, indent=1) + "\n")

    total = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) / 2**20
    if total > args.max_mb:
        sys.exit(f"export is {total:.1f} MB > {args.max_mb} MB")
    from tcts.pipeline import Pipeline
    from tcts.settings import Sampling

    pipe = Pipeline.from_folder(tmp)
    result = pipe.generate("a large red circle on a flat background", sampler="uniform", seed=0,
                           sampling=Sampling(steps=4, cfg=3.0))
    assert result.images.shape == (1, 64, 64, 3), result.images.shape
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"exported step {state['step']} ({state.get('images_seen')} images) to {out}: {total:.1f} MB")


if __name__ == "__main__":
    main()

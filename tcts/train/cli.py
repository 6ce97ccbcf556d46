"""``python -m tcts train-selector``: train a TCTS token selector for a generator on an image–caption folder.

Single process::

    python -m tcts train-selector --model PATH --data DATASET --out runs/sel --steps 20000

Several GPUs (one process each; NCCL) or several CPU processes (gloo) on one machine::

    torchrun --standalone --nproc_per_node 2 -m tcts train-selector --model PATH --data DATASET --out runs/sel

``--batch-size`` is per process and micro-batch: the global batch is batch × grad-accum × processes. The
dataset folder holds images and ``captions.jsonl`` (``{"file": …, "caption": …}`` per line) or
``captions.txt`` (``file<TAB>caption``); see ``tcts/train/data.py``. Outputs in ``--out``: ``selector/``
(use with ``generate --sampler tcts --selector OUT/selector``), ``checkpoint/`` (``--resume``), ``cache/``
(VQ tokens), ``train_log.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_train_selector_parser(sub: argparse._SubParsersAction) -> None:
    from ..sampling.schedules import SCHEDULES
    from .selector_trainer import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train-selector", help="train a TCTS token selector (guidance-sampling training; DDP via torchrun)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None,
                   help="the generator: a diffusers-layout model folder (default: the bundled demo model)")
    p.add_argument("--data", type=Path, required=True, help="image folder with captions.jsonl or captions.txt")
    p.add_argument("--val-data", type=Path, default=None, help="validation folder (default: hold out --val-fraction)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="images held out for validation when --val-data is not given (datasets of >= 10 images)")
    p.add_argument("--out", type=Path, required=True, help="output folder (selector/, checkpoint/, logs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if it exists")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="samples per process per micro-batch")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    g.add_argument("--warmup", type=int, default=d.warmup,
                   help="linear warm-up steps; shortened to a tenth of --steps (with a warning) when not shorter "
                        "than --steps")
    g.add_argument("--lr-schedule", default=d.lr_schedule, choices=("constant", "cosine"),
                   help="after the warm-up: constant, or cosine decay to 0 at --steps")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    g.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0 = off)")
    g.add_argument("--ema", type=float, default=d.ema, help="EMA decay of the exported weights (0 = off; e.g. 0.99)")
    g.add_argument("--ema-every", type=int, default=d.ema_every, help="steps between EMA updates")
    g.add_argument("--precision", default=d.precision, choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast on GPU, fp32 on CPU")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the data order, masking and initialisation")
    s = p.add_argument_group("guidance sampling (use the settings you will sample with)")
    s.add_argument("--cfg", type=float, default=d.cfg, help="generator CFG scale of the reconstruction")
    s.add_argument("--temperature", type=float, default=d.sampling_temperature, help="token sampling temperature")
    s.add_argument("--sampling-steps", type=int, default=d.sampling_steps, help="steps of the sampling schedule")
    s.add_argument("--schedule", default=None, choices=SCHEDULES, help="mask schedule (default: the model's)")
    s.add_argument("--caption-dropout", type=float, default=d.caption_dropout,
                   help="fraction of examples trained with the learned null prompt (for selector guidance)")
    s.add_argument("--resolution", type=int, default=None, help="training size in px (default: the model's)")
    a = p.add_argument_group("selector architecture")
    a.add_argument("--layers", type=int, default=d.layers, help="transformer blocks")
    a.add_argument("--width", type=int, default=d.width, help="hidden width")
    a.add_argument("--heads", type=int, default=d.heads, help="attention heads")
    a.add_argument("--mlp-ratio", type=float, default=d.mlp_ratio, help="MLP width / hidden width")
    a.add_argument("--max-grid", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                   help="largest token grid the selector can read (default: max(64, training grid))")
    o = p.add_argument_group("monitoring")
    o.add_argument("--val-every", type=int, default=d.val_every, help="validation interval in steps (0 = at the end)")
    o.add_argument("--val-samples", type=int, default=d.val_samples, help="validation examples")
    o.add_argument("--save-every", type=int, default=d.save_every, help="checkpoint interval (0 = at the end)")
    o.add_argument("--log-every", type=int, default=d.log_every, help="steps between log lines")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: the local rank's GPU)")
    p.set_defaults(func=run_train_selector)


def config_from_args(args: argparse.Namespace):
    from .selector_trainer import TrainConfig

    return TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup,
        lr_schedule=args.lr_schedule, weight_decay=args.weight_decay, grad_clip=args.grad_clip, ema=args.ema,
        ema_every=args.ema_every, cfg=args.cfg, sampling_temperature=args.temperature,
        sampling_steps=args.sampling_steps, schedule=args.schedule, caption_dropout=args.caption_dropout,
        resolution=args.resolution, seed=args.seed, val_every=args.val_every, val_samples=args.val_samples,
        save_every=args.save_every, log_every=args.log_every, precision=args.precision, layers=args.layers,
        width=args.width, heads=args.heads, mlp_ratio=args.mlp_ratio,
        max_grid=tuple(args.max_grid) if args.max_grid else None)


def fit_warmup(args: argparse.Namespace) -> str | None:
    """A warm-up as long as the run never reaches the learning rate: shorten it to a tenth of the steps;
    returns the warning to show (None when the warm-up fits)."""
    if args.warmup < args.steps:
        return None
    shorter = max(0, args.steps // 10)
    warning = (f"--warmup {args.warmup} is not shorter than --steps {args.steps}: the learning rate would never "
               f"reach --lr; using --warmup {shorter}")
    args.warmup = shorter
    return warning


def split_line(train, val) -> str:
    """``14 images with 14 captions: 13 images for training, 1 for validation``."""
    def images(data) -> int:
        return len(set(data.image_index))

    total_images = images(train) + (images(val) if val is not None else 0)
    total_captions = len(train) + (len(val) if val is not None else 0)
    line = f"{total_images} images with {total_captions} captions: {images(train)} images for training"
    return line + (f", {images(val)} for validation" if val is not None else ", no validation set")


def run_train_selector(args: argparse.Namespace) -> int:
    from ..cli_common import model_folder
    from ..pipeline import Pipeline
    from ..selector.model import parameter_count
    from .data import caption_folder
    from .ddp import cleanup, init_distributed
    from .selector_trainer import SelectorTrainer, split_validation

    model_path = model_folder(args)
    warning = fit_warmup(args)
    config = config_from_args(args)
    data = caption_folder(args.data)
    if args.val_data is not None:
        train, val = data, caption_folder(args.val_data)
    else:
        train, val = split_validation(data, args.val_fraction, seed=args.seed)
    info = init_distributed(args.device)
    try:
        pipe = Pipeline.from_folder(model_path)
        trainer = SelectorTrainer(pipe, train, args.out, config, val_data=val, dist=info, resume=args.resume)
        if info.is_main:
            if warning:
                print(f"train-selector: warning: {warning}", file=sys.stderr)
            print(f"train-selector: {split_line(train, val)}; "
                  f"{info.world_size} process(es) on {info.device}; global batch "
                  f"{config.batch_size * config.grad_accum * info.world_size}; generator "
                  f"{parameter_count(pipe.transformer):,} parameters", file=sys.stderr, flush=True)
        result = trainer.train()
        if info.is_main:
            print(f"selector: {parameter_count(result.selector):,} parameters", file=sys.stderr)
            if result.validation:
                print(json.dumps({"validation": result.validation}), file=sys.stderr)
            print(args.out / "selector")
    finally:
        cleanup(info)
    return 0

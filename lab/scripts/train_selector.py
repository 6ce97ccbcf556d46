"""Train the shapes-demo TCTS selector with the project's guidance-sampling trainer.

Exact command of the shipped selector (after ``export.py``; about 60 min on two CPU cores)::

    .venv/bin/python lab/scripts/train_selector.py --model models/shapes-demo \
        --out /root/.cache/tcts-train/shapes/selector-long --steps 2000 --batch-size 64 --threads 2
    # then ship it:  cp /root/.cache/tcts-train/shapes/selector-long/selector/* models/shapes-demo-selector/

(The first shipped selector used ``--steps 1200 --batch-size 16``: same validation precision at the re-mask
budget, higher validation loss, 5-8 points less TCTS accuracy; docs/shapes-world.md.)

Data: ``--scenes`` train-split scenes (``sample_scene([SEED, i], "train")``), given to the trainer as
token grids — the k-means ids the generator was trained on (``--codes``), or, without a codes file, the
images tokenized by the model's VQ. Everything else is ``tcts.train.selector_trainer`` (docs/method.md,
Guidance-sampling training): one-step guided reconstructions of masked grids by the frozen generator, BCE
on "token changed".
The reconstruction uses the guidance the benchmark samples with (cfg 2) and the 16-step cosine
schedule; the selector is conditioned on the sampling progress, so it is used at 8 and 25 steps too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.shapes.checkpointing import DEFAULT_ROOT  # noqa: E402

SEED = 3000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/shapes-demo"))
    ap.add_argument("--out", type=Path, default=DEFAULT_ROOT / "shapes" / "selector")
    ap.add_argument("--codes", type=Path, default=DEFAULT_ROOT / "shapes" / "codes.safetensors")
    ap.add_argument("--scenes", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--sampling-steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from tcts.pipeline import Pipeline
    from lab.shapes.world import render_batch, scenes
    from tcts.train.data import in_memory_captions
    from tcts.train.selector_trainer import TrainConfig, train_selector

    pipe = Pipeline.from_folder(args.model)
    world = list(scenes("train", args.scenes, seed=SEED))
    captions = [s.caption for s in world]
    if args.codes.is_file():
        from lab.shapes.patchcodes import PatchCodebook

        book = PatchCodebook.load(args.codes)
        grids = [torch.as_tensor(book.encode(render_batch(world[i:i + 500]))).long()
                 for i in range(0, len(world), 500)]
        items = list(zip(torch.cat(grids), captions))
    else:
        items = [(torch.from_numpy(img), c) for img, c in zip(render_batch(world), captions)]
    n_val = max(64, len(items) // 50)
    train, val = in_memory_captions(items[n_val:], "shapes-train"), in_memory_captions(items[:n_val], "shapes-val")
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=min(200, args.steps // 5),
                         lr_schedule="cosine", cfg=args.cfg, sampling_steps=args.sampling_steps,
                         layers=args.layers, width=args.width, heads=args.heads, val_every=250, val_samples=256,
                         save_every=250, log_every=50, ema=0.99, ema_every=5, max_grid=(8, 8))
    result = train_selector(pipe, train, args.out, config, val_data=val, resume=args.resume)
    print(f"selector written to {result.out_dir / 'selector'}; validation {result.validation}")


if __name__ == "__main__":
    main()

"""Where the TCTS training labels ("the generator's draw differs from the ground truth"; docs/method.md,
Guidance-sampling training) fall in the shapes world, and where a selector spends its re-mask budget.

Exact command (a few minutes on one CPU core)::

    .venv/bin/python lab/scripts/selector_labels.py --selector models/shapes-demo-selector

Examples are made exactly as the selector trainer makes validation examples (``ExampleMaker.validation_set``:
cfg 2, 16-step cosine schedule, steps 0..14 in turn) on train-split scenes of the training seed. Each token is
an 8 px cell; it is an *object* cell when it lies under an object's tile, else a *background* cell of the
scene's background kind. Printed: the selector's precision and recall at the re-mask budget with their
ceiling, its R-precision (precision among its top-k, k = the example's number of changed tokens), and per
region: share of tokens, label rate (changed / tokens), share of all changed labels, share of the
selector's flagged tokens (its top-``budget`` P(changed), the re-mask set the validation scores), and the
selector's precision there.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.shapes.checkpointing import DEFAULT_ROOT  # noqa: E402

SEED = 3000   # train_selector.py's scene seed


def region_map(scene, grid: int) -> list[list[str]]:
    """Per cell: "object" under an object's tile, else the background kind."""
    cells = [[scene.background.kind] * grid for _ in range(grid)]
    for obj in scene.objects:
        for y in range(obj.y, min(grid, obj.y + obj.cells)):
            for x in range(obj.x, min(grid, obj.x + obj.cells)):
                cells[y][x] = "object"
    return cells


def ground_truth_tokens(pipe, images, codes: Path) -> torch.Tensor:
    """x₀ as the trainer saw it: the k-means ids of ``codes`` (train_selector.py), else the model's VQ tokens."""
    if codes.is_file():
        from lab.shapes.patchcodes import PatchCodebook

        return torch.as_tensor(PatchCodebook.load(codes).encode(images)).long()
    from tcts.pipeline import encode_images

    with torch.inference_mode():
        return torch.cat([encode_images(pipe.vq, torch.from_numpy(images[i:i + 256]))
                          for i in range(0, len(images), 256)]).long().clone()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/shapes-demo"))
    ap.add_argument("--selector", type=Path, default=Path("models/shapes-demo-selector"))
    ap.add_argument("--codes", type=Path, default=DEFAULT_ROOT / "shapes" / "codes.safetensors")
    ap.add_argument("--examples", type=int, default=1200)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from tcts.pipeline import Pipeline
    from tcts.selector.model import load_selector
    from lab.shapes.world import GRID, render_batch, scenes
    from tcts.train.data import in_memory_captions
    from tcts.train.selector_trainer import ExampleMaker, TrainConfig

    pipe = Pipeline.from_folder(args.model)
    world = list(scenes("train", args.examples, seed=SEED + 1))      # scenes the trainer did not draw from
    tokens = ground_truth_tokens(pipe, render_batch(world), args.codes)
    data = in_memory_captions(list(zip(tokens, [s.caption for s in world])), "shapes-label-study")
    config = TrainConfig(cfg=2.0, sampling_steps=16, max_grid=(GRID, GRID))
    maker = ExampleMaker(pipe, data, tokens, config, torch.device("cpu"), seed_offset=2_000_000)
    selector = load_selector(args.selector, pipe.transformer).eval()

    count = defaultdict(lambda: torch.zeros(4))     # region -> [tokens, changed, flagged, flagged & changed]
    done = ceiling = r_hits = 0
    for batch in maker.validation_set(args.examples, batch_size=64):
        with torch.no_grad():
            q = selector(batch.tokens, batch.text, batch.t).float().flatten(1)
        flat_changed = batch.changed.flatten(1)
        for row in range(q.shape[0]):
            flagged = torch.zeros_like(flat_changed[row])
            budget, changed = int(batch.budget[row]), int(flat_changed[row].sum())
            flagged[q[row].topk(budget).indices] = True
            ceiling += min(budget, changed)                              # the most a budget-sized set can hit
            r_hits += int(flat_changed[row, q[row].topk(changed).indices].sum()) if changed else 0
            regions = [r for line in region_map(world[(done + row) % len(world)], GRID) for r in line]
            for i, region in enumerate(regions):
                c, f = bool(flat_changed[row, i]), bool(flagged[i])
                count[region] += torch.tensor([1, c, f, c and f], dtype=torch.float32)
        done += q.shape[0]

    total = sum(count.values())
    print(f"{done} examples, {int(total[0])} tokens; changed rate {total[1] / total[0]:.3f}; re-mask budget "
          f"{total[2] / total[0]:.3f} of the tokens")
    print(f"at the budget: precision {total[3] / total[2]:.3f} (ceiling {ceiling / total[2]:.3f}: a set of the "
          f"budget's size holds at most the changed tokens), recall {total[3] / total[1]:.3f}")
    print(f"R-precision (top #changed tokens per example): {r_hits / total[1]:.3f} (chance "
          f"{total[1] / total[0]:.3f})\n")
    print("| region | share of tokens | label rate | share of changed | share of flagged | precision there |")
    print("| --- | --- | --- | --- | --- | --- |")
    for region in sorted(count, key=lambda r: -count[r][1]):
        n, c, f, cf = count[region].tolist()
        print(f"| {region} | {n / total[0]:.3f} | {c / n:.3f} | {c / total[1]:.3f} | {f / total[2]:.3f} | "
              f"{cf / f if f else float('nan'):.3f} |")


if __name__ == "__main__":
    main()

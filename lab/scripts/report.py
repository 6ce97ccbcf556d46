"""Summarise a shapes training log: loss curve and per-attribute accuracy over time.

Exact command::

    .venv/bin/python lab/scripts/report.py /root/.cache/tcts-train/shapes/gen/train.log
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "/root/.cache/tcts-train/shapes/gen/train.log")
    trains, evals = [], []
    for line in path.read_text().splitlines():
        stamp = line[:19]
        if " train {" in line:
            trains.append((stamp, json.loads(line.split(" train ", 1)[1])))
        elif " eval {" in line:
            evals.append((stamp, json.loads(line.split(" eval ", 1)[1])))
    print("time                 step   images  loss    masked_acc  img/s")
    stride = max(1, len(trains) // 25)
    for stamp, r in trains[::stride] + trains[-1:]:
        print(f"{stamp}  {r['step']:6d} {r['images_seen']:8d}  {r['loss']:.4f}  {r['masked_acc']:.4f}      {r['img_s']}")
    keys = ("object_recall", "shape", "size", "relation", "background", "no_extra", "whole", "whole_1obj",
            "whole_2obj", "whole_3obj")
    print("\ntime                 step   images  sampler  " + "  ".join(k[:8].rjust(8) for k in keys))
    for stamp, r in evals:
        vals = "  ".join(("   -    " if r.get(k) is None else f"{r[k]:8.3f}") for k in keys)
        print(f"{stamp}  {r['step']:6d} {r['images_seen']:8d}  {r['sampler'][:7]:7s}  {vals}")


if __name__ == "__main__":
    main()

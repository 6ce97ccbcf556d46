"""What a new user gets from the bundled demo model with nothing but a prompt.

Runs ``python -m tcts generate --prompt CAPTION --out X.png --batch-size SEEDS`` (a batch uses seeds
0 … SEEDS-1, the same pictures as single runs with those seeds) for the first captions of the shapes
benchmark's held-out list, exactly as the README's user would, with no sampler setting on the command line,
and reads every picture with the shapes detector. Prints, and writes to ``--out``/first_contact.md, one
row per caption: how many pictures are whole-caption right.

    .venv/bin/python lab/scripts/first_contact.py [--captions 5] [--seeds 20] [--out DIR]

Exit status 1 when a caption's share of right pictures is below ``--minimum`` (default 0.6).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lab.bench.shapes import EVAL_SEED  # noqa: E402
from lab.shapes.detector import check  # noqa: E402
from lab.shapes.world import sample_scene  # noqa: E402


def benchmark_captions(count: int) -> list[str]:
    """The first ``count`` held-out captions of ``python -m tcts bench``."""
    return [sample_scene([EVAL_SEED, i], "heldout").caption for i in range(count)]


def run_caption(caption: str, seeds: int, folder: Path) -> list[bool]:
    out = folder / "scene.png"
    cmd = [sys.executable, "-m", "tcts", "generate", "--prompt", caption, "--out", str(out)]
    cmd += ["--batch-size", str(seeds)] if seeds > 1 else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    paths = [out] if seeds == 1 else [out.with_name(f"scene-{i}.png") for i in range(seeds)]
    right = []
    for path in paths:
        with Image.open(path) as im:
            right.append(bool(check(np.asarray(im.convert("RGB"), dtype=np.float32) / 255, caption)["whole"]))
    return right


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--captions", type=int, default=5, help="first held-out captions of the benchmark (default 5)")
    p.add_argument("--seeds", type=int, default=20, help="pictures per caption, seeds 0 .. N-1 (default 20)")
    p.add_argument("--minimum", type=float, default=0.6, help="lowest acceptable share of right pictures (0.6)")
    p.add_argument("--out", type=Path, default=None, help="folder for first_contact.md (default: print only)")
    a = p.parse_args(argv)
    rows = ["| caption | right / pictures | share |", "|---|---|---|"]
    worst = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, caption in enumerate(benchmark_captions(a.captions)):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            right = run_caption(caption, a.seeds, folder)
            share = sum(right) / len(right)
            worst = min(worst, share)
            rows.append(f"| {caption} | {sum(right)} / {len(right)} | {share:.2f} |")
            print(rows[-1], flush=True)
    report = "\n".join(["`python -m tcts generate --prompt CAPTION --out X.png` on the bundled demo model "
                        f"(seeds 0-{a.seeds - 1}; only the prompt given), read by the shapes detector:", "", *rows])
    print(report)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "first_contact.md").write_text(report + "\n", encoding="utf-8")
    return 0 if worst >= a.minimum else 1


if __name__ == "__main__":
    raise SystemExit(main())

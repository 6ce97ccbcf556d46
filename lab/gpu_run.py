"""Run the lab's measurements on a GPU machine within a time budget, one reproducible command.

    python -m lab.gpu_run --out OUT [--budget 280] [--device cuda] TASK [TASK ...]

Tasks (each writes into ``OUT/<task>/`` and its log ``OUT/<task>.log``; a task that would start with too
little budget left is skipped and reported):

* ``perf``: ``python -m lab.bench.perf`` (where a step's time goes, against diffusers: the drawing-ahead
  identity, token parity, time and memory per step at 256-4096 tokens and batch 1-16, the peak memory of a
  whole generation, the matrix-product floor, the compiled step), with what is left of the budget;
* ``samplers``: the shapes sampler benchmark (``python -m tcts bench``) at ``--captions`` x ``--seeds``, one
  process per sampler sharing the unit cache, then one run that assembles the table;
* ``speed``: ``python -m tcts bench-speed`` (ours against diffusers, random full-size aMUSEd weights, fp16);
* ``selector-step``: ``python lab/selector_step.py`` (the cost of a TCTS step against a purity step).

Everything a task needs comes from the repository and the Python environment; results are plain files, so
a run cut off at its budget keeps what finished. Try it on the CPU first at a tiny size:
``python -m lab.gpu_run --device cpu --out OUT --captions 4 --seeds 1 samplers``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = ("perf", "samplers", "speed", "selector-step")


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


def run_logged(cmd: list[str], log: Path, budget: Budget) -> int:
    """Run ``cmd`` from the repository root until it ends or the budget does; stdout and stderr go to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    with open(log, "w") as out:
        try:
            return subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=max(1.0, budget.left())).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[gpu_run] stopped at the budget: {' '.join(cmd)}\n")
            return 124


def perf(args: argparse.Namespace, budget: Budget) -> int:
    cmd = [sys.executable, "-m", "lab.bench.perf", "--device", args.device, "--budget", f"{budget.left() - 5:.0f}",
           "--out", str(args.out / "perf"), "identity", "parity", "steps", "memory", "floor", "compile"]
    return run_logged(cmd, args.out / "perf.log", budget)


def samplers(args: argparse.Namespace, budget: Budget) -> int:
    out = args.out / "samplers"
    common = [sys.executable, "-m", "tcts", "bench", "--device", args.device, "--batch-size", str(args.batch_size),
              "--captions", str(args.captions), "--seeds", str(args.seeds), "--threads", "2", "--out", str(out)]
    common += ["--steps", *map(str, args.steps)] if args.steps else []
    with ThreadPoolExecutor(max_workers=len(args.samplers)) as pool:  # the GPU serves all of them
        codes = list(pool.map(lambda s: run_logged(common + ["--samplers", s], args.out / f"samplers-{s}.log", budget),
                              args.samplers))
    if any(codes):
        return max(codes)
    return run_logged(common + ["--samplers", *args.samplers], args.out / "samplers.log", budget)


def speed(args: argparse.Namespace, budget: Budget) -> int:
    cmd = [sys.executable, "-m", "tcts", "bench-speed", "--models", "amused-256", "amused-512", "--steps", "12",
           "--repeats", "1", "--impls", "ours", "ours-sequential", "diffusers", "--device", args.device,
           "--dtype", "float16" if args.device.startswith("cuda") else "float32", "--out", str(args.out / "speed")]
    return run_logged(cmd, args.out / "speed.log", budget)


def selector_step(args: argparse.Namespace, budget: Budget) -> int:
    cmd = [sys.executable, str(REPO / "lab" / "selector_step.py"), "--device", args.device,
           "--out", str(args.out / "selector-step" / "selector_step.md")]
    return run_logged(cmd, args.out / "selector-step.log", budget)


RUNNERS = {"perf": perf, "samplers": samplers, "speed": speed, "selector-step": selector_step}


def main(argv: list[str] | None = None) -> int:
    from lab.bench.shapes import DEFAULT_SAMPLERS

    p = argparse.ArgumentParser(prog="python -m lab.gpu_run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("tasks", nargs="+", choices=TASKS, help="what to run, in this order")
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--budget", type=float, default=280.0, help="seconds for all tasks together")
    p.add_argument("--device", default="cuda", help="torch device")
    p.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), help="samplers task: which samplers")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="samplers task: step counts (bench default)")
    p.add_argument("--captions", type=int, default=1000, help="samplers task: held-out captions")
    p.add_argument("--seeds", type=int, default=2, help="samplers task: seeds per caption")
    p.add_argument("--batch-size", type=int, default=1000, help="samplers task: images per batch")
    p.add_argument("--min-start", type=float, default=20.0, help="skip a task that would start with less left")
    args = p.parse_args(argv)
    budget = Budget(args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    for task in args.tasks:
        if budget.left() < args.min_start:
            report.append(f"{task}: skipped ({budget.left():.0f} s left)")
            continue
        t0 = time.monotonic()
        code = RUNNERS[task](args, budget)
        report.append(f"{task}: exit {code} in {time.monotonic() - t0:.0f} s")
        print(report[-1], flush=True)
    (args.out / "gpu_run.txt").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

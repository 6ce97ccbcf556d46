"""The edit benchmark on the shapes world: ``python -m tcts bench-edit``.

For each attribute (colour, shape, size) x word type (noun, adjective, phrase) it draws ``--scenes``
held-out edit cases (:mod:`lab.bench.edit_cases`: one attribute of one object changed by one word). The
source picture is the scene's real render through the VQ (its tokens); every method makes a 64 px picture
for the target caption from it:

* ``edit/<select>``: the project's mask-free edit (``tcts.editing``) with the region ``select``
  (``contrast``, ``object``, ``object+word``, ``word``) found from the word given;
* ``regenerate``: text-to-image from scratch with the target prompt and the same seed (what a user gets
  without editing);
* ``inpaint (true mask)``: the same edit loop with the true cells as the region (the ceiling a perfect
  region gives).

Scores per case (the detector is ``lab.shapes.detector``):

* **success**: the picture matches the target caption (the detector's whole-caption check);
* **preservation**: outside the true cells (the object's tile in the source and the target) dilated by one
  cell, every other object is found with its shape and size, the background kind is right, and the mean
  absolute pixel difference to the source picture there is at most ``PIXEL_TOL``;
* **IoU** of the region with the true cells (edits only);
* **seam**: the step in mean intensity across the region's border (the ring of pixels just inside
  against the ring just outside, over the border's length), minus the same step in the source picture
  across the same border: 0 when an edit leaves the border as smooth (or as sharp) as the picture had it.

Rates come with percentile-bootstrap 95 % intervals (cases resampled, :func:`lab.bench.bootstrap.paired_bootstrap`
against zero); the differences of every edit select to both baselines are paired by case.
Writes ``results.md`` and ``results.json`` to ``--out`` (default ``lab/results/edit``) and caches each
attribute x word type under ``--out/cells`` (keyed by everything that determines it), so runs of single
attributes (in parallel, or after an interruption) are assembled by a last run over all of them.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tcts.attention import token_pieces
from tcts.editing import SELECTIONS, EditRequest, RegionOptions, mask_free_edit, region_columns
from tcts.engine import Job, micro_conditions, run
from tcts.pipeline import Pipeline, decode_tokens, encode_images
from tcts.sampling.registry import make_rule
from tcts.sampling.step import Conditioning
from tcts.settings import Sampling
from tcts.starts import EncodedImage, TextToImage
from ..shapes.detector import check
from ..shapes.world import GRID, render_batch
from .bootstrap import paired_bootstrap
from .edit_cases import ATTRIBUTES, WORD_TYPES, EditCase, make_cases
from .generation import image_seed

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "shapes-demo"
DEFAULT_OUT = REPO / "lab" / "results" / "edit"
SIZE = 64
PIXEL_TOL = 0.02                 # mean |Δ| in [0, 1] outside the dilated true cells that still counts as kept
BASELINES = ("regenerate", "inpaint (true mask)")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclass
class EditBenchSettings:
    model: Path = DEFAULT_MODEL
    scenes: int = 200                              # cases per attribute x word type
    attributes: tuple[str, ...] = ATTRIBUTES
    word_types: tuple[str, ...] = WORD_TYPES
    selects: tuple[str, ...] = SELECTIONS
    strategy: str = "random-revoke"
    steps: int | None = None                       # None: the model's settings
    batch_size: int = 100
    out: Path = DEFAULT_OUT
    region: RegionOptions = field(default_factory=RegionOptions)   # threshold options (select is per method)

    def validate(self) -> None:
        for name, given, known in (("attribute", self.attributes, ATTRIBUTES), ("word type", self.word_types, WORD_TYPES),
                                   ("select", self.selects, SELECTIONS)):
            bad = [g for g in given if g not in known]
            if bad or not given:
                raise ValueError(f"unknown or no {name}(s) {bad or list(given)}; expected some of {', '.join(known)}")
        for name in ("scenes", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1; got {getattr(self, name)!r}")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------------

def grow(cells: np.ndarray, steps: int = 1) -> np.ndarray:
    """A bool cell grid grown by ``steps`` cells (3x3, diagonals included)."""
    out = cells.copy()
    for _ in range(steps):
        padded = np.pad(out, 1)
        out = np.zeros_like(out)
        for dy in range(3):
            for dx in range(3):
                out |= padded[dy:dy + cells.shape[0], dx:dx + cells.shape[1]]
    return out


def to_pixels(cells: np.ndarray, size: int) -> np.ndarray:
    k = size // cells.shape[0]
    return np.kron(cells.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)


def seam_step(image: np.ndarray, cells: np.ndarray) -> float:
    """Mean |intensity just inside − just outside| over the border of a cell region (one pixel each side), or
    NaN when the region has no border inside the picture."""
    grey = image.astype(np.float64).mean(-1)
    inside = to_pixels(cells, image.shape[0])
    steps = []
    for axis in (0, 1):
        a = np.take(inside, range(0, inside.shape[axis] - 1), axis=axis)
        b = np.take(inside, range(1, inside.shape[axis]), axis=axis)
        ga = np.take(grey, range(0, grey.shape[axis] - 1), axis=axis)
        gb = np.take(grey, range(1, grey.shape[axis]), axis=axis)
        border = a != b
        steps.append(np.abs(ga - gb)[border])
    joined = np.concatenate(steps)
    return float(joined.mean()) if joined.size else float("nan")


def score_case(case: EditCase, image: np.ndarray, source: np.ndarray, region: np.ndarray | None) -> dict[str, Any]:
    """Success, preservation (detector and pixels), IoU and seam of one picture (module docstring)."""
    result = check(image, case.target_caption)
    truth = case.cells()
    others = [o for j, o in enumerate(result["objects"]) if j != case.index]
    kept_objects = all(o["found"] and o["shape"] and o["size"] for o in others) and result["background"]
    outside = ~to_pixels(grow(truth), image.shape[0])
    pixel = float(np.abs(image - source)[outside].mean()) if outside.any() else 0.0
    row = {"success": bool(result["whole"]), "kept_objects": bool(kept_objects), "pixel_diff": pixel,
           "preserved": bool(kept_objects and pixel <= PIXEL_TOL), "iou": None, "seam": None}
    if region is not None:
        row["iou"] = float((region & truth).sum() / max(1, (region | truth).sum()))
        if region.any() and not region.all():
            row["seam"] = seam_step(image, region) - seam_step(source, region)
    return row


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------

def edit_start() -> Any:
    """A placeholder edit start: it only tells ``Pipeline.resolve`` to use the edit's schedule."""
    from tcts.starts import Edit

    tokens = torch.zeros(1, GRID, GRID, dtype=torch.long)
    return Edit(EncodedImage(tokens=tokens, width=SIZE, height=SIZE), torch.ones_like(tokens, dtype=torch.bool))


class EditRunner:
    """The model, loaded once, and the methods over one batch of cases."""

    def __init__(self, settings: EditBenchSettings) -> None:
        settings.validate()
        if not settings.model.exists():
            raise FileNotFoundError(f"model folder {settings.model} does not exist; pass --model PATH (a shapes "
                                    "model folder, e.g. models/shapes-demo)")
        self.settings = settings
        self.pipe = Pipeline.from_folder(settings.model)
        self.negative = self.pipe.encode_prompts([""])
        given = Sampling(steps=settings.steps)
        self.edit_sampling = self.pipe.resolve(given, start=edit_start()).sampling
        self.t2i_sampling = self.pipe.resolve(given).sampling

    def condition(self, captions: Sequence[str], negative: bool) -> tuple[Conditioning, list[list[str]]]:
        enc = self.pipe.encode_prompts(list(captions))
        b = len(captions)
        cond = Conditioning(enc.hidden_states, enc.pooled, micro_conditions(SIZE, SIZE, b),
                            self.negative.hidden_states.expand(b, -1, -1) if negative else None,
                            self.negative.pooled.expand(b, -1) if negative else None)
        pieces = [token_pieces(self.pipe.text_encoder.tokenizer, ids) for ids in enc.token_ids]
        return cond, pieces

    @torch.inference_mode()
    def batch(self, cases: Sequence[EditCase], first: int) -> dict[str, list[dict[str, Any]]]:
        """Scores of every method on ``cases`` (image seeds ``first + i``)."""
        s = self.settings
        renders = torch.from_numpy(render_batch([c.source for c in cases], SIZE))
        tokens = encode_images(self.pipe.vq, renders)
        source = decode_tokens(self.pipe.vq, tokens).float().numpy()
        src, pieces = self.condition([c.source_caption for c in cases], negative=False)
        tgt, _ = self.condition([c.target_caption for c in cases], negative=self.edit_sampling.cfg != 1.0)
        seeds = [image_seed(0, first + i) for i in range(len(cases))]
        image = EncodedImage(tokens=tokens, width=SIZE, height=SIZE)
        rule = make_rule(s.strategy)
        out: dict[str, list[dict[str, Any]]] = {}

        def edit(name: str, region: RegionOptions | torch.Tensor, columns: list[list[int]]) -> None:
            job = Job(condition=tgt, sampling=self.edit_sampling, rule=rule, seed=seeds)
            result = mask_free_edit(self.pipe.transformer, EditRequest(image, src, columns, region), job,
                                    self.pipe.vq_factor)
            pictures = decode_tokens(self.pipe.vq, result.tokens).float().numpy()
            regions = result.region.cpu().numpy()
            out[name] = [score_case(c, p, q, r) for c, p, q, r in zip(cases, pictures, source, regions)]

        for select in s.selects:
            columns = [region_columns(c.word, p, c.source_caption, select) for c, p in zip(cases, pieces)]
            edit(f"edit/{select}", _with_select(s.region, select), columns)
        truth = torch.from_numpy(np.stack([c.cells() for c in cases]))
        edit("inpaint (true mask)", truth, [[0]] * len(cases))
        job = Job(condition=tgt, sampling=self.t2i_sampling, rule=rule, start=TextToImage(SIZE, SIZE), seed=seeds)
        pictures = decode_tokens(self.pipe.vq, run(self.pipe.transformer, job, self.pipe.vq_factor)).float().numpy()
        out["regenerate"] = [score_case(c, p, q, None) for c, p, q in zip(cases, pictures, source)]
        out["source (VQ round trip)"] = [{"success": bool(check(q, c.source_caption)["whole"])}
                                         for c, q in zip(cases, source)]
        return out


def _with_select(options: RegionOptions, select: str) -> RegionOptions:
    from dataclasses import replace

    return replace(options, select=select)


def interval(values: Sequence[float]) -> dict[str, float]:
    """Mean and percentile-bootstrap 95 % interval of per-case values."""
    x = np.asarray(values, dtype=np.float64)
    mean, low, high = paired_bootstrap(x, np.zeros_like(x), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    return {"mean": mean, "low": low, "high": high}


def summarise(scores: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per method: success / preservation / IoU / seam with intervals, and paired differences to the baselines."""
    summary: dict[str, Any] = {}
    for method, rows in scores.items():
        entry: dict[str, Any] = {"n": len(rows)}
        for key in ("success", "preserved", "kept_objects", "pixel_diff", "iou", "seam"):
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                entry[key] = interval([float(v) for v in values])
        summary[method] = entry
    differences = []
    for method in scores:
        if not method.startswith("edit/"):
            continue
        for base in BASELINES:
            if base not in scores:
                continue
            for key in ("success", "preserved"):
                a = [float(r[key]) for r in scores[method]]
                b = [float(r[key]) for r in scores[base]]
                mean, low, high = paired_bootstrap(np.array(a), np.array(b), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
                differences.append({"method": method, "baseline": base, "metric": key, "mean": mean, "low": low,
                                    "high": high})
    summary["differences"] = differences
    return summary


def cell_key(settings: EditBenchSettings, runner: "EditRunner", attribute: str, word_type: str) -> str:
    """What determines one attribute x word type's results, hashed."""
    from .units import folder_fingerprint, unit_key

    return unit_key({"version": 1, "model": folder_fingerprint(settings.model), "scenes": settings.scenes,
                     "attribute": attribute, "word_type": word_type, "selects": list(settings.selects),
                     "strategy": settings.strategy, "edit": asdict(runner.edit_sampling),
                     "regenerate": asdict(runner.t2i_sampling), "region": asdict(settings.region),
                     "pixel_tol": PIXEL_TOL})


def run_edit_bench(settings: EditBenchSettings, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Run every attribute x word type (or take it from ``out/cells``); returns the results (also written to
    ``settings.out``)."""
    import json

    from .report import write_json_atomic
    from .shapes import _clean

    started = time.perf_counter()
    runner = EditRunner(settings)
    cells: dict[str, Any] = {}
    for attribute in settings.attributes:
        for word_type in settings.word_types:
            key = cell_key(settings, runner, attribute, word_type)
            path = settings.out / "cells" / f"{attribute}-{word_type}.json"
            if path.is_file():
                saved = json.loads(path.read_text())
                if saved.get("key") == key:
                    cells[f"{attribute}/{word_type}"] = saved["cell"]
                    log(f"{attribute} x {word_type}: cached ({path})")
                    continue
            cases = make_cases(attribute, word_type, settings.scenes)
            scores: dict[str, list[dict[str, Any]]] = {}
            t0 = time.perf_counter()
            for start in range(0, len(cases), settings.batch_size):
                for method, rows in runner.batch(cases[start:start + settings.batch_size], start).items():
                    scores.setdefault(method, []).extend(rows)
            cells[f"{attribute}/{word_type}"] = {"attribute": attribute, "word_type": word_type, "n": len(cases),
                                                 "seconds": time.perf_counter() - t0,
                                                 "summary": summarise(scores),
                                                 "examples": [{"source": c.source_caption, "word": c.word,
                                                               "target": c.target_caption} for c in cases[:3]]}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, _clean({"key": key, "cell": cells[f"{attribute}/{word_type}"]}))
            log(f"{attribute} x {word_type}: {len(cases)} cases, {time.perf_counter() - t0:.1f} s")
    return write_outputs(settings, runner, cells, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------

def _pct(entry: dict[str, Any] | None, key: str) -> str:
    if not entry or key not in entry:
        return "—"
    v = entry[key]
    return f"{100 * v['mean']:.1f} [{100 * v['low']:.1f}, {100 * v['high']:.1f}]"


def _num(entry: dict[str, Any] | None, key: str) -> str:
    if not entry or key not in entry:
        return "—"
    v = entry[key]
    return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def compact_table(cells: dict[str, Any], select: str = "contrast") -> str:
    """One row per attribute x word type: the edit with ``select`` against both baselines (success %,
    preserved %, IoU), each with its interval."""
    method = f"edit/{select}"
    lines = [f"| attribute | word | n | {method}: success % | preserved % | IoU | regenerate: success % | "
             "preserved % | inpaint (true mask): success % | preserved % | source through the VQ: detector % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells.values():
        got = cell["summary"]
        if method not in got:
            continue
        edit, regen, ceiling = got[method], got.get("regenerate"), got.get("inpaint (true mask)")
        lines.append(f"| {cell['attribute']} | {cell['word_type']} | {cell['n']} | {_pct(edit, 'success')} | "
                     f"{_pct(edit, 'preserved')} | {_num(edit, 'iou')} | {_pct(regen, 'success')} | "
                     f"{_pct(regen, 'preserved')} | {_pct(ceiling, 'success')} | {_pct(ceiling, 'preserved')} | "
                     f"{_pct(got.get('source (VQ round trip)'), 'success')} |")
    return "\n".join(lines)


def markdown_tables(cells: dict[str, Any]) -> str:
    """The main table (one row per attribute x word type x method) and the paired differences."""
    lines = ["| attribute | word | method | n | success % | preserved % | others + bg kept % | pixel Δ outside | "
             "region IoU | seam (edit − source) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells.values():
        for method, entry in cell["summary"].items():
            if method == "differences":
                continue
            lines.append(f"| {cell['attribute']} | {cell['word_type']} | {method} | {entry['n']} | "
                         f"{_pct(entry, 'success')} | {_pct(entry, 'preserved')} | {_pct(entry, 'kept_objects')} | "
                         f"{_num(entry, 'pixel_diff')} | {_num(entry, 'iou')} | {_num(entry, 'seam')} |")
    diffs = ["| attribute | word | method − baseline | success, points | preserved, points |", "|---|---|---|---|---|"]
    for cell in cells.values():
        pairs: dict[tuple[str, str], dict[str, str]] = {}
        for d in cell["summary"]["differences"]:
            pairs.setdefault((d["method"], d["baseline"]), {})[d["metric"]] = \
                f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        for (method, base), got in pairs.items():
            diffs.append(f"| {cell['attribute']} | {cell['word_type']} | {method} − {base} | "
                         f"{got.get('success', '—')} | {got.get('preserved', '—')} |")
    return "\n".join(lines) + "\n\n### Paired differences (bootstrap 95 % intervals)\n\n" + "\n".join(diffs)


def write_outputs(settings: EditBenchSettings, runner: EditRunner, cells: dict[str, Any],
                  seconds: float) -> dict[str, Any]:
    from .report import write_json_atomic, write_text_atomic
    from .shapes import _clean, shown_path

    environment = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                   "platform": platform.platform()}
    sampling = {"edit": asdict(runner.edit_sampling), "regenerate": asdict(runner.t2i_sampling)}
    settings_json = {**asdict(settings), "model": shown_path(settings.model), "out": shown_path(settings.out),
                     "pixel_tol": PIXEL_TOL, "sampling": sampling}
    seconds = sum(float(c.get("seconds", 0.0)) for c in cells.values()) or seconds
    result = {"settings": settings_json, "environment": environment, "cells": cells, "seconds": seconds}
    markdown = f"""# Edit benchmark (shapes world)

`{shown_path(settings.model)}` · {settings.scenes} held-out cases per attribute × word type · strategy
{settings.strategy} · edit: {runner.edit_sampling.steps} steps, cfg {runner.edit_sampling.cfg:g}, schedule
{runner.edit_sampling.schedule}; regenerate: {runner.t2i_sampling.steps} steps, schedule
{runner.t2i_sampling.schedule} · torch {environment['torch']}, {environment['threads']} thread(s) ·
{seconds / 60:.1f} min of wall time over all cells (CPU shared with other jobs).

Success: the detector says the picture matches the target caption. Preserved: outside the true cells
(source and target tile of the object) dilated by one cell, the other objects and the background kind are
right and the mean pixel difference to the source is ≤ {PIXEL_TOL}. IoU: region against the true cells.
Seam: mean intensity step across the region's border, edit minus source. Intervals: percentile bootstrap,
{BOOTSTRAP_RESAMPLES} resamples. "source (VQ round trip)": the source picture against the source caption
(the detector's ceiling on these scenes).

## The default region (contrast) against the baselines

{compact_table(cells)}

## Every method

{markdown_tables(cells)}
"""
    settings.out.mkdir(parents=True, exist_ok=True)
    files = [str(write_json_atomic(settings.out / "results.json", _clean(result))),
             str(write_text_atomic(settings.out / "results.md", markdown))]
    return {**result, "markdown": markdown, "files": files}


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from tcts.cli_common import EXIT_STATUS, HelpFormatter

    p = argparse.ArgumentParser(prog="python -m tcts bench-edit", formatter_class=HelpFormatter, epilog=EXIT_STATUS,
                                description="Edit benchmark on the shapes world: one attribute of one object changed "
                                            "by one word (noun, adjective or phrase); success, preservation, region "
                                            "IoU and seam of the mask-free edit's region selections against "
                                            "regenerating and inpainting with the true mask. See lab/bench/edit.py "
                                            "and BENCHMARKS.md.")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="shapes model folder (default models/shapes-demo)")
    p.add_argument("--scenes", type=int, default=200, help="cases per attribute x word type (default 200)")
    p.add_argument("--attributes", nargs="+", default=list(ATTRIBUTES), help="default: colour shape size")
    p.add_argument("--word-types", nargs="+", default=list(WORD_TYPES), help="default: noun adjective phrase")
    p.add_argument("--selects", nargs="+", default=list(SELECTIONS),
                   help=f"region selections of the edit (default: {' '.join(SELECTIONS)})")
    p.add_argument("--strategy", default="random-revoke", help="sampler inside the region (default random-revoke)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's settings)")
    p.add_argument("--k", type=float, default=0.0, help="region threshold: mean + k*std (default 0)")
    p.add_argument("--dilate", type=int, default=0, help="grow every region by this many tokens (default 0)")
    p.add_argument("--batch-size", type=int, default=100, help="cases per batch (default 100)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default lab/results/edit)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m tcts bench-edit ...`` (also ``python -m lab.bench.edit ...``)."""
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1; got {args.threads}")
    torch.set_num_threads(args.threads)
    settings = EditBenchSettings(model=args.model, scenes=args.scenes, attributes=tuple(args.attributes),
                                 word_types=tuple(args.word_types), selects=tuple(args.selects),
                                 strategy=args.strategy, steps=args.steps, batch_size=args.batch_size, out=args.out,
                                 region=RegionOptions(k=args.k, dilate=args.dilate))
    result = run_edit_bench(settings)
    print(result["markdown"])
    print(f"\nwrote {', '.join(result['files'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

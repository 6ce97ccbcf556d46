"""The shapes-world sampler benchmark: ``python -m tcts bench``.

For each sampler (default purity, uniform, random-revoke, tcts, tcts-fas) and step count (8, 16, 25) it
generates one image (the model's native size, 64 px for the demo model) per held-out caption
(``sample_scene([99, i], "heldout")``, the captions of ``lab.shapes.evaluate.eval_captions``) and sampling
seed (batched, each caption encoded once; :mod:`lab.bench.generation`), then measures

* **alignment** with the detector (``lab.shapes.detector``): object recall, shape / size / relation /
  background accuracy, no-extra-object rate, whole-caption accuracy;
* **quality**: Fréchet distance (Heusel et al. 2017) and k-NN precision / recall (Kynkäänniemi et al. 2019,
  k = 3) against the real renders of the same captions, in the feature space of a small CNN trained on real
  renders (``lab.shapes.features``; ``lab/scripts/train_features.py``);
* **over-simplification**: background high-frequency energy, generated / real, per background kind
  (``lab.shapes.detail``);
* **time** per image (sampling + VQ decoding, wall clock);
* **paired bootstrap** 95 % intervals (pairs = caption x seed, 1000 resamples, fixed seed) of differences
  in whole-caption accuracy between samplers at each step count.

Every metric is measured at 64 px (larger images are area-averaged; real renders go through the same
path). Reference rows: real renders of *other* held-out scenes (as many as the generated images; the real-vs-real
noise floor of every metric) and the real renders through the VQ (encode + decode; the tokenizer's ceiling).
Writes ``results.md``, ``results.json`` and ``alignment_vs_fd.png`` to ``--out`` (atomically) and caches
each scored sampler x steps x seed unit under ``--out/units`` so an interrupted run resumes.
"""
from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tcts.checkpoints import CheckpointError
from tcts.sampling.registry import RULES, SAMPLERS, SELECTOR_SAMPLERS, RuleOptions, make_rule
from tcts.sampling.rules import Rule
from tcts.settings import Sampling
from ..shapes.detail import hf_ratios, mean_ratio
from ..shapes.detector import aggregate
from ..shapes.evaluate import EVAL_SEED
from ..shapes.world import render_batch, sample_scene
from .bootstrap import DEFAULT_COMPARISONS, paired_bootstrap
from .generation import area_downsample
from .frechet import frechet_distance
from .manifold import precision_recall
from .units import Unit, folder_fingerprint, load_unit, merge, save_unit, score_images, unit_key

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "shapes-demo"
DEFAULT_FEATURES = REPO / "lab" / "models" / "shapes-features"
DEFAULT_OUT = REPO / "lab" / "results" / "shapes"
DEFAULT_SAMPLERS = ("purity", "uniform", "random-revoke", "tcts", "tcts-fas", "halton", "remdm", "fas-remdm",
                    "entropy-bounded", "noise-regularized")
DEFAULT_STEPS = (8, 16, 25)
QUICK = {"captions": 16, "seeds": 1, "steps": (8,)}
METRIC_SIZE = 64                  # every metric is measured on 64 px images (larger ones are area-averaged)
FLOOR_SEED = EVAL_SEED + 1        # scenes of the real-vs-real reference (disjoint from the captions' scenes)
PR_K = 3
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CACHE_VERSION = 3
#: samplers whose number of model passes adapts to the image: at step count S they run under a schedule of
#: ADAPTIVE_CAP x S steps with a budget tuned so that their mean number of passes is S (:meth:`Runner.budget`)
ADAPTIVE_SAMPLERS = ("entropy-bounded",)
ADAPTIVE_CAP = 2
CALIBRATION_SEED = EVAL_SEED + 2  # scenes the budgets are tuned on (disjoint from the scored and floor scenes)
CALIBRATION_CAPTIONS = 64
CALIBRATION_ROUNDS = 8
PLOT_NAME = "alignment_vs_fd.png"


@dataclass
class BenchSettings:
    model: Path = DEFAULT_MODEL
    selector: Path | None = None               # None: the demo selector for the demo model, else <model>/selector
    features: Path = DEFAULT_FEATURES
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    steps: tuple[int, ...] = DEFAULT_STEPS
    captions: int = 1000
    seeds: int = 2
    cfg: float = 2.0
    batch_size: int = 100
    split: str = "heldout"
    out: Path = DEFAULT_OUT
    device: str = "cpu"
    size: int | None = None                    # generation size in px; None: the model's native size
    skip_missing_selector: bool = False
    resume: bool = True
    options: RuleOptions = field(default_factory=RuleOptions)   # the rules' options (without a selector model)

    @property
    def selector_path(self) -> Path:
        if self.selector is not None:
            return self.selector
        from tcts.cli_common import default_selector_path

        same = self.model.resolve() == DEFAULT_MODEL.resolve()
        return default_selector_path() if same else self.model / "selector"

    def validate(self) -> None:
        unknown = [s for s in self.samplers if s not in RULES]
        if unknown:
            raise ValueError(f"unknown sampler(s) {', '.join(map(repr, unknown))}; expected some of "
                             f"{', '.join(SAMPLERS)}")
        if not self.samplers or len(set(self.samplers)) != len(self.samplers):
            raise ValueError(f"--samplers must name each sampler once; got {list(self.samplers)}")
        if not self.steps or any(not isinstance(s, int) or s < 1 for s in self.steps) or \
                len(set(self.steps)) != len(self.steps):
            raise ValueError(f"--steps must be distinct integers >= 1; got {list(self.steps)}")
        for name in ("captions", "seeds", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1; got {value!r}")
        if not math.isfinite(self.cfg) or self.cfg < 0:
            raise ValueError(f"--cfg must be a finite number >= 0; got {self.cfg!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < METRIC_SIZE
                                      or self.size % METRIC_SIZE):
            raise ValueError(f"--size must be a multiple of {METRIC_SIZE} px (metrics are measured at "
                             f"{METRIC_SIZE} px); got {self.size!r}")
        if self.split not in ("heldout", "train", "any"):
            raise ValueError(f"--split must be heldout, train or any; got {self.split!r}")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_samplers(settings: BenchSettings, log: Callable[[str], None]) -> tuple[str, ...]:
    """The samplers to run; fails (or, with ``skip_missing_selector``, drops them) when tcts / tcts-fas lack a
    selector folder."""
    from tcts.selector.model import is_selector_folder

    needing = [s for s in settings.samplers if s in SELECTOR_SAMPLERS]
    path = settings.selector_path
    if not needing or is_selector_folder(path):
        return settings.samplers
    why = "does not exist" if not path.exists() else "has no config.json + model.safetensors"
    if settings.skip_missing_selector:
        log(f"warning: selector {path} {why}; skipping {', '.join(needing)} (--skip-missing-selector)")
        kept = tuple(s for s in settings.samplers if s not in needing)
        if not kept:
            raise ValueError("no sampler left to run after skipping the ones that need a selector")
        return kept
    raise CheckpointError(
        f"sampler(s) {', '.join(needing)} need a trained TCTS selector, but {path} {why}. Pass --selector PATH "
        f"(a folder from `python -m tcts train-selector`), leave {', '.join(needing)} out of --samplers, or add "
        "--skip-missing-selector to run the other samplers only")


def _safe_fd(a: np.ndarray, b: np.ndarray) -> float | None:
    return frechet_distance(a, b) if len(a) >= 2 and len(b) >= 2 else None


def _safe_pr(real: np.ndarray, gen: np.ndarray) -> tuple[float | None, float | None]:
    return precision_recall(real, gen, PR_K) if len(real) > PR_K and len(gen) > PR_K else (None, None)


def quality_row(unit: Unit, kinds: Sequence[str], real: Unit, real_kinds: Sequence[str]) -> dict[str, Any]:
    """Alignment, FD, precision / recall and background detail of a scored set against the real set."""
    precision, recall = _safe_pr(real.features, unit.features)
    by_kind = hf_ratios(unit.hf, kinds, real.hf, real_kinds)
    return {**aggregate(unit.checks), "fd": _safe_fd(unit.features, real.features), "precision": precision,
            "recall": recall, "hf_ratio": mean_ratio(by_kind), "hf_by_kind": by_kind}


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN / inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class Runner:
    """Loads everything once, then scores units (sampler x steps x seed), cached under ``out/units``."""

    def __init__(self, settings: BenchSettings, log: Callable[[str], None] = _log) -> None:
        from tcts.pipeline import Pipeline
        from ..shapes.features import load_feature_net

        settings.validate()
        self.settings, self.log = settings, log
        if not settings.model.exists():
            raise CheckpointError(f"model folder {settings.model} does not exist; pass --model PATH (a diffusers-"
                                  "layout shapes model, e.g. from lab/scripts/export.py)")
        self.feature_net = load_feature_net(settings.features)           # fail fast, before loading the model
        self.samplers = resolve_samplers(settings, log)
        self.pipe = Pipeline.from_folder(settings.model)
        for module in (self.pipe.transformer, self.pipe.vq, self.pipe.text_encoder.model):
            module.to(settings.device)
        self.size = settings.size or self.pipe.default_size
        if self.size % METRIC_SIZE:
            raise ValueError(f"the model's native size is {self.size} px, not a multiple of {METRIC_SIZE}; pass --size")
        self.selector = None
        if any(s in SELECTOR_SAMPLERS for s in self.samplers):
            from tcts.selector.model import load_selector

            self.selector = load_selector(settings.selector_path, self.pipe.transformer, device=settings.device)
        self.scenes = [sample_scene([EVAL_SEED, i], settings.split) for i in range(settings.captions)]
        self.captions = [s.caption for s in self.scenes]
        self.kinds = [s.background.kind for s in self.scenes]
        self.fingerprints = {"model": folder_fingerprint(settings.model),
                             "features": folder_fingerprint(settings.features),
                             "selector": folder_fingerprint(settings.selector_path) if self.selector else []}

        self.budgets: dict[int, float] = {}      # step count -> tuned entropy budget (adaptive samplers)

    def options(self, sampler: str, steps: int) -> RuleOptions:
        """The rule options of ``sampler`` at ``steps``: the settings', with an adaptive sampler's tuned budget."""
        options = replace(self.settings.options, selector_model=self.selector)
        if sampler in ADAPTIVE_SAMPLERS:
            options = replace(options, entropy_bounded=replace(options.entropy_bounded, gamma=self.budget(steps)))
        return options

    def rule(self, sampler: str, steps: int) -> Rule:
        return make_rule(sampler, self.options(sampler, steps))

    @staticmethod
    def schedule_steps(sampler: str, steps: int) -> int:
        return ADAPTIVE_CAP * steps if sampler in ADAPTIVE_SAMPLERS else steps

    def unit_spec(self, sampler: str, steps: int, seed: int) -> dict[str, Any]:
        s = self.settings
        options = {}
        chosen = self.options(sampler, steps)
        for family in RULES[sampler].families:
            options.update(asdict(getattr(chosen, family)))
        return {"version": CACHE_VERSION, "model": self.fingerprints["model"],
                "features": self.fingerprints["features"],
                "selector": self.fingerprints["selector"] if sampler in SELECTOR_SAMPLERS else None,
                "split": s.split, "captions": s.captions, "cfg": s.cfg, "sampler": sampler, "options": options,
                "steps": steps, "schedule_steps": self.schedule_steps(sampler, steps), "seed": seed,
                "size": self.size, "device": s.device}

    def budget(self, passes: int) -> float:
        """The entropy budget γ under which entropy-bounded unmasking needs ``passes`` model passes on average,
        under a schedule of ``ADAPTIVE_CAP x passes`` steps: bisection on log γ over
        :data:`CALIBRATION_CAPTIONS` scenes that are never scored (the mean pass count falls as γ grows).
        Cached in memory and under ``out/units``."""
        import json

        from .generation import encode_captions, generate_images

        if passes in self.budgets:
            return self.budgets[passes]
        s = self.settings
        spec = {"version": CACHE_VERSION, "model": self.fingerprints["model"], "cfg": s.cfg, "size": self.size,
                "passes": passes, "cap": ADAPTIVE_CAP, "proxy": s.options.entropy_bounded.proxy,
                "captions": CALIBRATION_CAPTIONS, "split": s.split, "device": s.device}
        path = s.out / "units" / f"budget-entropy-bounded-{passes}passes.json"
        key = unit_key(spec)
        if s.resume and path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                self.budgets[passes] = float(saved["gamma"])
                return self.budgets[passes]
        scenes = [sample_scene([CALIBRATION_SEED, i], s.split) for i in range(CALIBRATION_CAPTIONS)]
        encoded = encode_captions(self.pipe, [c.caption for c in scenes], negative=s.cfg != 1.0)
        sampling = Sampling(steps=ADAPTIVE_CAP * passes, cfg=s.cfg)
        base = replace(s.options, selector_model=None)

        def mean_passes(gamma: float) -> float:
            rule = make_rule("entropy-bounded", replace(base, entropy_bounded=replace(base.entropy_bounded,
                                                                                      gamma=gamma)))
            return float(generate_images(self.pipe, encoded, rule, sampling, 0, batch_size=s.batch_size,
                                         size=self.size).passes.mean())

        low, high = math.log(1e-3), math.log(1e3)      # γ = 1e-3 keeps the schedule's pace; 1e3 a few passes
        best = (math.inf, 1.0, float("nan"))
        for _ in range(CALIBRATION_ROUNDS):
            gamma = math.exp((low + high) / 2)
            got = mean_passes(gamma)
            best = min(best, (abs(got - passes), gamma, got))
            if got > passes:
                low = math.log(gamma)
            else:
                high = math.log(gamma)
        _, gamma, got = best
        self.log(f"entropy-bounded: gamma {gamma:.4g} nats gives {got:.2f} passes on average "
                 f"(target {passes}, schedule {ADAPTIVE_CAP * passes} steps, {CALIBRATION_CAPTIONS} calibration scenes)")
        from .report import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, _clean({"key": key, "gamma": gamma, "mean_passes": got, "spec": spec}))
        self.budgets[passes] = gamma
        return gamma

    def unit(self, encoded, sampler: str, steps: int, seed: int) -> tuple[Unit, bool]:
        """(scored unit, came from the cache)."""
        from .generation import generate_images

        s = self.settings
        key = unit_key(self.unit_spec(sampler, steps, seed))
        path = s.out / "units" / f"{sampler}-{steps}steps-seed{seed}.npz"
        cached = load_unit(path, key) if s.resume else None
        if cached is not None:
            return cached, True
        gen = generate_images(self.pipe, encoded, self.rule(sampler, steps),
                              Sampling(steps=self.schedule_steps(sampler, steps), cfg=s.cfg), seed,
                              batch_size=s.batch_size, size=self.size)
        unit = score_images(area_downsample(gen.images, METRIC_SIZE), self.captions, self.feature_net,
                            sample_seconds=gen.sample_seconds, decode_seconds=gen.decode_seconds,
                            cpu_seconds=gen.cpu_seconds, passes=gen.passes)
        save_unit(unit, path, key)
        return unit, False

    def real_images(self, scenes: Sequence) -> np.ndarray:
        """Renders at the generation size, area-averaged to the metric size like generated images."""
        return area_downsample(render_batch(scenes, self.size), METRIC_SIZE)

    def references(self, real: Unit) -> list[dict[str, Any]]:
        """Real renders of other scenes (noise floor) and the real renders' VQ round trip (tokenizer ceiling)."""
        from tcts.pipeline import decode_tokens, encode_images

        s = self.settings
        n = s.captions * s.seeds
        others = [sample_scene([FLOOR_SEED, i], s.split) for i in range(n)]
        floor = score_images(self.real_images(others), [o.caption for o in others], self.feature_net)
        floor_row = quality_row(floor, [o.background.kind for o in others], real, self.kinds)
        recon = []
        for i in range(0, len(self.scenes), s.batch_size):
            batch = torch.from_numpy(render_batch(self.scenes[i:i + s.batch_size], self.size)).to(s.device)
            recon.append(decode_tokens(self.pipe.vq, encode_images(self.pipe.vq, batch)).float().cpu().numpy())
        vq = score_images(area_downsample(np.concatenate(recon), METRIC_SIZE), self.captions, self.feature_net)
        return [{"name": f"real renders, other scenes (n={n})", **floor_row},
                {"name": "real renders through the VQ", **quality_row(vq, self.kinds, real, self.kinds)}]


def run_bench(settings: BenchSettings, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Run the benchmark; returns the results dict (also written to ``settings.out``)."""
    started = time.perf_counter()
    runner = Runner(settings, log)
    settings.out.mkdir(parents=True, exist_ok=True)
    real = score_images(runner.real_images(runner.scenes), runner.captions, runner.feature_net)
    units = score_all(runner)
    rows, wholes = table_rows(runner, units, real)
    references = runner.references(real)
    differences = bootstrap_differences(wholes, settings.steps)
    return write_outputs(runner, rows, references, differences, time.perf_counter() - started)


def score_all(runner: Runner) -> dict[tuple[str, int, int], Unit]:
    """Every (sampler, steps, seed) unit, generated or from the cache, with a progress line each."""
    from .generation import encode_captions

    s = runner.settings
    encoded = encode_captions(runner.pipe, runner.captions, negative=s.cfg != 1.0)   # once for every unit
    plan = [(sampler, steps, seed) for sampler in runner.samplers for steps in s.steps for seed in range(s.seeds)]
    units: dict[tuple[str, int, int], Unit] = {}
    done_work = spent = 0.0
    remaining = sum(steps for _, steps, _ in plan) * s.captions
    for i, (sampler, steps, seed) in enumerate(plan):
        unit, cached = runner.unit(encoded, sampler, steps, seed)
        units[sampler, steps, seed] = unit
        seconds = unit.sample_seconds + unit.decode_seconds
        remaining -= steps * s.captions
        if not cached:
            done_work += steps * s.captions
            spent += seconds
        eta = f", ~{remaining * spent / done_work / 60:.1f} min left" if done_work and remaining else ""
        runner.log(f"[{i + 1}/{len(plan)}] {sampler} {steps} steps seed {seed}: {s.captions} images "
                   f"{'(cached) ' if cached else ''}{seconds:.1f} s ({seconds / s.captions:.4f} s/img wall, "
                   f"{unit.cpu_seconds / s.captions:.4f} CPU s/img){eta}")
    return units


def table_rows(runner: Runner, units: dict[tuple[str, int, int], Unit],
               real: Unit) -> tuple[list[dict[str, Any]], dict[tuple[str, int], np.ndarray]]:
    """(one row per sampler x steps over all seeds, per-item whole-caption flags for the bootstrap)."""
    s = runner.settings
    rows, wholes = [], {}
    kinds = runner.kinds * s.seeds
    for sampler in runner.samplers:
        for steps in s.steps:
            merged = merge([units[sampler, steps, seed] for seed in range(s.seeds)])
            n = len(merged.checks)
            wholes[sampler, steps] = merged.whole
            rows.append({"sampler": sampler, "steps": steps, "n_images": n,
                         "passes": None if merged.passes is None else float(merged.passes.mean()),
                         "schedule_steps": runner.schedule_steps(sampler, steps),
                         **({"gamma": runner.budgets[steps]} if sampler in ADAPTIVE_SAMPLERS else {}),
                         **quality_row(merged, kinds, real, runner.kinds),
                         "seconds_per_image": (merged.sample_seconds + merged.decode_seconds) / n,
                         "cpu_seconds_per_image": merged.cpu_seconds / n,
                         "sample_seconds_per_image": merged.sample_seconds / n,
                         "decode_seconds_per_image": merged.decode_seconds / n})
    return rows, wholes


def bootstrap_differences(wholes: dict[tuple[str, int], np.ndarray], steps: Sequence[int]) -> list[dict[str, Any]]:
    """Paired-bootstrap differences of whole-caption accuracy for :data:`DEFAULT_COMPARISONS` that ran."""
    out = []
    for n_steps in steps:
        for a, b in DEFAULT_COMPARISONS:
            if (a, n_steps) in wholes and (b, n_steps) in wholes:
                mean, low, high = paired_bootstrap(wholes[a, n_steps], wholes[b, n_steps], BOOTSTRAP_RESAMPLES,
                                                   BOOTSTRAP_SEED)
                out.append({"a": a, "b": b, "steps": n_steps, "mean": mean, "low": low, "high": high,
                            "n": int(len(wholes[a, n_steps]))})
    return out


def write_outputs(runner: Runner, rows: list[dict], references: list[dict], differences: list[dict],
                  seconds: float) -> dict[str, Any]:
    """Write the plot, ``results.json`` and ``results.md`` (atomically); return the results + markdown."""
    from .plot import tradeoff_plot
    from .report import bootstrap_table, hf_table, main_table, write_json_atomic, write_text_atomic

    s = runner.settings
    series = {sampler: [(r["fd"], r["whole"], r["steps"]) for r in rows if r["sampler"] == sampler]
              for sampler in runner.samplers}
    floor = references[0]
    plot = tradeoff_plot(series, s.out / PLOT_NAME, references=[("real, other scenes", floor["fd"], floor["whole"])],
                         title=f"{s.model.name}: {s.captions} {s.split} captions x {s.seeds} seeds, cfg {s.cfg:g}")
    environment = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": s.device,
                   "cpu_count": os.cpu_count(), "platform": platform.platform()}
    budgets = ", ".join(f"{steps}: γ = {gamma:.3g} nats" for steps, gamma in sorted(runner.budgets.items()))
    tables = {"main": main_table(rows, references), "hf": hf_table(rows, references),
              "bootstrap": bootstrap_table(differences),
              "budgets": f"Entropy-bounded budgets per step count (schedule of {ADAPTIVE_CAP}× the step count, tuned "
                         f"on {CALIBRATION_CAPTIONS} other scenes to that many passes on average): {budgets}."
                         if budgets else ""}
    markdown = render_markdown(s, runner.samplers, tables, environment, runner.size)
    settings_json = {**asdict(s), "samplers_run": list(runner.samplers), "selector": s.selector_path,
                     "entropy_bounded_budgets": {str(k): v for k, v in runner.budgets.items()},
                     "size": runner.size, "metric_size": METRIC_SIZE}
    settings_json = {k: shown_path(v) if isinstance(v, Path) else v for k, v in settings_json.items()}
    result = {"settings": settings_json, "environment": environment, "rows": rows, "references": references,
              "bootstrap": differences, "seconds": seconds}
    files = [str(plot), str(write_json_atomic(s.out / "results.json", _clean(result))),
             str(write_text_atomic(s.out / "results.md", markdown))]
    return {**result, "markdown": markdown, "files": files}


def shown_path(path: Path) -> str:
    """A path as results should show it: relative to the working directory when inside it (results are
    committed; an absolute path names one machine)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def render_markdown(s: BenchSettings, samplers: Sequence[str], tables: dict[str, str], env: dict, size: int) -> str:
    return f"""# Shapes-world sampler benchmark

`{shown_path(s.model)}` · {s.captions} {s.split} captions × {s.seeds} sampling seed(s) · cfg {s.cfg:g} ·
{size} px decoded VQ images (metrics at {METRIC_SIZE} px) · samplers {', '.join(samplers)} ·
steps {', '.join(map(str, s.steps))} · torch {env['torch']}, {env['threads']} thread(s), device {env['device']}.

## Alignment, quality, background detail, time

{tables['main']}

passes: model passes per image, on average (the step count, except where a rule finishes early).
{tables['budgets']}

Alignment: detector metrics (a missing object counts as wrong; *whole* = every object, relation and the
background right and no extra object). FD: Fréchet distance (Heusel et al. 2017) to the real renders of the
same captions in the features of `{s.features.name}`; precision / recall: k-NN manifolds, k = {PR_K}
(Kynkäänniemi et al. 2019). bg HF ratio: background high-frequency energy generated / real, geometric mean
over the kinds where real renders have any (striped, checkered, noisy). s/img: wall seconds per image
(sampling + VQ decoding); CPU s/img: this process's CPU seconds for the same work (with one thread, what
the wall time would be on an idle core; robust to other jobs on the machine). The italic rows are
references: real renders of other scenes (the noise floor of every metric at this sample size) and the real
renders through the VQ (the tokenizer's ceiling).

## Background high-frequency energy, generated / real, per background kind

{tables['hf']}

1 = as much background detail as real renders, < 1 = over-simplified; flat and gradient backgrounds have no
real high-frequency energy (— : ratio undefined; the energies are in results.json).

## Paired bootstrap: differences in whole-caption accuracy

{tables['bootstrap']}

Pairs = (caption, seed) generated by both samplers; {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED},
percentile 95 % interval. An interval that excludes 0 is a difference beyond sampling noise of the captions.

Plot: `{PLOT_NAME}` (whole-caption accuracy against FD, one line per sampler over its step counts).
"""

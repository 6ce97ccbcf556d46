"""``python -m tcts bench``: the shapes sampler benchmark and its metrics, on the tiny random aMUSEd folder."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab.bench.bootstrap import paired_bootstrap
from lab.bench.frechet import frechet_distance
from lab.bench.manifold import precision_recall
from tcts.cli import main
from lab.shapes.detail import background_hf_energy, hf_ratios
from lab.shapes.features import extract_features, load_feature_net, save_feature_net
from lab.shapes.world import render_batch, sample_scene

from .helpers import AMUSED

ROOT = Path(__file__).resolve().parent.parent


def real_scenes(n, seed=5):
    return [sample_scene([seed, i], "heldout") for i in range(n)]


def train_features_script():
    spec = importlib.util.spec_from_file_location("train_features", ROOT / "lab" / "scripts" / "train_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def feature_net():
    """A briefly trained feature net (a few seconds), normalised on real renders."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # tiny convolutions: extra threads only wait on each other on a busy machine
    try:
        net = train_features_script().train(steps=80, batch=16, log_every=0).train(False)
        net.calibrate(torch.from_numpy(render_batch(real_scenes(64, seed=6))))
    finally:
        torch.set_num_threads(threads)
    return net


@pytest.fixture(scope="module")
def bench_assets(tmp_path_factory, feature_net):
    """A feature-net folder and a random TCTS selector for the tiny aMUSEd."""
    from tcts.selector.model import SelectorConfig, TokenSelector, save_selector

    root = tmp_path_factory.mktemp("bench-assets")
    save_feature_net(feature_net, root / "features")
    torch.manual_seed(0)
    selector = TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=16, num_layers=1,
                                            num_heads=2, max_grid=(8, 8), time_embed_dim=16))
    save_selector(selector, root / "selector")
    return root


def bench(tmp_path, assets, *extra):
    args = ["bench", "--model", AMUSED, "--selector", assets / "selector", "--features", assets / "features",
            "--captions", 4, "--seeds", 1, "--steps", 2, "--batch-size", 3, "--out", tmp_path / "out", *extra]
    return main([str(a) for a in args])


# --- metrics --------------------------------------------------------------------------------------

def test_bootstrap_of_identical_samplers_is_centred_on_zero():
    rng = np.random.default_rng(1)
    a = rng.random(500) < 0.4
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    b = rng.permutation(a)                         # same accuracy, different items
    mean, low, high = paired_bootstrap(a, b)
    assert mean == 0 and low < 0 < high and abs(low + high) < 0.02
    assert paired_bootstrap(a, b) == (mean, low, high)   # fixed-seed resampling: reproducible
    better = a | (rng.random(500) < 0.3)
    assert paired_bootstrap(better, a)[1] > 0      # a real improvement excludes 0


def test_frechet_distance_matches_the_gaussian_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (20000, 1))
    y = rng.normal(-1.0, 0.5, (20000, 1))
    expected = (1 - -1) ** 2 + (2 - 0.5) ** 2      # (mu1 - mu2)^2 + (s1 - s2)^2 in one dimension
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.03)


def test_frechet_distance_of_real_features_is_zero_against_themselves_and_large_against_noise(feature_net):
    images = render_batch(real_scenes(200))
    real = extract_features(feature_net, images)
    other = extract_features(feature_net, render_batch(real_scenes(200, seed=7)))
    rng = np.random.default_rng(0)
    shuffled = images.reshape(len(images), -1, 3)[:, rng.permutation(64 * 64)].reshape(images.shape)
    noise = extract_features(feature_net, shuffled)
    assert frechet_distance(real, real) < 1e-6
    floor = frechet_distance(real, other)
    assert frechet_distance(real, noise) > 5 * floor


def test_precision_recall_of_a_set_against_itself_is_one_and_against_far_points_zero():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 50.0) == (0.0, 0.0)
    collapsed = real[:5].repeat(60, axis=0) + rng.normal(scale=1e-3, size=(300, 8))   # mode collapse
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.2


def test_background_detail_ratio_is_one_for_real_backgrounds_and_below_one_when_blurred():
    scenes = real_scenes(120)
    images = render_batch(scenes)
    kinds = [s.background.kind for s in scenes]
    energy = [background_hf_energy(im) for im in images]
    same = hf_ratios(energy, kinds, energy, kinds)
    for kind in ("striped", "checkered", "noisy"):
        assert same[kind]["ratio"] == pytest.approx(1.0)
    assert same["flat"]["ratio"] is None          # real flat backgrounds have no HF energy
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, dy:dy + 64, dx:dx + 64] for dy in range(3) for dx in range(3)) / 9
    smooth = hf_ratios([background_hf_energy(im) for im in blurred], kinds, energy, kinds)
    for kind in ("striped", "checkered", "noisy"):
        assert smooth[kind]["ratio"] < 0.7


# --- the command -------------------------------------------------------------------------------------

def test_bench_end_to_end_writes_tables_json_and_plot(tmp_path, bench_assets, capsys):
    samplers = ["purity", "uniform", "tcts", "tcts-fas"]
    assert bench(tmp_path, bench_assets, "--samplers", *samplers) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    md = (out / "results.md").read_text()
    assert md.strip() in printed or printed.strip() in md
    for sampler in samplers:
        assert sum(line.startswith(f"| {sampler} | 2 |") for line in md.splitlines()) == 2   # main + HF table
    assert "| 2 | uniform − purity |" in md and "| 2 | tcts-fas − tcts |" in md
    assert "| 2 | tcts-fas − purity |" in md                  # against the best persistent baseline
    assert "random-revoke − uniform" not in md                # only pairs of samplers that ran
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [(s, 2) for s in samplers]
    for r in rows:
        assert r["n_images"] == 4 and r["seconds_per_image"] > 0 and r["fd"] >= 0
        assert 0 <= r["whole"] <= 1 and set(r["hf_by_kind"]) == {"flat", "gradient", "striped", "checkered", "noisy"}
    assert {d["a"] for d in data["bootstrap"]} == {"uniform", "tcts", "tcts-fas"}
    floor = data["references"][0]
    assert floor["whole"] == 1.0                   # the detector reads real renders perfectly
    with Image.open(out / "alignment_vs_fd.png") as im:
        assert im.size[0] > 400
    assert not list(out.glob(".*tmp*"))            # atomic writes leave no temporary files

    # deterministic: recomputing every unit gives the same numbers; a resumed run reuses the cache
    def metrics(d):
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in d["rows"]]
    assert bench(tmp_path, bench_assets, "--samplers", *samplers, "--no-resume") == 0
    again = json.loads((out / "results.json").read_text())
    assert metrics(again) == metrics(data)
    assert bench(tmp_path, bench_assets, "--samplers", *samplers) == 0
    assert "(cached)" in capsys.readouterr().err


@pytest.mark.slow
def test_entropy_bounded_runs_at_a_budget_tuned_to_the_step_count_and_reports_its_passes(tmp_path, bench_assets):
    """Entropy-bounded unmasking adapts its number of model passes, so the benchmark tunes its entropy budget on
    scenes it never scores until the mean pass count equals the step count (under a schedule of twice as many
    steps), and reports the passes each sampler needed; fixed-count samplers need exactly their steps."""
    from lab.bench import shapes

    assert bench(tmp_path, bench_assets, "--samplers", "purity", "entropy-bounded", "--steps", 4) == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    purity, eb = data["rows"]
    assert purity["passes"] == 4.0 and purity["schedule_steps"] == 4
    assert eb["schedule_steps"] == shapes.ADAPTIVE_CAP * 4 and eb["gamma"] > 0
    assert 1 <= eb["passes"] <= shapes.ADAPTIVE_CAP * 4
    saved = json.loads((tmp_path / "out" / "units" / "budget-entropy-bounded-4passes.json").read_text())
    assert saved["gamma"] == eb["gamma"] and abs(saved["mean_passes"] - 4) <= 1
    assert data["settings"]["entropy_bounded_budgets"] == {"4": eb["gamma"]}
    assert "| 4 | entropy-bounded − purity |" in (tmp_path / "out" / "results.md").read_text()


def test_bench_rejects_an_unknown_sampler_and_bad_counts(tmp_path, bench_assets, capsys):
    assert bench(tmp_path, bench_assets, "--samplers", "purity", "greedy") == 2
    err = capsys.readouterr().err
    assert "unknown sampler(s) 'greedy'" in err and "random-revoke" in err
    assert bench(tmp_path, bench_assets, "--samplers", "purity", "--captions", 0) == 2
    assert "--captions must be an integer >= 1" in capsys.readouterr().err


def test_bench_without_a_selector_fails_clearly_unless_told_to_skip(tmp_path, bench_assets, capsys):
    args = ["bench", "--model", AMUSED, "--selector", tmp_path / "nope", "--features", bench_assets / "features",
            "--captions", 4, "--seeds", 1, "--steps", 2, "--out", tmp_path / "out"]
    assert main([str(a) for a in args + ["--samplers", "uniform", "tcts"]]) == 2
    err = capsys.readouterr().err
    assert "tcts need a trained TCTS selector" in err and "--skip-missing-selector" in err
    assert main([str(a) for a in args + ["--samplers", "uniform", "tcts", "--skip-missing-selector"]]) == 0
    assert "skipping tcts" in capsys.readouterr().err
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["sampler"] for r in rows] == ["uniform"]


def test_bench_without_the_feature_network_names_the_training_command(tmp_path, bench_assets, capsys):
    assert bench(tmp_path, bench_assets, "--samplers", "uniform", "--features", tmp_path / "missing") == 2
    err = capsys.readouterr().err
    assert "feature network" in err and "train_features.py" in err


def test_train_features_script_writes_a_small_loadable_net(tmp_path):
    out = tmp_path / "features"
    assert train_features_script().main(["--out", str(out), "--steps", "3", "--batch", "8", "--validation", "16",
                        "--calibration", "16"]) == 0
    assert sum(p.stat().st_size for p in out.iterdir()) < 1_000_000
    net = load_feature_net(out)
    feats = extract_features(net, render_batch(real_scenes(16)))
    assert feats.shape == (16, 64) and np.isfinite(feats).all()


def test_quick_defaults_and_explicit_flags():
    from lab.bench.shapes_cli import settings_from_args
    from lab.bench.shapes_cli import build_parser

    quick = settings_from_args(build_parser().parse_args(["--quick"]))
    assert (quick.captions, quick.seeds, quick.steps) == (16, 1, (8,))
    full = settings_from_args(build_parser().parse_args(["--quick", "--captions", "40"]))
    assert full.captions == 40 and full.samplers == ("purity", "uniform", "random-revoke", "tcts", "tcts-fas", "halton",
                                                     "remdm", "fas-remdm", "entropy-bounded", "noise-regularized")
    default = settings_from_args(build_parser().parse_args([]))
    assert (default.captions, default.seeds, default.steps, default.cfg) == (1000, 2, (8, 16, 25), 2.0)


def test_large_images_are_area_averaged_to_the_metric_size():
    from lab.bench.generation import area_downsample

    images = np.random.default_rng(0).random((2, 128, 128, 3)).astype(np.float32)
    small = area_downsample(images, 64)
    assert small.shape == (2, 64, 64, 3)
    assert small[1, 3, 5, 2] == pytest.approx(images[1, 6:8, 10:12, 2].mean())
    assert area_downsample(small, 64) is small
    with pytest.raises(ValueError, match="integer factor"):
        area_downsample(images[:, :96, :96], 64)


def test_a_reference_far_beyond_the_samplers_is_listed_with_its_values_not_drawn(tmp_path):
    from lab.bench.plot import split_references, tradeoff_plot

    samplers = [(0.2, 0.9), (0.4, 0.95)]
    shown, off = split_references([("near", 0.5, 1.0), ("far", 2.4, 1.0)], samplers)
    assert [r[0] for r in shown] == ["near"] and [r[0] for r in off] == ["far"]
    path = tradeoff_plot({"purity": [(0.2, 0.9, 8), (0.4, 0.95, 16)]}, tmp_path / "plot.png",
                         references=[("far", 2.4, 1.0)])
    assert Image.open(path).size == (960, 640)

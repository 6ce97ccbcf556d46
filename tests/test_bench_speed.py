"""``python -m tcts bench-speed`` plumbing on the tiny fixture (the real runs use full-size random weights
and take minutes): each implementation runs in a child process and reports times and peak memory, and the
table puts ours, the sequential CLI mode and diffusers side by side with their ratios."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from lab.bench import speed

from .helpers import AMUSED

ROOT = AMUSED.parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["ours", "ours-sequential", "diffusers"])
def test_each_implementation_reports_times_and_peak_memory_from_a_child_process(impl):
    if impl == "diffusers":
        pytest.importorskip("diffusers")
    args = argparse.Namespace(steps=3, cfg=4.0, device="cpu", dtype="float32", compile=False, draw_on_device=False)
    result = speed.measure(impl, AMUSED, 64, args)
    for key in ("load_s", "image_s", "total_s", "step_s", "peak_rss_mb"):
        assert result[key] > 0, (key, result)
    assert result["total_s"] == pytest.approx(result["load_s"] + result["image_s"])


def test_table_shows_both_of_our_modes_against_the_reference_with_ratios():
    runs = {"diffusers": {"image_s": 10.0, "step_s": 1.0, "load_s": 2.0, "total_s": 12.0, "peak_rss_mb": 1000.0},
            "ours": {"image_s": 5.0, "step_s": 0.5, "load_s": 1.0, "total_s": 6.0, "peak_rss_mb": 900.0},
            "ours-sequential": {"image_s": 6.0, "step_s": 0.5, "load_s": 0.1, "total_s": 6.1, "peak_rss_mb": 600.0}}
    args = argparse.Namespace(device="cpu", dtype="float32", steps=12, cfg=10.0, repeats=2, compile=False,
                              draw_on_device=False)
    text = speed.table({"amused-256": runs}, args)
    assert "| amused-256 | image_s | 5.00 | 6.00 | 10.00 | 0.50 | 0.60 | ≤ 0.67 |" in text
    assert "| amused-256 | peak_rss_mb | 900.00 | 600.00 | 1000.00 | 0.90 | 0.60 | ≤ 0.8 |" in text


def test_unknown_implementation_is_refused():
    proc = subprocess.run([sys.executable, "-m", "tcts", "bench-speed", "--impls", "tensorrt"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


@pytest.mark.slow
def test_compiled_transformer_path_runs_and_counts_compilation_as_load():
    """``--compile`` (meant for GPUs) on the CPU fixture: torch.compile + warm-up happen before the timing."""
    import argparse

    args = argparse.Namespace(folder=str(AMUSED), size=64, steps=3, cfg=4.0, prompt="a cat", device="cpu",
                              dtype="float32", compile=True, draw_on_device=False)
    result = speed.run_ours(args)
    assert result["load_s"] > result["image_s"] > 0


def test_gpu_runs_warm_up_both_pipelines_but_cpu_runs_do_not():
    assert speed.warms_up("cuda") and speed.warms_up("cuda:1")
    assert not speed.warms_up("cpu")

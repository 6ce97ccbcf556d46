"""``python -m lab.bench.perf`` (where a step's time goes) on the tiny fixture: the script a GPU run uses,
tried on the CPU at the sizes ``--preset quick`` picks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.bench import perf

from .helpers import AMUSED

ROOT = AMUSED.parents[2]


@pytest.mark.slow
def test_quick_run_checks_identity_and_parity_then_measures_every_mode_memory_floor_and_compile(tmp_path):
    pytest.importorskip("diffusers")
    proc = subprocess.run([sys.executable, "-m", "lab.bench.perf", "--preset", "quick", "--device", "cpu",
                           "--steps", "2", "--budget", "3600", "--out", str(tmp_path),
                           "identity", "parity", "steps", "memory", "floor", "compile"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "perf.json").read_text())
    assert results["identity"][0]["holds"]
    assert results["parity"][0]["ours_equals_diffusers"] and results["parity"][0]["ours-in-turn_equals_diffusers"]
    single = {(r["model"], r["size"], r["mode"]) for r in results["steps"] if r["batch"] == 1}
    assert single == {(s.model, s.size, m) for s in perf.QUICK_STEPS if s.batch == 1 for m in perf.MODES
                      if m != "diffusers" or perf.has_reference(s.model)}
    assert all(r["step_s"] > 0 for r in results["steps"])
    memory = {(r["model"], r["mode"]) for r in results["memory"]}
    assert memory == {(s.model, m) for s in perf.QUICK_STEPS if s.batch == 1 for m in perf.MEMORY_MODES
                      if m != "diffusers" or perf.has_reference(s.model)}
    assert all(r["load_and_image_s"] > 0 for r in results["memory"])
    assert {r["mode"] for r in results["floor"]} == {"ours", "diffusers"}
    assert all(r["over_products"] > 0 for r in results["floor"])
    assert [r.get("tokens_equal_uncompiled", True) for r in results["compile"]] == [True, True]
    assert "## The floor" in next(tmp_path.glob("*.md")).read_text()   # the markdown report


def test_a_task_that_would_start_past_the_budget_is_skipped_and_said_so(tmp_path):
    code = perf.main(["--preset", "quick", "--device", "cpu", "--budget", "0", "--out", str(tmp_path), "steps"])
    assert code == 0
    results = json.loads((tmp_path / "perf.json").read_text())
    assert results["skipped"] and not results.get("steps")

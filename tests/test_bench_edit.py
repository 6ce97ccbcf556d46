"""The edit benchmark (``python -m tcts bench-edit``, lab/bench/edit.py) on tiny sizes: its cases change one
attribute of one object named by one word, its scores mean what they say, and a run writes and reuses its
results."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.bench.edit import EditBenchSettings, grow, run_edit_bench, score_case, seam_step
from lab.bench.edit_cases import ATTRIBUTES, WORD_TYPES, make_cases
from lab.shapes.world import render, sample_scene

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("attribute", ATTRIBUTES)
@pytest.mark.parametrize("word_type", WORD_TYPES)
def test_a_case_changes_one_attribute_of_the_one_object_its_word_names(attribute, word_type):
    for case in make_cases(attribute, word_type, 8):
        assert case.source.caption != case.target.caption
        assert len(case.target.spec.objects) == len(case.source.objects)      # the target caption parses
        before, after = case.source.objects, case.target.objects
        for j, (a, b) in enumerate(zip(before, after)):
            differs = {name for name in ("shape", "colour", "size") if getattr(a, name) != getattr(b, name)}
            assert differs == ({attribute} if j == case.index else set())
        assert case.source.background == case.target.background
        named = [o for o in before if f" {case.word} " in f" {o.size} {o.colour} {o.shape} "]
        assert named == [before[case.index]]
        o, t = before[case.index], after[case.index]
        cells = case.cells()
        assert cells[o.y:o.y + o.cells, o.x:o.x + o.cells].all() and cells[t.y:t.y + t.cells, t.x:t.x + t.cells].all()
        if attribute == "size":
            assert len(before) < 3


def test_cases_are_deterministic_and_word_types_name_the_object_as_asked():
    first = make_cases("colour", "adjective", 5)
    assert first == make_cases("colour", "adjective", 5)
    assert all(c.word == c.source.objects[c.index].colour for c in first)
    assert all(c.word == c.source.objects[c.index].size for c in make_cases("size", "adjective", 5))
    assert all(len(c.word.split()) == 3 for c in make_cases("shape", "phrase", 5))


def test_scores_of_the_target_render_itself_and_of_the_source():
    case = make_cases("colour", "noun", 1)[0]
    source, target = render(case.source), render(case.target)
    cells = case.cells()
    perfect = score_case(case, target, source, cells)
    assert perfect["success"] and perfect["preserved"] and perfect["iou"] == 1.0
    assert perfect["pixel_diff"] == 0.0                         # nothing changes outside the grown cells
    unchanged = score_case(case, source, source, cells)
    assert not unchanged["success"] and unchanged["preserved"] and unchanged["seam"] == 0.0
    other = render(sample_scene([5, 5], "heldout"))
    assert score_case(case, other, source, None)["pixel_diff"] > 0.02


def test_grow_and_seam_step():
    cells = np.zeros((8, 8), bool)
    cells[3, 3] = True
    assert grow(cells).sum() == 9 and grow(cells, 2).sum() == 25
    flat = np.full((64, 64, 3), 0.5, np.float32)
    assert seam_step(flat, cells) == 0.0
    bright = flat.copy()
    bright[24:32, 24:32] = 0.9
    assert seam_step(bright, cells) == pytest.approx(0.4)
    assert np.isnan(seam_step(flat, np.ones((8, 8), bool)))


def test_a_tiny_run_writes_results_and_reuses_its_cells(tmp_path):
    settings = EditBenchSettings(scenes=2, attributes=("shape",), word_types=("adjective",), selects=("contrast",),
                                 steps=2, batch_size=2, out=tmp_path)
    result = run_edit_bench(settings, log=lambda m: None)
    cell = result["cells"]["shape/adjective"]
    methods = set(cell["summary"]) - {"differences"}
    assert methods == {"edit/contrast", "regenerate", "inpaint (true mask)", "source (VQ round trip)"}
    assert cell["summary"]["inpaint (true mask)"]["iou"]["mean"] == 1.0
    assert 0.0 <= cell["summary"]["edit/contrast"]["success"]["mean"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["cells"]["shape/adjective"]["n"] == 2
    assert "| shape | adjective | edit/contrast | 2 |" in (tmp_path / "results.md").read_text()
    logged = []
    run_edit_bench(settings, log=logged.append)
    assert logged == [f"shape x adjective: cached ({tmp_path / 'cells' / 'shape-adjective.json'})"]
    with pytest.raises(ValueError, match="unknown or no select"):
        EditBenchSettings(selects=("mask",)).validate()


def test_bench_edit_is_a_command():
    proc = subprocess.run([sys.executable, "-m", "tcts", "bench-edit", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--word-types" in proc.stdout and "--selects" in proc.stdout

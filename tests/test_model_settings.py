"""Sampling settings carried by the model folder (``tcts_settings.json``): the library, the CLI and the
ComfyUI loader take the values a folder declares wherever the user gives none, and say so."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from tcts.checkpoints import CheckpointError
from tcts.cli import main as cli_main
from tcts.pipeline import Pipeline
from tcts.settings import SETTINGS_FILE, ModelSettings, read_model_settings
from tests.helpers import AMUSED
from tests.engine_helpers import generate

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("model_index.json", "transformer", "vqvae", "text_encoder", "tokenizer", "scheduler")
DECLARED = {"cfg": 3.5, "steps": 3, "schedule": "linear", "size": [96, 64], "trained_sizes": [[96, 64]],
            "choice_temperature": [1.5, 0.0], "temperature": 0.9}


def model_folder(target: Path, settings: dict | None) -> Path:
    target.mkdir(parents=True)
    for part in PARTS:
        (shutil.copytree if (AMUSED / part).is_dir() else shutil.copy2)(AMUSED / part, target / part)
    if settings is not None:
        (target / SETTINGS_FILE).write_text(json.dumps({"_class_name": "TCTSSamplingSettings", **settings}))
    return target


@pytest.fixture(scope="module")
def declared(tmp_path_factory) -> Path:
    return model_folder(tmp_path_factory.mktemp("declared") / "declared-model", DECLARED)


def test_a_folder_without_the_file_keeps_the_reference_defaults():
    pipe = Pipeline.from_folder(AMUSED)
    resolved = pipe.resolve()
    assert (resolved.sampling.steps, resolved.sampling.cfg, resolved.sampling.choice_temperature) == (12, 10.0, (2.0, 0.0))
    assert set(resolved.origin.values()) == {"reference"}
    assert pipe.default_dimensions == (pipe.default_size, pipe.default_size)


def test_the_library_takes_the_folders_values_where_the_caller_gives_none(declared):
    pipe = Pipeline.from_folder(declared)
    result = generate(pipe, "a red cat", seed=0)
    assert result.settings["steps"] == 3 and result.settings["cfg"] == 3.5 and result.settings["schedule"] == "linear"
    assert (result.settings["width"], result.settings["height"]) == (96, 64)
    assert result.origin == {"steps": "model", "cfg": "model", "schedule": "model", "choice_temperature": "model",
                             "temperature": "model"}
    mine = generate(pipe, "a red cat", seed=0, steps=2, cfg=1.0, width=64, height=64)
    assert mine.settings["steps"] == 2 and mine.settings["cfg"] == 1.0 and mine.origin["steps"] == "user"


def test_the_same_run_with_the_values_given_explicitly_gives_the_same_tokens(declared):
    implicit = Pipeline.from_folder(declared).generate("a red cat", seed=4)
    explicit = generate(Pipeline.from_folder(AMUSED), "a red cat", seed=4, steps=3, cfg=3.5, schedule="linear",
                                                     width=96, height=64, choice_temperature=(1.5, 0.0),
                                                     sampling_temperature=0.9)
    assert np.array_equal(implicit.tokens.numpy(), explicit.tokens.numpy())


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli_main(argv)
    return code, err.getvalue()


@pytest.mark.slow
def test_the_cli_uses_the_folders_values_says_so_and_warns_once_about_an_untrained_size(declared, tmp_path):
    code, err = run_cli(["generate", "--model", str(declared), "--prompt", "a red cat", "--out",
                         str(tmp_path / "a.png"), "--tokens-out", str(tmp_path / "a.npy")])
    assert code == 0
    assert f"settings from {declared / SETTINGS_FILE}: steps 3, cfg 3.5, schedule linear" in err
    assert "warning" not in err
    assert np.load(tmp_path / "a.npy").shape == (64 // 16, 96 // 16)
    code, err = run_cli(["generate", "--model", str(declared), "--prompt", "a red cat", "--width", "64",
                         "--height", "64", "--steps", "2", "--out", str(tmp_path / "b.png")])
    assert code == 0 and err.count("64x64 px is not a size this model was trained at (96x64)") == 1
    assert "steps 3" not in err and "cfg 3.5" in err


def test_a_broken_settings_file_is_a_clear_error(tmp_path):
    folder = model_folder(tmp_path / "m", None)
    (folder / SETTINGS_FILE).write_text('{"steps": 0}')
    with pytest.raises(CheckpointError, match="invalid steps 0"):
        read_model_settings(folder)
    (folder / SETTINGS_FILE).write_text('{"schedule": "zigzag"}')
    with pytest.raises(CheckpointError, match="schedule 'zigzag' is not one of"):
        Pipeline.from_folder(folder)


def test_the_bundled_demo_model_declares_the_settings_it_was_benchmarked_with():
    settings = read_model_settings(ROOT / "models" / "shapes-demo")
    assert settings.cfg == 2.0 and settings.steps == 16 and settings.size == (64, 64)
    assert settings.size_warning(128, 128) and settings.size_warning(64, 64) is None
    assert ModelSettings.from_json(settings.to_json()) == settings


@pytest.mark.comfyui
def test_the_comfyui_loader_outputs_the_folders_values_and_the_sampler_warns_once(comfy, declared, caplog):
    from tests.comfy_prompts import txt2img

    comfy.add_model_folder("tcts", declared.parent)
    prompt = txt2img(model=declared.name)
    for slot, name in ((3, "steps"), (4, "cfg"), (5, "width"), (6, "height")):
        prompt["3"]["inputs"][name] = ["1", slot]
    prompt["3"]["inputs"]["schedule"] = "model default"
    result = comfy.run(prompt)
    assert [result.output("1", slot) for slot in (3, 4, 5, 6)] == [3, 3.5, 96, 64]
    implicit = generate(Pipeline.from_folder(declared), "a photo of a red cat", seed=0, choice_temperature=(2.0, 0.0),
                                                       sampling_temperature=1.0)  # the node's own widgets
    assert np.array_equal(result.output("3", 0).tokens.cpu().numpy(), implicit.tokens.numpy())
    prompt["3"]["inputs"].update(width=64, height=64, seed=1)
    with caplog.at_level(logging.WARNING):
        comfy.run(prompt)
        prompt["3"]["inputs"]["seed"] = 2
        comfy.run(prompt)
    assert sum("is not a size this model was trained at" in r.getMessage() for r in caplog.records) == 1

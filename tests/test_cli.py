"""``python -m tcts generate`` end to end on the tiny aMUSEd folder, as a user runs it."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .helpers import AMUSED, load_case

ROOT = AMUSED.parents[2]


def tcts(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "tcts", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_generate_writes_the_reference_tokens_and_a_png(tmp_path):
    out, tokens = tmp_path / "cat.png", tmp_path / "cat.npy"
    proc = tcts("generate", "--model", AMUSED, "--prompt", "a photo of a red cat", "--height", 128, "--width", 96,
                "--steps", 4, "--seed", 0, "--out", out, "--tokens-out", tokens)
    ref = load_case(AMUSED / "e2e" / "t2i_128x96.safetensors")
    saved = np.load(tokens)
    assert saved.dtype == np.int64 and saved.shape == (8, 6)
    assert (saved == ref["final_tokens"][0].numpy()).all()
    assert Image.open(out).size == (96, 128)
    assert "4/4" in proc.stderr  # progress bar on stderr


@pytest.mark.slow
def test_img2img_and_inpaint_from_the_command_line_match_the_reference(tmp_path):
    tcts("generate", "--model", AMUSED, "--prompt", "a photo of a blue bird", "--steps", 4,
         "--init-image", AMUSED / "inputs" / "image_128x96.png", "--strength", 0.5,
         "--out", tmp_path / "i2i.png", "--tokens-out", tmp_path / "i2i.npy")
    ref = load_case(AMUSED / "e2e" / "img2img_128x96_s05.safetensors")
    assert (np.load(tmp_path / "i2i.npy") == ref["final_tokens"][0].numpy()).all()
    tcts("generate", "--model", AMUSED, "--prompt", "a photo of a red cat", "--steps", 4,
         "--init-image", AMUSED / "inputs" / "image_256x256.png", "--mask", AMUSED / "inputs" / "mask_256x256.png",
         "--out", tmp_path / "inp.png", "--tokens-out", tmp_path / "inp.npy")
    ref = load_case(AMUSED / "e2e" / "inpaint_256x256.safetensors")
    assert (np.load(tmp_path / "inp.npy") == ref["final_tokens"][0].numpy()).all()


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["uniform", "random-revoke"])
def test_every_sampler_runs_from_the_command_line_with_a_batch(tmp_path, sampler):
    tcts("generate", "--model", AMUSED, "--prompt", "a red cat", "--sampler", sampler, "--steps", 3,
         "--width", 64, "--height", 64, "--batch-size", 2, "--out", tmp_path / "x.png",
         "--tokens-out", tmp_path / "x.npy")
    assert np.load(tmp_path / "x.npy").shape == (2, 4, 4)
    assert (tmp_path / "x-0.png").exists() and (tmp_path / "x-1.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sampler,flags", [("halton", ["--halton-roll"]), ("remdm", ["--remdm-variant", "rescale"]),
                                           ("fas-remdm", ["--remdm-eta", "0.2", "--fas-q", "0.3"]),
                                           ("entropy-bounded", ["--eb-gamma", "5", "--eb-proxy", "margin"]),
                                           ("noise-regularized", ["--noise-scale", "0.5"])])
def test_the_samplers_added_after_the_paper_run_from_the_command_line_with_their_flags(tmp_path, sampler, flags):
    tcts("generate", "--model", AMUSED, "--prompt", "a red cat", "--sampler", sampler, *flags, "--steps", 3,
         "--width", 64, "--height", 64, "--batch-size", 2, "--tokens-out", tmp_path / "x.npy", "--out", tmp_path / "x.png")
    tokens = np.load(tmp_path / "x.npy")
    assert tokens.shape == (2, 4, 4) and (tokens < 64).all()


@pytest.mark.parametrize("node,inputs", [
    ("TCTSRuleHalton", {"roll": True}),
    ("TCTSRuleReMDM", {"variant": "loop", "eta": 0.2, "t_on": 0.8, "t_off": 0.1, "choice": "random",
                       "repredict_visible": True}),
    ("TCTSRuleEntropyBounded", {"gamma": 3.0, "proxy": "margin"}),
    ("TCTSRuleNoiseRegularized", {"noise_scale": 0.5})])
def test_a_rule_nodes_command_line_builds_the_same_rule(node, inputs):
    """The journey replays a workflow's Rule nodes on the command line (tests/support/workflow_cli.py): the
    flags it writes must give the options the node gives."""
    from tcts.cli import build_parser
    from tcts.cli_rules import rule_from_args
    from tests.support.workflow_cli import rule_argv

    prompt = {"10": {"class_type": node, "inputs": inputs}, "11": {"class_type": "TCTSRuleFAS",
                                                                   "inputs": {"inner": ["10", 0], "q": 0.3}}}
    for ref, wrapped in ((["10", 0], False), (["11", 0], True)):
        if wrapped and node != "TCTSRuleReMDM":
            continue
        sampler, argv = rule_argv(prompt, ref, places=None)
        args = build_parser().parse_args(["generate", "--prompt", "x", "--out", "x.png", "--sampler", sampler, *argv])
        rule = rule_from_args(args, sampler)
        assert rule.name == sampler == ("fas-remdm" if wrapped else rule.name)
        inner = rule.inner if wrapped else rule
        given = {k: v for k, v in inputs.items() if k != "repredict_visible"}
        assert {k: getattr(inner.options, k) for k in given} == given
        assert rule.repredict_visible == inputs.get("repredict_visible", False)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["purity", "uniform", "random-revoke"])
def test_tiny_meissonic_runs_every_sampler_from_the_command_line(tmp_path, sampler):
    from .helpers import MEISSONIC

    tcts("generate", "--model", MEISSONIC, "--prompt", "a photo of a red cat", "--sampler", sampler, "--steps", 3,
         "--cfg", 9, "--width", 64, "--height", 1024, "--out", tmp_path / "m.png", "--tokens-out", tmp_path / "m.npy")
    assert np.load(tmp_path / "m.npy").shape == (64, 4)
    assert Image.open(tmp_path / "m.png").size == (64, 1024)


def test_every_option_of_every_command_shows_its_default_in_help():
    import argparse

    from lab.bench.speed import main as bench_speed_main
    from tcts.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        if name == "bench-speed":
            continue
        formatter = command._get_formatter()
        for action in command._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction) and not action.required:
                assert "default" in formatter._get_help_string(action), f"{name} {action.option_strings[0]}"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        bench_speed_main(["--help"])
    options = [line for line in out.getvalue().split("options:")[1].split("\n  -") if line.strip()][1:]
    assert options and all("default" in " ".join(o.split()) for o in options), out.getvalue()


@pytest.mark.slow
def test_the_bundled_model_needs_only_a_prompt_and_says_which_settings_it_brought(tmp_path):
    proc = tcts("generate", "--prompt", "a large red circle left of a small blue triangle on a striped background",
                "--out", tmp_path / "scene.png", "--tokens-out", tmp_path / "scene.npy")
    assert "settings from" in proc.stderr and "tcts_settings.json: steps 16, cfg 2, schedule cosine" in proc.stderr
    assert np.load(tmp_path / "scene.npy").shape == (8, 8) and Image.open(tmp_path / "scene.png").size == (64, 64)
    proc = tcts("generate", "--prompt", "a small red circle", "--width", 128, "--height", 128, "--steps", 2,
                "--out", tmp_path / "big.png")
    assert proc.stderr.count("128x128 px is not a size this model was trained at (64x64)") == 1


def test_train_selector_defaults_to_the_bundled_model_fits_its_warm_up_and_names_its_split():
    import argparse

    from tcts.cli import build_parser
    from tcts.cli_common import default_model_path, model_folder
    from tcts.train.cli import fit_warmup, split_line
    from tcts.train.data import CaptionDataset

    args = build_parser().parse_args(["train-selector", "--data", "d", "--out", "o", "--steps", "30"])
    assert model_folder(args) == default_model_path()
    assert "--warmup 1000 is not shorter than --steps 30" in fit_warmup(args) and args.warmup == 3
    assert fit_warmup(argparse.Namespace(warmup=10, steps=30)) is None
    train = CaptionDataset([f"c{i}" for i in range(13)], list(range(13)), images=[None] * 13, name="d")
    val = CaptionDataset(["c13"], [13], images=[None] * 14, name="d-val")
    assert split_line(train, val) == "14 images with 14 captions: 13 images for training, 1 for validation"


def test_set_up_skips_pip_when_nothing_changed(tmp_path):
    """A second run of scripts/setup_env.sh with unchanged requirements never starts pip."""
    import hashlib
    import os

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    fake = venv / "bin" / "python"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(0o755)
    spec = "torch==2.13.0"
    digest = hashlib.sha256((spec + " \n").encode() + (ROOT / "requirements.txt").read_bytes()).hexdigest()
    (venv / ".tcts-setup-stamp").write_text(digest + "\n")
    proc = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TCTS_VENV": str(venv), "TCTS_TORCH": spec})
    assert proc.returncode == 0, proc.stderr
    assert not log.exists(), f"the venv's python was called: {log.read_text()}"

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


@pytest.mark.parametrize("sampler", ["uniform", "random-revoke"])
def test_every_sampler_runs_from_the_command_line_with_a_batch(tmp_path, sampler):
    tcts("generate", "--model", AMUSED, "--prompt", "a red cat", "--sampler", sampler, "--steps", 3,
         "--width", 64, "--height", 64, "--batch-size", 2, "--out", tmp_path / "x.png",
         "--tokens-out", tmp_path / "x.npy")
    assert np.load(tmp_path / "x.npy").shape == (2, 4, 4)
    assert (tmp_path / "x-0.png").exists() and (tmp_path / "x-1.png").exists()


@pytest.mark.parametrize("args,message", [
    (["--model", "does/not/exist"], "does not exist"),
    (["--width", "100"], "width must be a positive multiple of 32 px"),
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--cfg", "-2"], "cfg must be a finite number >= 0"),
    (["--mask", str(AMUSED / "inputs" / "mask_256x256.png")], "--mask needs --init-image"),
])
def test_bad_arguments_exit_with_a_clear_message_and_no_output(tmp_path, args, message):
    out = tmp_path / "never.png"
    base = ["generate", "--model", AMUSED, "--prompt", "x", "--out", out, "--steps", 2]
    proc = tcts(*base, *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sampler", ["purity", "uniform", "random-revoke"])
def test_tiny_meissonic_runs_every_sampler_from_the_command_line(tmp_path, sampler):
    from .helpers import MEISSONIC

    tcts("generate", "--model", MEISSONIC, "--prompt", "a photo of a red cat", "--sampler", sampler, "--steps", 3,
         "--cfg", 9, "--width", 64, "--height", 1024, "--out", tmp_path / "m.png", "--tokens-out", tmp_path / "m.npy")
    assert np.load(tmp_path / "m.npy").shape == (64, 4)
    assert Image.open(tmp_path / "m.png").size == (64, 1024)

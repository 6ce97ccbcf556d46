"""``python -m tcts train-selector`` and ``generate --sampler tcts`` end to end, as a user runs them — in one
process and as 2 DDP processes (gloo, CPU) under torchrun, which must train the same selector."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from .helpers import AMUSED, MEISSONIC

ROOT = AMUSED.parents[2]
TRAIN = ["--model", AMUSED, "--steps", 3, "--resolution", 64, "--layers", 1, "--width", 32, "--heads", 2,
         "--warmup", 0, "--lr", 1e-3, "--sampling-steps", 6, "--val-samples", 4, "--log-every", 1, "--device", "cpu"]


def run(*args, launcher=(sys.executable, "-m", "tcts"), check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*launcher, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Ten 80x64 pictures (resized and centre-cropped to 64x64 for training) with captions.jsonl."""
    root = tmp_path_factory.mktemp("shapes-data")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(10):
        colour, word = [((220, 30, 30), "red"), ((30, 30, 220), "blue")][i % 2]
        pixels = np.zeros((64, 80, 3), np.uint8)
        pixels[:] = colour
        pixels[16:48, 20:60] = rng.integers(0, 255, (32, 40, 3))
        Image.fromarray(pixels).save(root / f"img{i}.png")
        lines.append(json.dumps({"file": f"img{i}.png", "caption": f"a {word} square"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    proc = run("train-selector", *TRAIN, "--data", dataset, "--out", out, "--batch-size", 4)
    return out, proc


@pytest.mark.slow
def test_train_selector_writes_a_selector_a_checkpoint_and_logs(single):
    out, proc = single
    assert proc.stdout.strip().endswith(str(out / "selector"))
    assert sorted(p.name for p in (out / "selector").iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "checkpoint" / "trainer_state.safetensors").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert "val" in log[-1] and {"precision", "recall", "chance_precision"} <= set(log[-1]["val"])
    assert "10 images with 10 captions: 9 images for training, 1 for validation" in proc.stderr
    assert "3/3" in proc.stderr
    config = json.loads((out / "selector" / "config.json").read_text())
    assert (config["codebook_size"], config["text_hidden_size"], config["num_layers"]) == (64, 16, 1)


@pytest.mark.slow
def test_two_ddp_processes_train_the_same_selector_as_one_with_the_same_global_batch(dataset, single, tmp_path):
    out, _ = single
    ddp = tmp_path / "ddp"
    proc = run("--standalone", "--nproc_per_node", 2, "-m", "tcts", "train-selector", *TRAIN, "--data", dataset,
               "--out", ddp, "--batch-size", 2, launcher=(sys.executable, "-m", "torch.distributed.run"))
    assert "2 process(es) on cpu; global batch 4" in proc.stderr
    one, two = load_file(str(out / "selector" / "model.safetensors")), load_file(str(ddp / "selector" / "model.safetensors"))
    start = load_file(str(out / "checkpoint" / "trainer_state.safetensors"))
    moved = max(float((one[k] - two[k]).abs().max()) for k in one)
    print(f"DDP (2 gloo processes x batch 2) vs 1 process x batch 4 after 3 steps: max |diff| = {moved:.2e}")
    assert moved < 1e-5
    assert any(float(v.abs().max()) > 0 for k, v in start.items() if k.startswith("optim."))


@pytest.mark.slow
def test_generate_samples_with_the_trained_selector(single, tmp_path):
    out, _ = single
    run("generate", "--model", AMUSED, "--prompt", "a red square", "--sampler", "tcts", "--selector", out / "selector",
        "--steps", 4, "--width", 64, "--height", 64, "--batch-size", 2, "--selector-guidance", 3,
        "--selector-noise", 1, "--selector-choice", "multinomial", "--out", tmp_path / "x.png",
        "--tokens-out", tmp_path / "x.npy")
    tokens = np.load(tmp_path / "x.npy")
    assert tokens.shape == (2, 4, 4) and ((0 <= tokens) & (tokens < 64)).all()
    assert (tmp_path / "x-0.png").exists() and (tmp_path / "x-1.png").exists()


@pytest.mark.parametrize("args,message", [
    ([], "--sampler tcts needs --selector PATH"),
    (["--selector", "{selector}", "--model", MEISSONIC],
     "reads text states of width 16 but the generator's text encoder gives width 32"),
    (["--selector", "{root}/nowhere"], "does not exist"),
])
@pytest.mark.slow
def test_generate_with_tcts_names_what_is_wrong(single, tmp_path, args, message):
    out, _ = single
    args = [str(a).format(selector=out / "selector", root=tmp_path) for a in args]
    base = ["generate", "--model", AMUSED, "--prompt", "x", "--sampler", "tcts", "--steps", 2, "--width", 64,
            "--height", 64, "--out", tmp_path / "x.png"]
    proc = run(*base, *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr

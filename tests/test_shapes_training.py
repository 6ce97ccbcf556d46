"""Shapes demo training plumbing: pickle-free resumable checkpoints, the export to a diffusers folder
(tiny random models, so it runs in seconds), and the shipped ``models/shapes-demo`` when present."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lab.shapes.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from tests.engine_helpers import generate

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "shapes-demo"


def test_checkpoint_roundtrip_restores_weights_and_adam_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
    for step in (3, 4, 5):
        save_checkpoint(tmp_path, {"m": model}, {"step": step, "note": "x"}, opt, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-0000004", "step-0000005"]
    path = latest_checkpoint(tmp_path)
    assert path.name == "step-0000005"
    assert not list(path.glob("*.pt")) and not list(path.glob("*.bin"))

    clone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt2 = torch.optim.AdamW(clone.parameters(), lr=1e-3)
    state, _ = load_checkpoint(path, {"m": clone}, opt2)
    assert state["step"] == 5 and state["note"] == "x"
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
        sa, sb = opt.state[a], opt2.state[b]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
        assert float(sa["step"]) == float(sb["step"])
    # one more identical step keeps them identical
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters()))


def _tiny_run(tmp_path: Path) -> tuple[Path, Path]:
    """A fake generator run folder (tiny random UVit + CLIP) and a tiny VQ 'final' folder."""
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from tcts.models.uvit import UVit2DTransformer
    from tcts.models.vq import VQModel
    sys.path.insert(0, str(ROOT / "lab" / "scripts"))
    from train_generator import GeneratorSize, generator_config

    from lab.shapes.text import build_tokenizer_files, text_encoder_config

    run = tmp_path / "gen"
    vocab = build_tokenizer_files(run / "tokenizer")
    tcfg = text_encoder_config(len(vocab), hidden=32, layers=2, heads=1, intermediate=64, projection=32)
    gcfg = generator_config(64, 32, 32, GeneratorSize(hidden=32, layers=1, heads=1, intermediate=64, block=16))
    torch.manual_seed(0)
    gen = UVit2DTransformer(gcfg)
    text = CLIPTextModelWithProjection(CLIPTextConfig(**{k: v for k, v in tcfg.items() if k != "architectures"}))
    save_checkpoint(run, {"gen": gen, "text": text, "ema_gen": copy.deepcopy(gen), "ema_text": copy.deepcopy(text)},
                    {"step": 7, "images_seen": 224, "generator_config": gcfg, "text_config": tcfg})
    vq_dir = tmp_path / "vq"
    vq_dir.mkdir()
    vcfg = {"_class_name": "VQModel", "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "latent_channels": 4,
            "num_vq_embeddings": 64, "norm_num_groups": 4, "mid_block_add_attention": False,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "act_fn": "silu", "norm_type": "group", "in_channels": 3, "out_channels": 3, "vq_embed_dim": None}
    (vq_dir / "config.json").write_text(json.dumps(vcfg))
    save_file(VQModel(vcfg).state_dict(), str(vq_dir / "diffusion_pytorch_model.safetensors"))
    return run, vq_dir


@pytest.mark.slow
def test_export_writes_a_loadable_diffusers_folder(tmp_path):
    run, vq_dir = _tiny_run(tmp_path)
    out = tmp_path / "shapes-demo"
    proc = subprocess.run([sys.executable, str(ROOT / "lab" / "scripts" / "export.py"), "--gen", str(run),
                           "--vq", str(vq_dir), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "AmusedPipeline" and index["transformer"] == ["diffusers", "UVit2DModel"]
    for f in ("transformer/config.json", "transformer/diffusion_pytorch_model.safetensors", "vqvae/config.json",
              "vqvae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
              "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json", "training.json"):
        assert (out / f).is_file(), f
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched["mask_token_id"] == 71 and sched["_class_name"] == "AmusedScheduler"
    from tcts.pipeline import Pipeline

    pipe = Pipeline.from_folder(out)
    assert pipe.default_size == 64 and pipe.transformer.codebook_size == 64


@pytest.mark.slow
def test_selector_recipe_trains_a_selector_that_matches_the_exported_generator(tmp_path):
    run, vq_dir = _tiny_run(tmp_path)
    model = tmp_path / "shapes-demo"
    script = ROOT / "lab" / "scripts"
    proc = subprocess.run([sys.executable, str(script / "export.py"), "--gen", str(run), "--vq", str(vq_dir),
                           "--out", str(model)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "selector-run"
    proc = subprocess.run([sys.executable, str(script / "train_selector.py"), "--model", str(model), "--out", str(out),
                           "--codes", str(tmp_path / "no-codes.safetensors"), "--scenes", "80", "--steps", "3",
                           "--batch-size", "2", "--layers", "1", "--width", "16", "--heads", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from tcts.pipeline import Pipeline
    from tcts.selector import load_selector

    pipe = Pipeline.from_folder(model)
    selector = load_selector(out / "selector", pipe.transformer)
    trained = selector.config.extra["trained_with"]
    assert trained["cfg"] == 2.0 and trained["sampling_steps"] == 16 and trained["grid"] == [8, 8]
    res = generate(pipe, ["a small red circle on a flat background"], sampler="tcts", steps=4, cfg=2.0,
                        rule_options={"selector": selector})
    assert res.tokens.shape == (1, 8, 8)


def _demo_or_skip():
    if not (DEMO / "model_index.json").is_file():
        pytest.skip("models/shapes-demo not exported yet")
    from tcts.pipeline import Pipeline

    return Pipeline.from_folder(DEMO)


def test_shipped_demo_folder_loads_generates_and_fits_the_size_budget():
    pipe = _demo_or_skip()
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total <= 40 * 2**20, total
    assert pipe.default_size == 64
    res = generate(pipe, "a large red circle on a flat background", sampler="uniform", steps=6, cfg=3.0, seed=0)
    assert res.images.shape == (1, 64, 64, 3) and res.tokens.shape == (1, 8, 8)
    assert 0 <= float(res.images.min()) and float(res.images.max()) <= 1


def test_shipped_demo_loads_with_diffusers_amused_pipeline():
    _demo_or_skip()
    diffusers = pytest.importorskip("diffusers")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = diffusers.AmusedPipeline.from_pretrained(str(DEMO))
    out = pipe("a small blue square on a striped background", num_inference_steps=4, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 64, 64, 3)


@pytest.mark.slow
def test_readme_main_command_draws_its_held_out_caption_offline(tmp_path):
    """The README's first command, run as written (bundled model and selector, no network): the picture
    shows the caption's objects with their colours on the right background (the detector reads it)."""
    import re
    import shlex

    from PIL import Image

    from lab.shapes import detector
    from lab.shapes.world import parse_caption

    if not (DEMO / "model_index.json").is_file() or not (ROOT / "models" / "shapes-demo-selector").is_dir():
        pytest.skip("models/shapes-demo (+ selector) not exported yet")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^bash scripts/tcts\.sh (generate .*?)(?<!\\)$", readme, re.M | re.S).group(1)
    argv = shlex.split(command.replace("\\\n", " "))
    prompt = argv[argv.index("--prompt") + 1]
    assert parse_caption(prompt).heldout, "the README should show a caption the model never saw"
    out = tmp_path / "scene.png"
    argv[argv.index("--out") + 1] = str(out)
    proc = subprocess.run([sys.executable, "-m", "tcts", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import numpy as np

    with Image.open(out) as im:
        image = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    result = detector.check(image, prompt)
    assert all(o["found"] for o in result["objects"]) and result["background"], result


def _selector_labels_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("selector_labels", ROOT / "lab" / "scripts" / "selector_labels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_selector_label_study_marks_object_tiles_and_background_cells():
    from lab.shapes.world import GRID, scene_from_caption

    study = _selector_labels_script()
    scene = scene_from_caption("a large red circle left of a small blue triangle on a noisy background")
    cells = [c for row in study.region_map(scene, GRID) for c in row]
    assert cells.count("object") == 4 * 4 + 2 * 2           # a large tile is 4 x 4 cells, a small one 2 x 2
    assert cells.count("noisy") == GRID * GRID - 20


def test_selector_label_study_splits_labels_and_flags_by_region(capsys, tmp_path):
    if not (DEMO / "model_index.json").is_file() or not (ROOT / "models" / "shapes-demo-selector").is_dir():
        pytest.skip("models/shapes-demo (+ selector) not exported yet")
    study = _selector_labels_script()
    study.main(["--examples", "32", "--codes", str(tmp_path / "absent.safetensors")])   # falls back to VQ tokens
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| ") and not l.startswith("| ---")]
    rows = {l.split(" | ")[0][2:]: [float(x) for x in l.strip(" |").split(" | ")[1:]] for l in lines[1:]}
    assert "object" in rows and set(rows) <= {"object", "flat", "gradient", "striped", "checkered", "noisy"}
    for column in (0, 2, 3):            # share of tokens, of changed labels, of flagged tokens: each sums to 1
        assert sum(r[column] for r in rows.values()) == pytest.approx(1.0, abs=0.005)
    assert all(0 <= r[1] <= 1 for r in rows.values())     # label rate

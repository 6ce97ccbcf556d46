"""The bad-input catalogue: one row per case, across the library, the CLI and the ComfyUI nodes.

Every row names the input, what is wrong and what is expected, and leaves no partial output file.
docs/troubleshooting.md lists every row's message (checked below; regenerate its table with
``python -m tests.test_bad_input_catalogue``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from unittest import mock
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tcts.checkpoints import load_transformer, load_vq, read_safetensors
from tcts.cli import main as cli_main
from tcts.pipeline import Pipeline
from tests.engine_helpers import cond_for as text_condition, generate, tokens_for as generate_tokens

from .helpers import AMUSED, MEISSONIC

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMER = AMUSED / "transformer" / "diffusion_pytorch_model.safetensors"


@dataclass
class Case:
    id: str
    surface: str            # "library", "cli" or "node"
    message: str            # a literal part of the error the user sees
    run: Callable           # run(ctx) must raise (library/node) or fail with this message (cli)


#: exit status of a failed command (tcts/cli_common.py): 2 the command line or a file it names is wrong,
#: 1 the run itself failed
USAGE, FAILED = 2, 1


class Context:
    """Shared, lazily built state for the rows (one pipeline, a scratch folder)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self._pipe = None

    @property
    def pipe(self) -> Pipeline:
        if self._pipe is None:
            self._pipe = Pipeline.from_folder(AMUSED)
        return self._pipe

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    def generate(self, **kwargs):
        return generate(self.pipe, "a red cat", **{"width": 64, "height": 64, "steps": 2, **kwargs})

    def image(self, name: str, size=(96, 128), mode="RGB") -> Path:
        path = self.tmp / name
        Image.new(mode, size, (200, 30, 30, 128)[: len(mode)]).save(path)
        return path


def meissonic_weights_with_amused_config(ctx: Context):
    folder = ctx.tmp / "transformer"
    folder.mkdir(exist_ok=True)
    shutil.copy(MEISSONIC / "transformer" / "diffusion_pytorch_model.safetensors", folder)
    shutil.copy(AMUSED / "transformer" / "config.json", folder)
    load_transformer(folder)


def only_a_pickle_transformer(ctx: Context):
    folder = ctx.tmp / "transformer"
    folder.mkdir(exist_ok=True)
    shutil.copy(AMUSED / "transformer" / "config.json", folder)
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"x")
    load_transformer(folder)


def unrecognised_state_dict(ctx: Context):
    path = ctx.tmp / "random.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(path))
    load_transformer(path)


def missing_and_unexpected_keys(ctx: Context):
    state = read_safetensors(TRANSFORMER)
    state.pop("mlm_layer.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    folder = ctx.tmp / "transformer"
    folder.mkdir(exist_ok=True)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    shutil.copy(AMUSED / "transformer" / "config.json", folder)
    load_transformer(folder)


def no_downsampling_width_72(ctx: Context):
    nodown = Pipeline(load_transformer(AMUSED / "transformer_nodown"), ctx.pipe.vq, ctx.pipe.text_encoder)
    generate(nodown, "a cat", width=72, height=112, steps=2)


def nan_logits(ctx: Context):
    broken = load_transformer(AMUSED / "transformer")
    with torch.no_grad():
        broken.mlm_layer.conv2.weight.fill_(float("nan"))
    cond = text_condition(ctx.pipe.encode_prompts(["a"]), None, 64, 64, 1)
    generate_tokens(broken, cond, grid=(4, 4), steps=2, cfg=1.0)


def out_of_range_tokens(ctx: Context):
    cond = text_condition(ctx.pipe.encode_prompts(["a"]), None, 64, 64, 1)
    generate_tokens(ctx.pipe.transformer, cond, tokens=torch.full((1, 4, 4), 64), steps=2, cfg=1.0)


def mismatched_text_encoder(ctx: Context):
    from tcts.checkpoints import load_text_encoder
    from tcts.model_folder import check_compatible

    check_compatible(ctx.pipe.transformer, ctx.pipe.vq, load_text_encoder(MEISSONIC / "text_encoder",
                                                                          MEISSONIC / "tokenizer"))


def selector_for_other_generator(ctx: Context):
    from tcts.selector.model import SelectorConfig, TokenSelector, load_selector, save_selector

    folder = ctx.tmp / "selector"
    save_selector(TokenSelector(SelectorConfig(codebook_size=128, text_hidden_size=16, hidden_size=16, num_layers=1,
                                               num_heads=2)), folder)
    load_selector(folder, ctx.pipe.transformer)


def selector_with_other_text_width(ctx: Context):
    from tcts.selector.model import SelectorConfig, TokenSelector, load_selector, save_selector

    folder = ctx.tmp / "selector"
    save_selector(TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=32, hidden_size=16, num_layers=1,
                                               num_heads=2)), folder)
    load_selector(folder, ctx.pipe.transformer)


def edit_word_not_in_prompt(ctx: Context):
    from tcts.attention import word_columns

    ids = ctx.pipe.text_encoder.tokenize(["a photo of a red cat"])[0]
    pieces = ctx.pipe.text_encoder.tokenizer.convert_ids_to_tokens(ids.tolist())
    word_columns("dog", pieces, "a photo of a red cat")


def cli(*args: str, exit: int = USAGE, command: tuple[str, ...] | None = None, during: Callable | None = None):
    """A CLI row: ``generate`` on the tiny model with ``args`` (or ``command`` instead) must fail with exit
    status ``exit``, write nothing, and print the message; ``during`` wraps the call (e.g. a simulated
    failure)."""
    def run(ctx: Context):
        out = ctx.tmp / "out"
        out.mkdir(exist_ok=True)
        argv = list(command) if command is not None else [
            "generate", "--model", str(AMUSED), "--prompt", "x", "--steps", "2", "--out", str(out / "x.png"),
            "--tokens-out", str(out / "x.npy")]
        argv += [a.format(tmp=ctx.tmp) for a in args]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), (during() if during else contextlib.nullcontext()):
            try:
                code = cli_main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
                stderr.write(str(exc.code))
        assert code == exit, f"exit status {code}, expected {exit}: {stderr.getvalue()}"
        assert list(out.iterdir()) == [], "a failed command must leave no output file"
        raise ValueError(stderr.getvalue())
    return run


def cpu_allocator_fails():
    """The CPU allocator's own failure (a plain RuntimeError), as a huge batch gives it."""
    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 4000000000000 bytes. Error code 12")
    return mock.patch("tcts.sampling.step.guided_logits", fail)


def gpu_runs_out_of_memory():
    def fail(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
    return mock.patch("tcts.sampling.step.guided_logits", fail)


def gpu_out_of_memory(ctx: Context):
    with gpu_runs_out_of_memory():
        ctx.generate(batch_size=4)


def diffusers_missing():
    real = importlib.util.find_spec
    return mock.patch("importlib.util.find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))


CASES = [
    # --- checkpoint files (library) -------------------------------------------------------------
    Case("missing-file", "library", "does not exist", lambda c: load_transformer(c.tmp / "nope.safetensors")),
    Case("missing-folder", "library", "does not exist", lambda c: Pipeline.from_folder(c.tmp / "no-model")),
    Case("not-a-model-folder", "library", "no model_index.json", lambda c: Pipeline.from_folder(c.tmp)),
    Case("truncated-file", "library", "not a readable safetensors file (truncated, corrupt or another format)",
         lambda c: read_safetensors(c.file("cut.safetensors", TRANSFORMER.read_bytes()[:5000]))),
    Case("empty-file", "library", "is empty (0 bytes)", lambda c: read_safetensors(c.file("e.safetensors", b""))),
    Case("renamed-image", "library", "not a readable safetensors file",
         lambda c: read_safetensors(c.file("photo.safetensors", (AMUSED / "inputs" / "mask_256x256.png").read_bytes()))),
    Case("pickle-ckpt", "library", "pickle-based checkpoint (.ckpt); tcts loads only .safetensors",
         lambda c: read_safetensors(c.file("m.ckpt", b"\x80\x04."))),
    Case("pickle-pt", "library", "pickle-based checkpoint (.pt)", lambda c: read_safetensors(c.file("m.pt", b"\x80"))),
    Case("pickle-bin", "library", "pickle-based checkpoint (.bin)",
         lambda c: read_safetensors(c.file("m.bin", b"\x80"))),
    Case("pickle-pth", "library", "pickle-based checkpoint (.pth)",
         lambda c: read_safetensors(c.file("m.pth", b"\x80"))),
    Case("only-pickle-weights", "library", "found only pickle files", only_a_pickle_transformer),
    Case("unrecognised-weights", "library", "unrecognised checkpoint", unrecognised_state_dict),
    Case("missing-and-unexpected-keys", "library",
         "missing keys: mlm_layer.conv1.weight; unexpected keys: extra.weight", missing_and_unexpected_keys),
    Case("clip-as-transformer", "library", "holds a CLIP text encoder with projection, but an aMUSEd transformer",
         lambda c: load_transformer(AMUSED / "text_encoder" / "model.safetensors")),
    Case("vq-as-transformer", "library", "holds a VQ-GAN (VQModel), but an aMUSEd transformer",
         lambda c: load_transformer(AMUSED / "vqvae" / "diffusion_pytorch_model.safetensors")),
    Case("transformer-as-vq", "library", "holds an aMUSEd transformer (UVit2DModel), but a VQ-GAN",
         lambda c: load_vq(TRANSFORMER)),
    Case("meissonic-as-amused", "library", "holds a Meissonic transformer but its config describes UVit2DModel",
         meissonic_weights_with_amused_config),
    Case("text-encoder-mismatch", "library", "text encoder width 32 does not match the transformer's text input "
         "width 16", mismatched_text_encoder),
    # --- generation settings (library) ----------------------------------------------------------
    Case("width-not-multiple", "library", "width must be a positive multiple of 32 px",
         lambda c: c.generate(width=100)),
    Case("width-not-multiple-of-16", "library", "width must be a positive multiple of 16 px",
         no_downsampling_width_72),
    Case("height-not-multiple", "library", "height must be a positive multiple of 32 px",
         lambda c: c.generate(height=112)),
    Case("width-negative", "library", "width must be a positive multiple of 32 px", lambda c: c.generate(width=-32)),
    Case("height-zero", "library", "height must be a positive multiple of 32 px", lambda c: c.generate(height=0)),
    Case("batch-zero", "library", "batch size must be >= 1", lambda c: c.generate(batch_size=0)),
    Case("steps-zero", "library", "steps must be an integer >= 1", lambda c: c.generate(steps=0)),
    Case("steps-negative", "library", "steps must be an integer >= 1", lambda c: c.generate(steps=-4)),
    Case("cfg-nan", "library", "cfg must be a finite number >= 0", lambda c: c.generate(cfg=float("nan"))),
    Case("cfg-inf", "library", "cfg must be a finite number >= 0", lambda c: c.generate(cfg=float("inf"))),
    Case("cfg-negative", "library", "cfg must be a finite number >= 0", lambda c: c.generate(cfg=-1.0)),
    Case("choice-temperature-negative", "library", "choice temperature must be finite and >= 0",
         lambda c: c.generate(choice_temperature=(-1.0, 0.0))),
    Case("temperature-not-positive", "library", "sampling temperature must be a finite number > 0",
         lambda c: c.generate(sampling_temperature=-0.5)),
    Case("unknown-sampler", "library", "sampler 'best' is unknown; expected one of",
         lambda c: c.generate(sampler="best")),
    Case("unknown-schedule", "library", "schedule 'zigzag' is unknown; expected one of",
         lambda c: c.generate(schedule="zigzag")),
    Case("strength-out-of-range", "library", "strength must be in (0, 1]",
         lambda c: c.generate(init_image=torch.rand(1, 64, 64, 3), strength=1.5)),
    Case("init-image-odd-size", "library", "width must be a positive multiple of 32 px",
         lambda c: c.generate(init_image=torch.rand(1, 90, 100, 3))),
    Case("mask-empty", "library", "inpaint mask is empty: nothing to regenerate",
         lambda c: c.generate(init_image=torch.rand(1, 64, 64, 3), mask=torch.zeros(1, 64, 64))),
    Case("mask-wrong-size", "library", "inpaint mask is 32x32 px but the image is 64x64",
         lambda c: c.generate(init_image=torch.rand(1, 64, 64, 3), mask=torch.ones(1, 32, 32))),
    Case("mask-without-image", "library", "a mask needs an init image to inpaint",
         lambda c: c.generate(mask=torch.ones(1, 64, 64))),
    Case("tokens-out-of-range", "library", "start tokens must be codebook ids in [0, 64) or the mask id 71",
         out_of_range_tokens),
    Case("nan-logits", "library", "the generator returned NaN/inf logits at step 1/2", nan_logits),
    Case("selector-codebook-mismatch", "library", "was trained for a 128-code VQ codebook but the generator "
         "predicts 64 codes", selector_for_other_generator),
    Case("selector-text-width-mismatch", "library", "reads text states of width 32 but the generator's text "
         "encoder gives width 16", selector_with_other_text_width),
    Case("edit-word-not-in-prompt", "library", "the word 'dog' is not in the prompt", edit_word_not_in_prompt),
    # --- command line -------------------------------------------------------------------------------
    Case("cli-tcts-without-selector", "cli", "--sampler tcts needs --selector PATH", cli("--sampler", "tcts")),
    Case("cli-missing-model", "cli", "does not exist", cli("--model", "{tmp}/nowhere")),
    Case("cli-bad-width", "cli", "width must be a positive multiple of 32 px", cli("--width", "100")),
    Case("cli-out-folder-missing", "cli", "output folder", cli("--out", "{tmp}/no/such/dir/x.png")),
    Case("cli-out-not-png", "cli", "--out must be a .png file", cli("--out", "{tmp}/out/x.jpg")),
    Case("cli-mask-without-image", "cli", "--mask needs --init-image", cli("--mask", str(AMUSED / "inputs" / "mask_256x256.png"))),
    Case("cli-init-image-missing", "cli", "image", cli("--init-image", "{tmp}/missing.png")),
    Case("cli-init-image-not-an-image", "cli", "is not a readable image", cli("--init-image", str(TRANSFORMER))),
    Case("cli-out-of-memory", "cli", "out of memory while generating 100000 image(s) of 64x64 px. Lower the "
         "batch size or the image size", cli("--batch-size", "100000", "--width", "64", "--height", "64",
                                             exit=FAILED, during=cpu_allocator_fails)),
    Case("gpu-out-of-memory", "library", "out of memory while generating 4 image(s) of 64x64 px. Lower the batch "
         "size or the image size", gpu_out_of_memory),
    Case("cli-unknown-option-value", "cli", "invalid choice: 'best'", cli("--sampler", "best")),
    Case("bench-speed-without-diffusers", "cli", "install it with: pip install diffusers==0.42.1",
         cli(command=("bench-speed", "--models", "amused-256"), during=diffusers_missing)),
]


def node_prompt(change: Callable[[dict], None]) -> Callable[[dict], None]:
    """A node row: a txt2img prompt (tests/comfy_prompts.py) with one change."""
    def build(prompt: dict) -> None:
        change(prompt)
    return build


def start_tokens(prompt: dict, image: str = "tcts_catalogue.png") -> None:
    prompt["8"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    prompt["9"] = {"class_type": "TCTSVQEncode", "inputs": {"vq": ["1", 1], "image": ["8", 0]}}
    prompt["3"]["inputs"]["start_tokens"] = ["9", 0]


def mask_of(prompt: dict, width: int, height: int) -> None:
    prompt["10"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": width, "height": height}}
    prompt["3"]["inputs"]["mask"] = ["10", 0]


def foreign_clip(prompt: dict) -> None:
    prompt["6"] = {"class_type": "TCTSLoadModel", "inputs": {"model_name": "meissonic-tiny", "dtype": "auto"}}
    prompt["2"]["inputs"]["clip"] = ["6", 2]


# Node rows run in a real ComfyUI (tests/test_comfy_reliability.py); the message is the node error's text.
NODE_CASES = [
    Case("node-model-name-traversal", "node", "is not among the installed models",
         node_prompt(lambda p: p["1"]["inputs"].update(model_name="../../etc"))),
    Case("node-model-name-absolute-path", "node", "is not among the installed models",
         node_prompt(lambda p: p["1"]["inputs"].update(model_name="/etc"))),
    Case("node-width-not-multiple", "node", "width must be a positive multiple of 32 px",
         node_prompt(lambda p: p["3"]["inputs"].update(width=100))),
    Case("node-mask-without-start-tokens", "node", "a mask needs start tokens (VQ Encode the image to inpaint)",
         node_prompt(lambda p: mask_of(p, 96, 128))),
    Case("node-mask-wrong-size", "node", "mask is 32x32 px but the image is 96x128",
         node_prompt(lambda p: (start_tokens(p), mask_of(p, 32, 32)))),
    Case("node-empty-mask", "node", "inpaint mask is empty: nothing to regenerate (1 / white marks the area to repaint; in "
         "ComfyUI paint it with Open in MaskEditor)",
         node_prompt(lambda p: (start_tokens(p), mask_of(p, 96, 128), p["10"]["inputs"].update(value=0.0)))),
    Case("node-vq-encode-odd-size", "node", "H and W multiples of 16",
         node_prompt(lambda p: start_tokens(p, "tcts_catalogue_odd.png"))),
    Case("node-foreign-conditioning", "node", "was it encoded with this model's text encoder?",
         node_prompt(foreign_clip)),
    Case("node-transformer-file-is-vq", "node", "holds a VQ-GAN (VQModel), but an aMUSEd transformer",
         node_prompt(lambda p: p.update({"1b": {"class_type": "TCTSLoadTransformer", "inputs": {
             "transformer_name": "vq_as_transformer.safetensors", "dtype": "auto"}}}) or
             p["3"]["inputs"].update(model=["1b", 0]))),
    Case("node-pickle-vq", "node", "pickle-based checkpoint (.ckpt)",
         node_prompt(lambda p: p.update({"1c": {"class_type": "TCTSLoadVQ", "inputs": {"vq_name": "vq.ckpt"}}}) or
             p["4"]["inputs"].update(vq=["1c", 0]))),
    Case("node-out-of-memory", "node", "out of memory while sampling 1 image(s) of 96x128 px; all models were "
         "unloaded. Try a smaller batch size or resolution", node_prompt(lambda p: None)),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("catalogue"))


def test_the_catalogue_has_at_least_30_rows_with_unique_ids():
    assert len(CASES) + len(NODE_CASES) >= 30
    assert len({c.id for c in CASES + NODE_CASES}) == len(CASES) + len(NODE_CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c.surface in ("library", "cli")], ids=lambda c: c.id)
def test_bad_input_gives_a_clear_error(case, ctx, tmp_path):
    ctx.tmp = tmp_path
    with pytest.raises((ValueError, FileNotFoundError, RuntimeError)) as info:
        case.run(ctx)
    assert case.message in str(info.value)


def test_an_image_with_alpha_is_used_as_rgb(ctx, tmp_path):
    """Defined behaviour rather than an error: the alpha channel is dropped."""
    from tcts.images import load_image

    ctx.tmp = tmp_path
    rgba = load_image(ctx.image("rgba.png", size=(64, 64), mode="RGBA"))
    rgb = load_image(ctx.image("rgb.png", size=(64, 64), mode="RGB"))
    assert torch.equal(rgba, rgb)
    with_alpha = ctx.generate(init_image=torch.cat([rgb, torch.ones(1, 64, 64, 1)], dim=-1))
    assert torch.equal(with_alpha.tokens, ctx.generate(init_image=rgb).tokens)


def test_the_troubleshooting_page_lists_every_row():
    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    missing = [c.id for c in CASES + NODE_CASES if f"`{c.id}`" not in page]
    assert not missing, f"docs/troubleshooting.md lacks rows: {missing}"


def observed_message(case: Case, ctx: Context) -> str:
    try:
        case.run(ctx)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        lines = str(exc).strip().splitlines()
        text = next((line.split("error: ", 1)[1] for line in lines if "error: " in line), lines[0])
        return text.replace(str(ctx.tmp), "…").replace(str(ROOT) + "/", "")
    return "(no error)"


if __name__ == "__main__":  # print the docs/troubleshooting.md rows with the messages users see
    import tempfile

    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            message = observed_message(case, Context(Path(tmp)))
        print(f"| `{case.id}` | {case.surface} | {message.replace('|', '/')} |")
    for case in NODE_CASES:
        print(f"| `{case.id}` | node | {case.message} … |")

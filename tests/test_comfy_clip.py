"""``nodes/clip.py``: ComfyUI ``CLIP`` objects reproduce aMUSEd/Meissonic text conditioning exactly.

Real ComfyUI (tests/support/comfyui.py, in process).  Reference: ``tcts.text.TextEncoder`` (transformers
``CLIPTextModelWithProjection``, ``hidden_states[-2]`` without final LN, projected ``text_embeds``).

``nodes/clip.py`` is taken from the pack as ComfyUI loads it (fixture ``pack``): once ComfyUI is
booted, a bare ``nodes`` is ComfyUI's own ``nodes.py``.
"""
from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import AMUSED, MEISSONIC, read_keys

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parent.parent
CLIP_MODULE = "tcts_pack_nodes_clip"
ATOL = 1e-5

LONG = ("a photo of a red cat with a blue hat in a small green house on the big tree, painting of the sky "
        "with a bird and a dog, low quality, blurry, " * 4).strip()
ODD = "Naïve café — 東京 & <b>\"x\"</b> 100% 🐱!?\tA\nB  ~`@#$^*_+=[]{}|;:',./"
PROMPTS = {"empty": "", "cat": "a photo of a red cat", "long": LONG, "odd": ODD}


@pytest.fixture(scope="module")
def clipmod(pack):
    return pack("nodes.clip")


@pytest.fixture(scope="module", params=["amused", "meissonic"])
def pair(request, clipmod):
    """(folder, ComfyUI CLIP fp32, reference TextEncoder fp32, comfy clip name)."""
    from tcts.checkpoints import load_text_encoder

    folder = AMUSED if request.param == "amused" else MEISSONIC
    clip = clipmod.clip_from_folder(folder / "text_encoder", folder / "tokenizer", dtype=torch.float32)
    ref = load_text_encoder(folder / "text_encoder", folder / "tokenizer")
    return folder, clip, ref, "l" if request.param == "amused" else "h"


def _encode(comfyui, clip, text):
    """Stock ``CLIPTextEncode`` -> (cond, pooled); checks the conditioning layout."""
    (conditioning,) = comfyui.nodes.CLIPTextEncode().encode(clip, text)
    assert isinstance(conditioning, list) and len(conditioning) == 1
    cond, extra = conditioning[0]
    assert set(extra) >= {"pooled_output"}
    return cond, extra["pooled_output"]


def _ids(clip, text, name):
    chunks = clip.tokenize(text)[name]
    return [[t for t, _w in chunk] for chunk in chunks]


# ---- parity with the tcts reference ----------------------------------------------------------


@pytest.mark.parametrize("prompt", list(PROMPTS), ids=list(PROMPTS))
def test_clip_text_encode_matches_reference(comfyui, clipmod, pair, prompt):
    folder, clip, ref, name = pair
    text = PROMPTS[prompt]
    want = ref.encode([text])
    cond, pooled = _encode(comfyui, clip, text)

    chunks = _ids(clip, text, name)
    assert chunks[0] == want.token_ids[0].tolist()  # same ids, same pad (<|endoftext|>)
    assert all(len(c) == 77 for c in chunks)
    assert cond.dtype == torch.float32 and pooled.dtype == torch.float32
    assert cond.shape == (1, 77 * len(chunks), ref.hidden_size)
    assert pooled.shape == (1, ref.projection_dim)
    n_tokens = len(ref.tokenizer(text).input_ids)  # untruncated, with start and end
    if prompt == "long":
        assert n_tokens > 77
    # ComfyUI does not truncate: 77-token chunks (start + 75 + end), concatenated; pooled from the first
    assert len(chunks) == max(1, -(-(n_tokens - 2) // 75))
    first = clipmod.first_chunk(cond)
    assert (first - want.hidden_states).abs().max().item() <= ATOL
    assert (pooled - want.pooled).abs().max().item() <= ATOL


def test_escaped_brackets_are_literal(comfyui, pair):
    """``(x)`` is ComfyUI weight syntax; ``\\(x\\)`` gives aMUSEd's ids for the literal text ``(x)``."""
    folder, clip, ref, name = pair
    want = ref.encode(["a (red) cat"])
    assert _ids(clip, r"a \(red\) cat", name)[0] == want.token_ids[0].tolist()
    cond, pooled = _encode(comfyui, clip, r"a \(red\) cat")
    assert (cond - want.hidden_states).abs().max().item() <= ATOL
    assert (pooled - want.pooled).abs().max().item() <= ATOL
    assert _ids(clip, "a (red) cat", name)[0] != want.token_ids[0].tolist()


def test_clip_object_is_standard(comfyui, pair):
    import comfy.model_patcher
    import comfy.sd

    folder, clip, ref, name = pair
    assert isinstance(clip, comfy.sd.CLIP)
    assert isinstance(clip.patcher, comfy.model_patcher.ModelPatcher)
    inner = getattr(clip.cond_stage_model, f"clip_{name}")
    assert (inner.layer, inner.layer_idx, inner.layer_norm_hidden_state, inner.return_projected_pooled) == \
        ("hidden", -2, False, True)
    want = ref.encode(["a red cat"])
    twin = clip.clone()  # what LoRA / CLIPSetLastLayer nodes do first
    cond, pooled = _encode(comfyui, twin, "a red cat")
    assert (cond - want.hidden_states).abs().max().item() <= ATOL
    assert (pooled - want.pooled).abs().max().item() <= ATOL


def test_default_dtype_is_comfy_text_encoder_dtype(comfyui, clipmod):
    import comfy.model_management as mm

    from tcts.checkpoints import load_text_encoder

    clip = clipmod.clip_from_folder(AMUSED / "text_encoder", AMUSED / "tokenizer")
    expected = mm.text_encoder_dtype(clip.patcher.load_device)
    weight = clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding.weight
    assert weight.dtype == expected
    want = load_text_encoder(AMUSED / "text_encoder", AMUSED / "tokenizer").encode(["a photo of a red cat"])
    cond, pooled = _encode(comfyui, clip, "a photo of a red cat")
    assert cond.dtype == torch.float32  # ComfyUI computes in fp32 with manual-cast weights
    assert (cond - want.hidden_states).abs().max().item() < 2e-2
    assert (pooled - want.pooled).abs().max().item() < 2e-2


# ---- through the executor -----------------------------------------------------------------------

PACK_SOURCE = textwrap.dedent('''
    """Test-only V1 pack (tests/test_comfy_clip.py): outputs a CLIP built by nodes/clip.py."""
    import importlib.util
    import sys
    from pathlib import Path

    import torch


    def _clipmod():
        # nodes/clip.py as loaded with the tcts pack (the test loads the pack first)
        target = Path({path!r}).resolve()
        return next(m for m in list(sys.modules.values())
                    if getattr(m, "__file__", None) and Path(m.__file__).resolve() == target)


    class TctsTestClipFromFolder:
        @classmethod
        def INPUT_TYPES(cls):
            return {{"required": {{"folder": ("STRING", {{"default": ""}})}}}}

        RETURN_TYPES = ("CLIP",)
        FUNCTION = "load"
        CATEGORY = "tcts/testing"

        def load(self, folder):
            folder = Path(folder)
            return (_clipmod().clip_from_folder(folder / "text_encoder", folder / "tokenizer", dtype=torch.float32),)


    class TctsTestConditioningSink:
        @classmethod
        def INPUT_TYPES(cls):
            return {{"required": {{"conditioning": ("CONDITIONING",)}}}}

        RETURN_TYPES = ()
        FUNCTION = "sink"
        OUTPUT_NODE = True
        CATEGORY = "tcts/testing"

        def sink(self, conditioning):
            return {{}}


    NODE_CLASS_MAPPINGS = {{"TctsTestClipFromFolder": TctsTestClipFromFolder,
                           "TctsTestConditioningSink": TctsTestConditioningSink}}
''')


@pytest.fixture(scope="module")
def clip_pack(comfyui, clipmod, tmp_path_factory):
    pack = tmp_path_factory.mktemp("clip_packs") / "tcts_clip_testpack"
    pack.mkdir()
    (pack / "__init__.py").write_text(PACK_SOURCE.format(module=CLIP_MODULE, path=str(ROOT / "nodes" / "clip.py")))
    comfyui.load_custom_nodes(pack)
    return comfyui


@pytest.mark.parametrize("folder", [AMUSED, MEISSONIC], ids=["amused", "meissonic"])
def test_executor_clip_text_encode(clip_pack, folder):
    from tcts.checkpoints import load_text_encoder

    text = "a photo of a red cat"
    res = clip_pack.run({
        "1": {"class_type": "TctsTestClipFromFolder", "inputs": {"folder": str(folder)}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": text}},
        "3": {"class_type": "TctsTestConditioningSink", "inputs": {"conditioning": ["2", 0]}},
    })
    conditioning = res.output("2")
    cond, extra = conditioning[0]
    want = load_text_encoder(folder / "text_encoder", folder / "tokenizer").encode([text])
    assert cond.shape == want.hidden_states.shape
    assert (cond - want.hidden_states).abs().max().item() <= ATOL
    assert (extra["pooled_output"] - want.pooled).abs().max().item() <= ATOL


# ---- single files --------------------------------------------------------------------------------


def test_clip_from_file_tiny_with_own_tokenizer(comfyui, clipmod):
    """The diffusers single file: config.json beside it is used; the folder's tokenizer via tokenizer_dir."""
    from tcts.checkpoints import load_text_encoder

    clip = clipmod.clip_from_file(AMUSED / "text_encoder" / "model.safetensors", torch.float32,
                                  tokenizer_dir=AMUSED / "tokenizer")
    want = load_text_encoder(AMUSED / "text_encoder", AMUSED / "tokenizer").encode(["a photo of a red cat"])
    cond, pooled = _encode(comfyui, clip, "a photo of a red cat")
    assert (cond - want.hidden_states).abs().max().item() <= ATOL
    assert (pooled - want.pooled).abs().max().item() <= ATOL


def test_clip_from_file_tiny_shapes_only(comfyui, clipmod, tmp_path, caplog):
    """No config anywhere: sizes from shapes, heads/activation guessed (warned) -> right shapes only."""
    lone = tmp_path / "tiny_clip.safetensors"
    lone.write_bytes((AMUSED / "text_encoder" / "model.safetensors").read_bytes())
    with caplog.at_level(logging.WARNING):
        clip = clipmod.clip_from_file(lone, torch.float32, tokenizer_dir=AMUSED / "tokenizer")
    assert "guessed" in caplog.text
    cond, pooled = _encode(comfyui, clip, "a red cat")
    assert cond.shape == (1, 77, 16) and pooled.shape == (1, 24)
    assert torch.isfinite(cond).all() and torch.isfinite(pooled).all()


def test_clip_from_file_bare_text_projection(comfyui, clipmod, tmp_path):
    """CLIPSave/OpenCLIP-style ``text_projection`` ([hidden, proj], transposed) is normalized as ComfyUI does."""
    from tcts.checkpoints import load_text_encoder

    sd = load_file(str(MEISSONIC / "text_encoder" / "model.safetensors"))
    sd["text_projection"] = sd.pop("text_projection.weight").t().contiguous()
    path = tmp_path / "clip_h_saved.safetensors"
    save_file(sd, str(path))
    clip = clipmod.clip_from_file(path, torch.float32, tokenizer_dir=MEISSONIC / "tokenizer",
                                  config=MEISSONIC / "text_encoder" / "config.json")
    want = load_text_encoder(MEISSONIC / "text_encoder", MEISSONIC / "tokenizer").encode(["a blue sky"])
    cond, pooled = _encode(comfyui, clip, "a blue sky")
    assert (cond - want.hidden_states).abs().max().item() <= ATOL
    assert (pooled - want.pooled).abs().max().item() <= ATOL


def test_clip_from_file_bundled_tokenizer(comfyui, clipmod, tmp_path, caplog):
    """Standard CLIP vocab (49408) + ComfyUI's bundled tokenizer: ids (pad 49407) and outputs exact.

    A small random encoder whose config is what shapes imply (1 head of 64, gelu), saved with no config.
    """
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from tcts.text import TextEncoder, load_tokenizer

    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=1, hidden_act="gelu", projection_dim=48, max_position_embeddings=77,
                         bos_token_id=0, eos_token_id=2, pad_token_id=1)
    model = CLIPTextModelWithProjection(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "clip_small_std_vocab.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))

    with caplog.at_level(logging.WARNING):
        clip = clipmod.clip_from_file(path, torch.float32)
    ref = TextEncoder(model, load_tokenizer(clipmod.BUNDLED_TOKENIZER))
    for text in ["a photo of a cat", "A Photo of a CAT!", "", LONG]:
        want = ref.encode([text])
        assert _ids(clip, text, "h")[0] == want.token_ids[0].tolist()
        cond, pooled = _encode(comfyui, clip, text)
        assert (cond[:, :77] - want.hidden_states).abs().max().item() <= ATOL
        assert (pooled - want.pooled).abs().max().item() <= ATOL
    assert _ids(clip, "a photo of a cat", "h")[0][:8] == [49406, 320, 1125, 539, 320, 2368, 49407, 49407]


def test_clip_from_file_needs_matching_tokenizer(comfyui, clipmod):
    """The bundled CLIP vocab (49408) cannot drive a 578-token embedding: a clear error, not an IndexError."""

    with pytest.raises(clipmod.CheckpointError, match=r"578-token vocabulary.*49408 tokens"):
        clipmod.clip_from_file(AMUSED / "text_encoder" / "model.safetensors", torch.float32)


def _meta_state(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


def _clip_h_keys(clip_l: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {}
    for k, shape in clip_l.items():
        if k.startswith("text_model.encoder.layers.") and not k.startswith("text_model.encoder.layers.0."):
            continue
        out[k] = tuple({768: 1024, 3072: 4096}.get(s, s) for s in shape)
    for i in range(1, 24):
        for k, shape in list(out.items()):
            if k.startswith("text_model.encoder.layers.0."):
                out[k.replace("layers.0.", f"layers.{i}.", 1)] = shape
    return out


def test_full_size_key_sets_detected(comfyui, clipmod):
    clip_l = read_keys("keys_text_encoder.txt")
    kind, config = clipmod.detect_clip_text(_meta_state(clip_l))
    assert kind == "CLIP-L"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"], config["hidden_act"],
            config["intermediate_size"], config["projection_dim"], config["vocab_size"]) == \
        (768, 12, 12, "quick_gelu", 3072, 768, 49408)
    kind_h, config_h = clipmod.detect_clip_text(_meta_state(_clip_h_keys(clip_l)))
    assert kind_h == "CLIP-H"
    assert (config_h["hidden_size"], config_h["num_hidden_layers"], config_h["num_attention_heads"],
            config_h["hidden_act"], config_h["projection_dim"]) == (1024, 24, 16, "gelu", 1024)


@pytest.mark.parametrize("kind", ["CLIP-L", "CLIP-H"])
def test_full_size_keys_fit_comfy_model(comfyui, clipmod, kind):
    """The full-size HF key set loads strictly into the ComfyUI model we build (on the meta device)."""
    import comfy.ops
    from tcts.checkpoints import load_strict

    keys = read_keys("keys_text_encoder.txt")
    if kind == "CLIP-H":
        keys = _clip_h_keys(keys)
    sd = clipmod.normalize_clip_state_dict(_meta_state(keys))
    _, config = clipmod.detect_clip_text(sd)
    text_config = clipmod._comfy_text_config(config, kind)
    model = clipmod.TctsClipTextModel(text_config, torch.float32, "meta", comfy.ops.manual_cast)
    load_strict(model, sd, kind)


# ---- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, what", [
    (AMUSED / "vqvae" / "diffusion_pytorch_model.safetensors", "VQ-GAN"),
    (AMUSED / "transformer" / "diffusion_pytorch_model.safetensors", "aMUSEd transformer"),
    (MEISSONIC / "transformer" / "diffusion_pytorch_model.safetensors", "Meissonic transformer"),
], ids=["vq", "amused-transformer", "meissonic-transformer"])
def test_not_a_clip_file(comfyui, clipmod, path, what):

    with pytest.raises(clipmod.CheckpointError, match=rf"not a CLIP text encoder: it holds an? {what}.*missing keys"):
        clipmod.clip_from_file(path, torch.float32)


def test_clip_without_projection(comfyui, clipmod, tmp_path):

    sd = load_file(str(AMUSED / "text_encoder" / "model.safetensors"))
    del sd["text_projection.weight"]
    path = tmp_path / "clip_no_proj.safetensors"
    save_file(sd, str(path))
    with pytest.raises(clipmod.CheckpointError, match="without 'text_projection.weight'.*projected pooled"):
        clipmod.clip_from_file(path, torch.float32, tokenizer_dir=AMUSED / "tokenizer")


def test_strict_weight_loading(comfyui, clipmod, tmp_path):

    folder = tmp_path / "text_encoder"
    folder.mkdir()
    (folder / "config.json").write_bytes((AMUSED / "text_encoder" / "config.json").read_bytes())
    sd = load_file(str(AMUSED / "text_encoder" / "model.safetensors"))
    del sd["text_model.encoder.layers.1.mlp.fc2.bias"]
    sd["text_model.extra.weight"] = torch.zeros(2)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(clipmod.CheckpointError, match=r"missing keys: text_model\.encoder\.layers\.1\.mlp\.fc2\.bias.*"
                                              r"unexpected keys: text_model\.extra\.weight"):
        clipmod.clip_from_folder(folder, AMUSED / "tokenizer", dtype=torch.float32)


def test_pickle_and_missing_files_refused(comfyui, clipmod, tmp_path):

    pkl = tmp_path / "clip.bin"
    pkl.write_bytes(b"not really")
    with pytest.raises(clipmod.CheckpointError, match="pickle"):
        clipmod.clip_from_file(pkl)
    empty = tmp_path / "text_encoder"
    empty.mkdir()
    with pytest.raises(clipmod.CheckpointError, match="no model.safetensors"):
        clipmod.clip_from_folder(empty, AMUSED / "tokenizer")
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        clipmod.clip_from_folder(AMUSED / "text_encoder", tmp_path, dtype=torch.float32)

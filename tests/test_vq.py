"""Behaviour specs for the native VQ-GAN (diffusers ``VQModel`` as used by aMUSEd and Meissonic).

Ground truth: ``tests/fixtures/amused-tiny/vq/*.safetensors`` produced by diffusers 0.42.1 (see
``tests/fixtures/README.md``), and the real checkpoint key list ``tests/fixtures/keys/keys_vqvae.txt``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# The repo has no conftest.py / pytest pythonpath setting yet; make ``import tcts`` work from a checkout.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tcts.models.vq import VQModel, vq_config_from_state_dict

FIXTURES_ROOT = Path(__file__).parent / "fixtures"
FIXTURES = FIXTURES_ROOT / "amused-tiny"
KEYS_FILE = FIXTURES_ROOT / "keys" / "keys_vqvae.txt"

# Released aMUSEd-256/512 (and, inferred, Meissonic) vqvae/config.json (docs/models.md, VQ-GAN).
REAL_CONFIG = {
    "_class_name": "VQModel",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 512, 768],
    "down_block_types": ["DownEncoderBlock2D"] * 5,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 64,
    "layers_per_block": 2,
    "lookup_from_codebook": True,
    "mid_block_add_attention": False,
    "norm_num_groups": 32,
    "norm_type": "group",
    "num_vq_embeddings": 8192,
    "out_channels": 3,
    "sample_size": 32,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 5,
    "vq_embed_dim": None,
}
REAL_PARAM_COUNT = 146_244_675
SIZE_KEYS = (
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "num_vq_embeddings",
    "vq_embed_dim",
    "norm_num_groups",
    "in_channels",
    "out_channels",
    "mid_block_add_attention",
    "norm_type",
    "act_fn",
    "down_block_types",
    "up_block_types",
)


def _load_tiny(fixture_dir: Path) -> VQModel:
    config = json.loads((fixture_dir / "vqvae" / "config.json").read_text())
    model = VQModel(config).eval()
    model.load_state_dict(load_file(fixture_dir / "vqvae" / "diffusion_pytorch_model.safetensors"), strict=True)
    return model


@pytest.fixture(scope="module")
def vq() -> VQModel:
    return _load_tiny(FIXTURES)


def _real_keys() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in KEYS_FILE.read_text().splitlines():
        if line.strip():
            name, shape = line.split("\t")
            rows.append((name, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


# ----------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("fixture", ["amused-tiny", "meissonic-tiny"])
def test_tiny_checkpoint_loads_strictly_and_exposes_sizes(fixture: str) -> None:
    model = _load_tiny(FIXTURES_ROOT / fixture)  # strict=True inside
    assert model.downscale_factor == 16
    assert model.codebook_size == 64
    assert model.latent_channels == 8
    assert model.config["block_out_channels"] == [8, 8, 16, 16, 16]
    assert sum(p.numel() for p in model.parameters()) == 117_907


# ----------------------------------------------------------------------------------------------
# Numerics against the reference


def test_encode_matches_reference_latents_and_ids(vq: VQModel) -> None:
    case = load_file(FIXTURES / "vq" / "v1_encode_decode_64x80.safetensors")
    with torch.no_grad():
        latents = vq.encode(case["image"])
        ids = vq.encode_to_ids(case["image"])
    assert latents.shape == case["latents"].shape == (1, 8, 4, 5)
    torch.testing.assert_close(latents, case["latents"], atol=1e-5, rtol=0)
    assert ids.dtype == torch.int64
    assert torch.equal(ids, case["ids"])


def test_decode_matches_reference_unclipped(vq: VQModel) -> None:
    case = load_file(FIXTURES / "vq" / "v1_encode_decode_64x80.safetensors")
    with torch.no_grad():
        decoded = vq.decode_ids(case["ids"])
    assert decoded.shape == (1, 3, 64, 80)
    torch.testing.assert_close(decoded, case["decoded"], atol=1e-4, rtol=0)
    # The reference output leaves [0, 1] with random weights: decode_ids must not clip.
    assert case["decoded"].min() < 0 or case["decoded"].max() > 1
    assert decoded.min() < 0 or decoded.max() > 1


def test_batch_decode_of_non_square_grids_matches_reference(vq: VQModel) -> None:
    case = load_file(FIXTURES / "vq" / "v2_decode_batch2_2x6.safetensors")
    with torch.no_grad():
        decoded = vq.decode_ids(case["ids"])
    assert decoded.shape == (2, 3, 32, 96)
    torch.testing.assert_close(decoded, case["decoded"], atol=1e-4, rtol=0)


def test_inputs_are_converted_to_the_module_dtype(vq: VQModel) -> None:
    case = load_file(FIXTURES / "vq" / "v1_encode_decode_64x80.safetensors")
    with torch.no_grad():
        ids64 = vq.encode_to_ids(case["image"].double())
        decoded = vq.decode_ids(case["ids"].int())
    assert torch.equal(ids64, case["ids"])
    assert decoded.dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# Config inference from a bare safetensors file


@pytest.mark.parametrize("fixture", ["amused-tiny", "meissonic-tiny"])
def test_config_inferred_from_tiny_state_dict_reproduces_config_json(fixture: str) -> None:
    folder = FIXTURES_ROOT / fixture / "vqvae"
    state_dict = load_file(folder / "diffusion_pytorch_model.safetensors")
    expected = json.loads((folder / "config.json").read_text())
    inferred = vq_config_from_state_dict(state_dict, norm_num_groups=4)
    assert {k: inferred[k] for k in SIZE_KEYS} == {k: expected[k] for k in SIZE_KEYS}
    VQModel(inferred).load_state_dict(state_dict, strict=True)


def test_config_inference_defaults_to_32_groups_and_matches_real_checkpoint() -> None:
    meta_state = {name: torch.empty(shape, device="meta") for name, shape in _real_keys()}
    inferred = vq_config_from_state_dict(meta_state)
    assert inferred["norm_num_groups"] == 32
    assert {k: inferred[k] for k in SIZE_KEYS} == {k: REAL_CONFIG[k] for k in SIZE_KEYS}


def test_config_inference_rejects_a_non_vq_state_dict() -> None:
    transformer = load_file(FIXTURES / "transformer" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match=r"missing keys .*quantize\.embedding\.weight"):
        vq_config_from_state_dict(transformer)


def test_mid_block_attention_variant_is_built_and_detected() -> None:
    config = {**json.loads((FIXTURES / "vqvae" / "config.json").read_text()), "mid_block_add_attention": True}
    model = VQModel(config)
    keys = model.state_dict().keys()
    for part in ("encoder", "decoder"):
        for name in ("group_norm", "to_q", "to_k", "to_v", "to_out.0"):
            assert f"{part}.mid_block.attentions.0.{name}.weight" in keys
    assert vq_config_from_state_dict(model.state_dict(), norm_num_groups=4)["mid_block_add_attention"] is True
    with torch.no_grad():
        assert model.decode_ids(torch.zeros(1, 1, 2, dtype=torch.long)).shape == (1, 3, 16, 32)


# ----------------------------------------------------------------------------------------------
# Full-size structure (meta device, no weights)


def test_full_size_structure_equals_released_checkpoint() -> None:
    with torch.device("meta"):
        model = VQModel(REAL_CONFIG)
    assert sum(p.numel() for p in model.parameters()) == REAL_PARAM_COUNT
    assert model.downscale_factor == 16
    assert model.codebook_size == 8192
    assert model.latent_channels == 64
    ours = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    assert ours == _real_keys()  # same names, shapes and order (277 tensors)


# ----------------------------------------------------------------------------------------------
# Bad inputs


def test_encode_rejects_wrong_channel_count(vq: VQModel) -> None:
    with pytest.raises(ValueError, match=r"images must have 3 channels"):
        vq.encode_to_ids(torch.rand(1, 4, 32, 32))


def test_encode_rejects_non_4d_images(vq: VQModel) -> None:
    with pytest.raises(ValueError, match=r"images must be a \[B, 3, H, W\] tensor"):
        vq.encode_to_ids(torch.rand(3, 32, 32))


@pytest.mark.parametrize("height,width", [(40, 32), (32, 24), (8, 16)])
def test_encode_rejects_sizes_not_multiple_of_16(vq: VQModel, height: int, width: int) -> None:
    expected = rf"images height and width must be positive multiples of 16, got H={height}, W={width}"
    with pytest.raises(ValueError, match=expected):
        vq.encode_to_ids(torch.rand(1, 3, height, width))


@pytest.mark.parametrize("bad", [-1, 64, 71])
def test_decode_rejects_ids_outside_codebook(vq: VQModel, bad: int) -> None:
    ids = torch.zeros(1, 2, 2, dtype=torch.long)
    ids[0, 1, 1] = bad
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 64\)"):
        vq.decode_ids(ids)


def test_decode_rejects_float_or_wrongly_shaped_ids(vq: VQModel) -> None:
    with pytest.raises(ValueError, match=r"ids must be an integer tensor"):
        vq.decode_ids(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"ids must be a \[B, h, w\] integer tensor"):
        vq.decode_ids(torch.zeros(2, 2, dtype=torch.long))


def test_unsupported_configs_are_rejected() -> None:
    config = json.loads((FIXTURES / "vqvae" / "config.json").read_text())
    with pytest.raises(ValueError, match=r"norm_type must be 'group'"):
        VQModel({**config, "norm_type": "spatial"})
    with pytest.raises(ValueError, match=r"act_fn must be 'silu'"):
        VQModel({**config, "act_fn": "relu"})

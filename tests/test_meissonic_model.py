"""Behaviour specs for the native Meissonic transformer (``tcts.models.meissonic``).

Ground truth: ``tests/fixtures/meissonic-tiny`` produced by ``viiika/Meissonic`` ``src/transformer.py``
on diffusers 0.33.1 / torch 2.13.0+cpu (see ``tests/fixtures/README.md`` sections 3 and 5-7), and
the released checkpoint's key list ``tests/fixtures/keys/keys_meissonic_transformer.txt``.

Numerics note: the reference fixtures were produced with ATen's AVX2 CPU kernels. On an AVX-512
machine the fp32 logits differ from them by < 1e-6 (bf16 by a few bf16 ulps), because vectorised
reductions round differently; ``test_bit_exact_with_reference_kernels`` reruns everything in a
subprocess with ``ATEN_CPU_CAPABILITY=avx2`` and requires 0.0 differences there.
"""
from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tcts.models.meissonic import (
    MEISSONIC_RELEASED_CONFIG,
    MeissonicTransformer,
    check_resolution,
    meissonic_config_from_state_dict,
    prepare_image_ids,
    prepare_text_ids,
    reference_pipeline_runs,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "meissonic-tiny"
KEYS_FILE = Path(__file__).parent / "fixtures" / "keys" / "keys_meissonic_transformer.txt"
README = json.loads((FIXTURES / "README.json").read_text())

# case -> (model subfolder, model dtype); inputs are used exactly as stored.
CASES = {
    "c1_grid8x8_t3_cfgdup": ("transformer", torch.float32),
    "c2_grid4x12_t0_nonsquare": ("transformer", torch.float32),
    "c3_grid8x8_allmask_t47_clip": ("transformer", torch.float32),
    "c4_bf16_of_c1": ("transformer", torch.bfloat16),
    "c5_fp16_of_c1": ("transformer", torch.float16),
    "n1_nodown_grid6x10_t5": ("transformer_nodown", torch.float32),
}
# README section 7: fp32 <= 1e-5; bf16 / fp16 "dtype-flow" tolerances unless the op order matches.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 6e-2, torch.float16: 1e-2}
E2E = {
    "t2i_1024x64": "transformer",
    "t2i_1024x32_smallest": "transformer",
    "t2i_nodown_128x96": "transformer_nodown",
}
RELEASED_PARAMS = 1_006_946_304


def load_config(sub: str) -> dict:
    return json.loads((FIXTURES / sub / "config.json").read_text())


def load_model(sub: str, dtype: torch.dtype = torch.float32) -> MeissonicTransformer:
    """Strict load. ``assign=True`` keeps the safetensors tensors as parameters, as diffusers 0.33.1
    ``from_pretrained`` does (it matters only at the 1e-7 level, via GEMV memory alignment)."""
    model = MeissonicTransformer(load_config(sub))
    model.load_state_dict(load_file(FIXTURES / sub / "diffusion_pytorch_model.safetensors"), strict=True,
                          assign=True)
    return model.to(dtype).eval()


def load_case(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "cases" / f"{name}.safetensors")


def run_case(model: MeissonicTransformer, t: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(t["hidden_states"], t["encoder_hidden_states"], t["pooled_projections"],
                     t["micro_conds"], t["timestep"])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ------------------------------------------------------------------------------------------------
# loading and structure
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sub,multiple", [("transformer", 2), ("transformer_nodown", 1)])
def test_strict_load_of_tiny_checkpoints(sub: str, multiple: int) -> None:
    model = load_model(sub)
    assert model.family == "meissonic"
    assert (model.codebook_size, model.vocab_size, model.mask_token_id) == (64, 72, 71)
    assert model.token_grid_multiple == multiple
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == README["components"][sub]["num_params"]


def read_key_list() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line.strip():
            name, shape = line.split("\t")
            keys[name] = tuple(ast.literal_eval(shape))
    return keys


def test_released_config_on_meta_device_matches_real_keys() -> None:
    with torch.device("meta"):
        model = MeissonicTransformer(MEISSONIC_RELEASED_CONFIG)
    assert sum(p.numel() for p in model.parameters()) == RELEASED_PARAMS
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == read_key_list()
    assert (model.codebook_size, model.vocab_size, model.mask_token_id) == (8192, 8256, 8255)
    # Shape-only forward at the reference's 1024 px: 64x64 tokens -> 32x32 transformer grid.
    ids = torch.full((2, 64, 64), model.mask_token_id, device="meta")
    out = model(ids, torch.empty(2, 77, 1024, device="meta"), torch.empty(2, 1024, device="meta"),
                torch.empty(2, 5, device="meta"), 47)
    assert out.shape == (2, 8192, 64, 64)


# ------------------------------------------------------------------------------------------------
# reference cases
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_case_logits_match_reference(case: str) -> None:
    sub, dtype = CASES[case]
    t = load_case(case)
    out = run_case(load_model(sub, dtype), t)
    assert out.dtype == t["logits"].dtype == dtype
    assert out.shape == t["logits"].shape
    diff = max_diff(out, t["logits"])
    print(f"{case}: max|diff| = {diff:.3g} ({dtype})")
    assert diff <= TOLERANCE[dtype]


def capture(model: MeissonicTransformer) -> dict[str, torch.Tensor]:
    """Forward hooks on every named sub-module, recorded with the fixture naming:
    ``out.<path>[.<i>]`` and ``in.<path>.<i or kwarg>[.<i>]``."""
    got: dict[str, torch.Tensor] = {}

    def flat(prefix: str, value) -> None:
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                flat(f"{prefix}.{i}", v)
        elif torch.is_tensor(value):
            got[prefix] = value

    def make(name: str):
        def hook(_module, args, kwargs, output) -> None:
            for i, a in enumerate(args):
                flat(f"in.{name}.{i}", a)
            for k, a in kwargs.items():
                flat(f"in.{name}.{k}", a)
            if torch.is_tensor(output):
                got[f"out.{name}"] = output
            else:
                flat(f"out.{name}", output)
        return hook

    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(make(name), with_kwargs=True)
    return got


@pytest.mark.parametrize("case", ["c1_grid8x8_t3_cfgdup", "n1_nodown_grid6x10_t5"])
def test_intermediates_match_reference(case: str) -> None:
    sub, dtype = CASES[case]
    model = load_model(sub, dtype)
    got = capture(model)
    run_case(model, load_case(case))
    expected = load_file(FIXTURES / "cases" / f"{case}.intermediates.safetensors")
    assert set(expected) <= set(got), f"not hooked: {sorted(set(expected) - set(got))}"
    diffs = {name: max_diff(got[name], ref) for name, ref in expected.items()
             if got[name].shape == ref.shape}
    assert len(diffs) == len(expected), "shape mismatch"
    print(f"{case}: {len(diffs)} intermediates, worst {max(diffs.values()):.3g}")
    assert max(diffs.values()) <= 1e-5, {k: v for k, v in diffs.items() if v > 1e-5}


def all_id_sources() -> list[tuple[str, str, dict[str, torch.Tensor]]]:
    sources = [(name, sub, load_case(name)) for name, (sub, _) in CASES.items()]
    sources += [(name, sub, load_file(FIXTURES / "e2e" / f"{name}.safetensors")) for name, sub in E2E.items()]
    return sources


def test_position_id_builders_equal_reference_ids() -> None:
    for name, sub, t in all_id_sources():
        model = MeissonicTransformer(load_config(sub))
        tokens = t["hidden_states"] if "hidden_states" in t else t["step_input_tokens"][0]
        rows, cols = model.check_resolution(tokens.shape[-2], tokens.shape[-1])
        img_ids = prepare_image_ids(rows, cols)
        txt_ids = prepare_text_ids(t["encoder_hidden_states"].shape[1], dtype=t["txt_ids"].dtype)
        assert img_ids.dtype == t["img_ids"].dtype and torch.equal(img_ids, t["img_ids"]), name
        assert txt_ids.dtype == t["txt_ids"].dtype and torch.equal(txt_ids, t["txt_ids"]), name


@pytest.mark.parametrize("run", list(E2E))
def test_e2e_step0_logits(run: str) -> None:
    e = load_file(FIXTURES / "e2e" / f"{run}.safetensors")
    # Step 0 = first sampler step: the fully masked grid duplicated for CFG, timestep = step index n-1.
    assert e["timesteps"].tolist() == [3, 2, 1, 0]
    tokens = torch.cat([e["step_input_tokens"][0]] * 2)
    assert bool((tokens == 71).all())
    model = load_model(E2E[run])
    with torch.no_grad():
        out = model(tokens, e["encoder_hidden_states"], e["pooled_projections"], e["micro_conds"],
                    e["timesteps"][:1])
    diff = max_diff(out, e["step0_transformer_output"])
    print(f"{run}: step-0 max|diff| = {diff:.3g}")
    assert diff <= 1e-5


def test_timestep_accepts_int_and_tensor_forms() -> None:
    model = load_model("transformer")
    t = load_case("c1_grid8x8_t3_cfgdup")
    args = (t["hidden_states"], t["encoder_hidden_states"], t["pooled_projections"], t["micro_conds"])
    with torch.no_grad():
        ref = model(*args, t["timestep"])
        assert torch.equal(model(*args, 3), ref)
        assert torch.equal(model(*args, torch.tensor(3)), ref)
        assert not torch.equal(model(*args, 2), ref)


_EXACT_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import tests.test_meissonic_model as T
from safetensors.torch import load_file
res = {"capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
for case, (sub, dtype) in T.CASES.items():
    t = T.load_case(case)
    model = T.load_model(sub, dtype)
    got = T.capture(model)
    res[case] = T.max_diff(T.run_case(model, t), t["logits"])
    p = T.FIXTURES / "cases" / f"{case}.intermediates.safetensors"
    if p.exists():
        res[case + ".intermediates"] = max(T.max_diff(got[k], v) for k, v in load_file(p).items())
for run, sub in T.E2E.items():
    e = load_file(T.FIXTURES / "e2e" / f"{run}.safetensors")
    with torch.no_grad():
        out = T.load_model(sub)(torch.cat([e["step_input_tokens"][0]] * 2), e["encoder_hidden_states"],
                                e["pooled_projections"], e["micro_conds"], e["timesteps"][:1])
    res[run] = T.max_diff(out, e["step0_transformer_output"])
print(json.dumps(res))
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="AVX2 kernels are x86 only")
@pytest.mark.skipif(not torch.__version__.startswith("2.13.0"), reason="fixtures were made with torch 2.13.0")
def test_bit_exact_with_reference_kernels() -> None:
    """All 6 cases (fp32, bf16, fp16), all intermediates and the 3 e2e step-0 logits are bitwise equal
    to the reference when ATen uses the same (AVX2) kernels as the machine that made the fixtures."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", _EXACT_SCRIPT, str(REPO)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res.pop("capability") != "AVX2":
        pytest.skip("this CPU cannot run ATen's AVX2 kernels")
    res.pop("torch")
    print(res)
    assert res and all(v == 0.0 for v in res.values()), res


# ------------------------------------------------------------------------------------------------
# config inference, resolution rule, input validation
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sub", ["transformer", "transformer_nodown"])
def test_config_from_tiny_state_dict(sub: str) -> None:
    sd = load_file(FIXTURES / sub / "diffusion_pytorch_model.safetensors")
    expected = {k: v for k, v in load_config(sub).items() if not k.startswith("_")}
    inferred = meissonic_config_from_state_dict(sd, axes_dims_rope=[4, 6, 6])
    assert {k: v for k, v in inferred.items() if not k.startswith("_")} == expected
    MeissonicTransformer(inferred).load_state_dict(sd, strict=True)
    with pytest.raises(ValueError, match="axes_dims_rope"):  # head_dim 16: not inferable
        meissonic_config_from_state_dict(sd)


def test_config_from_released_state_dict_shapes() -> None:
    with torch.device("meta"):
        sd = MeissonicTransformer(MEISSONIC_RELEASED_CONFIG).state_dict()
    assert meissonic_config_from_state_dict(sd) == MEISSONIC_RELEASED_CONFIG  # axes default [16, 56, 56]


def test_config_inference_rejects_other_models() -> None:
    sd = {"transformer_layers.0.attn1.to_q.weight": torch.zeros(4, 4), "encoder_proj.weight": torch.zeros(4, 4)}
    with pytest.raises(ValueError, match="embed.embeddings.weight") as err:
        meissonic_config_from_state_dict(sd)
    assert "context_embedder.weight" in str(err.value) and "norm_q" in str(err.value)


def test_bad_configs_are_rejected() -> None:
    cfg = load_config("transformer")
    with pytest.raises(ValueError, match="pooled_projection_dim"):
        MeissonicTransformer({**cfg, "pooled_projection_dim": 24})
    with pytest.raises(ValueError, match="axes_dims_rope"):
        MeissonicTransformer({**cfg, "axes_dims_rope": [4, 4, 4]})
    with pytest.raises(ValueError, match="upsample"):
        MeissonicTransformer({**cfg, "upsample": False})


def test_resolution_rule() -> None:
    # downsample models need even token grids (multiples of 32 px); others take any positive grid.
    assert check_resolution(64, 64, downsample=True) == (32, 32)
    assert check_resolution(64, 4, downsample=True) == (32, 2)
    assert check_resolution(5, 7, downsample=False) == (5, 7)
    for bad in [(63, 64), (64, 3), (0, 64)]:
        with pytest.raises(ValueError, match="even"):
            check_resolution(*bad, downsample=True)
    with pytest.raises(ValueError, match="width_tokens=0"):
        check_resolution(4, 0, downsample=False)
    # The reference pipeline runs only where its pixel-height rule gives ids of the right size
    # (README.json "reference_pipeline_resolution_limits"); our ids equal its ids wherever it runs.
    assert README["reference_pipeline_resolution_limits"].keys() == {"transformer@512x512",
                                                                      "transformer_nodown@1024x64"}
    assert not reference_pipeline_runs(32, 32, height_px=512, downsample=True)
    assert not reference_pipeline_runs(64, 4, height_px=1024, downsample=False)
    assert reference_pipeline_runs(64, 4, height_px=1024, downsample=True)  # t2i_1024x64
    assert reference_pipeline_runs(64, 2, height_px=1024, downsample=True)  # t2i_1024x32_smallest
    assert reference_pipeline_runs(8, 6, height_px=128, downsample=False)  # t2i_nodown_128x96
    assert not reference_pipeline_runs(64, 3, height_px=1024, downsample=True)  # odd width


def test_native_model_runs_where_the_reference_pipeline_cannot() -> None:
    """512x512 px (32x32 tokens) with the 1024-style model crashes in the reference pipeline; here the
    ids come from the 16x16 transformer grid and the forward works."""
    model = load_model("transformer")
    t = load_case("c1_grid8x8_t3_cfgdup")
    tokens = torch.randint(0, 64, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(tokens, t["encoder_hidden_states"], t["pooled_projections"], t["micro_conds"], 3)
    assert out.shape == (2, 64, 32, 32) and torch.isfinite(out).all()


def test_odd_grid_without_downsample_is_fine() -> None:
    model = load_model("transformer_nodown")
    t = load_case("n1_nodown_grid6x10_t5")
    with torch.no_grad():
        out = model(t["hidden_states"][:, :5, :7], t["encoder_hidden_states"], t["pooled_projections"],
                    t["micro_conds"], 5)
    assert out.shape == (2, 64, 5, 7)


def test_bad_inputs_raise_clear_errors() -> None:
    model = load_model("transformer")
    t = load_case("c1_grid8x8_t3_cfgdup")
    ids, text, pooled, micro = (t["hidden_states"], t["encoder_hidden_states"], t["pooled_projections"],
                                t["micro_conds"])
    with pytest.raises(ValueError, match=r"height_tokens=7.*even"):
        model(ids[:, :7], text, pooled, micro, 3)
    with pytest.raises(ValueError, match=r"width_tokens=5.*even"):
        model(ids[:, :, :5], text, pooled, micro, 3)
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*32"):
        model(ids, torch.zeros(2, 77, 16), pooled, micro, 3)
    with pytest.raises(ValueError, match=r"pooled_text_emb.*32"):
        model(ids, text, torch.zeros(2, 24), micro, 3)
    with pytest.raises(ValueError, match=r"micro_conds.*5"):
        model(ids, text, pooled, micro[:, :4], 3)
    with pytest.raises(ValueError, match=r"encoder_hidden_states.*B=2"):
        model(ids, text[:1], pooled, micro, 3)
    with pytest.raises(ValueError, match="input_ids"):
        model(ids.float(), text, pooled, micro, 3)

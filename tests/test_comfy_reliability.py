"""Faults and hostile inputs inside a real ComfyUI: clear node errors, clean interrupts, OOM recovery,
and fuzzed node inputs that end in nothing but validation errors or clear messages."""
from __future__ import annotations

import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.comfy_prompts import txt2img
from tests.helpers import AMUSED
from tests.support.comfyui import PromptExecutionError, PromptValidationError
from tests.test_bad_input_catalogue import NODE_CASES

pytestmark = pytest.mark.comfyui

CLEAR_ERRORS = ("ValueError", "CheckpointError", "OutOfMemory", "FileNotFoundError", "NonFiniteLogitsError")


@pytest.fixture(scope="module")
def files(comfy, tmp_path_factory):
    """Inputs the node rows refer to: images in ComfyUI's input folder, wrong files in model folders."""
    Image.open(AMUSED / "inputs" / "image_128x96.png").save(comfy.input_dir / "tcts_catalogue.png")
    Image.new("RGB", (100, 90)).save(comfy.input_dir / "tcts_catalogue_odd.png")
    folder = tmp_path_factory.mktemp("wrong-files")
    shutil.copy(AMUSED / "vqvae" / "diffusion_pytorch_model.safetensors", folder / "vq_as_transformer.safetensors")
    (folder / "vq.ckpt").write_bytes(b"\x80\x04.")
    comfy.add_model_folder("diffusion_models", folder)
    comfy.add_model_folder("vae", folder)
    return folder


def out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


@pytest.mark.parametrize("case", NODE_CASES, ids=lambda c: c.id)
def test_node_bad_input_fails_that_node_with_a_clear_message(comfy, files, pack, monkeypatch, case):
    prompt = txt2img()
    case.run(prompt)
    if case.id == "node-out-of-memory":
        monkeypatch.setattr(pack("nodes.samplers"), "run", out_of_memory)
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(prompt)
    assert case.message in info.value.exception_message
    if case.id == "node-out-of-memory":
        assert comfy.model_management.current_loaded_models == []


def interrupt_at(comfy, monkeypatch, step: int):
    original = comfy._server.send_sync

    def send(event, data, sid=None):
        if event == "progress" and data.get("node") == "3" and data.get("value") == step:
            comfy.interrupt()
        return original(event, data, sid)

    monkeypatch.setattr(comfy._server, "send_sync", send)
    return original


@pytest.mark.parametrize("sampler,node", [("purity", "TCTSPersistentSampler"),
                                          ("random-revoke", "TCTSRevocableSampler")])
def test_interrupt_at_every_step_boundary_leaves_comfyui_consistent(comfy, monkeypatch, sampler, node):
    extra = {"repredict_visible": False} if node == "TCTSRevocableSampler" else None
    prompt = txt2img(sampler, node=node, extra=extra, steps=5)
    baseline = comfy.run(prompt).output("3", 0).tokens
    for step in range(1, 5):
        original = interrupt_at(comfy, monkeypatch, step)
        result = comfy.run(prompt, check=False)
        monkeypatch.setattr(comfy._server, "send_sync", original)
        assert not result.success and any(e[0] == "execution_interrupted" for e in result.events), step
        assert torch.equal(comfy.run(prompt).output("3", 0).tokens, baseline), step


def test_after_an_out_of_memory_error_the_next_run_works(comfy, pack, monkeypatch):
    baseline = comfy.run(txt2img()).output("3", 0).tokens
    with monkeypatch.context() as patch:
        patch.setattr(pack("nodes.samplers"), "run", out_of_memory)
        with pytest.raises(PromptExecutionError):
            comfy.run(txt2img())
    assert torch.equal(comfy.run(txt2img()).output("3", 0).tokens, baseline)


ints = st.one_of(st.integers(-64, 640), st.sampled_from([0, 1, 16, 32, 64, 96, 128]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-5, 30))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(width=ints, height=ints, batch=st.integers(-2, 3), steps=st.integers(-2, 6), cfg=floats, seed=st.integers(-5, 2**64),
       schedule=st.sampled_from(["cosine", "linear", "arccos", "square", "zigzag", ""]),
       choice=floats, temperature=floats, preview=st.sampled_from(["colours", "decode", "none", "x"]),
       sampler=st.sampled_from(["purity", "uniform", "random-revoke", "best"]))
def test_fuzzed_sampler_inputs_end_in_results_or_clear_errors(comfy, width, height, batch, steps, cfg, seed,
                                                              schedule, choice, temperature, preview, sampler):
    node = "TCTSRevocableSampler" if sampler == "random-revoke" else "TCTSPersistentSampler"
    extra = {"repredict_visible": False} if node == "TCTSRevocableSampler" else None
    prompt = txt2img(sampler, node=node, extra=extra, width=width, height=height, batch_size=batch, steps=steps,
                     cfg=cfg, seed=seed, schedule=schedule, choice_temperature=choice, temperature=temperature,
                     preview=preview)
    try:
        result = comfy.run(prompt)
    except PromptValidationError:
        return
    except PromptExecutionError as exc:
        details = exc.details or {}
        assert details.get("exception_type", "").split(".")[-1] in CLEAR_ERRORS, exc
        return
    assert result.output("4", 0).shape == (batch, height, width, 3)

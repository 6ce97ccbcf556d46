"""Our nodes inside a real ComfyUI 0.3.75 (in-process executor and one HTTP server run)."""
from __future__ import annotations

import io as _io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.comfy_prompts import MODEL, txt2img
from tests.helpers import AMUSED, MEISSONIC, load_case
from tests.support.comfyui import ComfyUIServer, PromptExecutionError, PromptValidationError, history_images

pytestmark = pytest.mark.comfyui

NODE_IDS = {"TCTSLoadModel", "TCTSLoadTransformer", "TCTSLoadVQ", "TCTSLoadTextEncoder", "TCTSTextEncode",
            "TCTSPersistentSampler", "TCTSRevocableSampler", "TCTSVQDecode", "TCTSVQEncode"}
def test_pack_registers_every_node_under_one_category(comfy, pack):
    info = comfy.object_info()
    assert NODE_IDS <= set(info)
    for node_id in NODE_IDS:
        assert info[node_id]["category"].split("/")[0] == "tcts"
        assert info[node_id]["display_name"] and info[node_id]["description"]
        comfy.node_class(node_id).GET_SCHEMA().validate()
    spec = info["TCTSLoadModel"]["input"]["required"]["model_name"]
    options = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert MODEL in options


def test_txt2img_in_comfyui_reproduces_the_reference_tokens_and_image(comfy):
    result = comfy.run(txt2img())
    ref = load_case(AMUSED / "e2e" / "t2i_128x96.safetensors")
    assert torch.equal(result.output("3", 0).tokens, ref["final_tokens"])
    image = result.output("4", 0)
    assert image.shape == (1, 128, 96, 3)
    assert np.abs(image.numpy() - np.load(AMUSED / "e2e" / "t2i_128x96.image.npy")).max() <= 1e-4
    saved = result.images("5")
    assert len(saved) == 1 and Image.open(saved[0]).size == (96, 128)


def test_stock_clip_text_encode_conditioning_samples_the_same_tokens(comfy):
    prompt = txt2img()
    prompt["6"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 2], "text": "a photo of a red cat"}}
    prompt["7"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 2], "text": ""}}
    prompt["3"]["inputs"].update(positive=["6", 0], negative=["7", 0])
    ref = load_case(AMUSED / "e2e" / "t2i_128x96.safetensors")
    assert torch.equal(comfy.run(prompt).output("3", 0).tokens, ref["final_tokens"])


@pytest.mark.parametrize("sampler,node,extra", [("uniform", "TCTSPersistentSampler", {}),
                                                ("random-revoke", "TCTSRevocableSampler", {"repredict_visible": False})])
def test_every_strategy_node_runs_a_batch(comfy, sampler, node, extra):
    result = comfy.run(txt2img(sampler, node=node, extra=extra, batch_size=2, width=64, height=64, steps=3))
    assert result.output("3", 0).tokens.shape == (2, 4, 4)
    assert result.output("4", 0).shape == (2, 64, 64, 3)


def write_input_image(comfy, name, rgba=None):
    image = Image.open(AMUSED / "inputs" / "image_256x256.png").convert("RGB")
    if rgba is not None:
        image.putalpha(rgba)
    image.save(comfy.input_dir / name)


def test_img2img_and_inpaint_nodes_reproduce_the_reference(comfy):
    shutil.copy(AMUSED / "inputs" / "image_128x96.png", comfy.input_dir / "tcts_i2i.png")
    prompt = txt2img(prompt="a photo of a blue bird", extra={"start_tokens": ["9", 0], "strength": 0.5})
    prompt["8"] = {"class_type": "LoadImage", "inputs": {"image": "tcts_i2i.png"}}
    prompt["9"] = {"class_type": "TCTSVQEncode", "inputs": {"vq": ["1", 1], "image": ["8", 0]}}
    ref = load_case(AMUSED / "e2e" / "img2img_128x96_s05.safetensors")
    assert torch.equal(comfy.run(prompt).output("3", 0).tokens, ref["final_tokens"])

    mask = Image.open(AMUSED / "inputs" / "mask_256x256.png").convert("L")
    write_input_image(comfy, "tcts_inpaint.png", rgba=mask.point(lambda v: 255 - v))  # LoadImage mask = 1 - alpha
    prompt = txt2img(schedule="linear", extra={"start_tokens": ["9", 0], "mask": ["8", 1], "strength": 1.0})
    prompt["8"] = {"class_type": "LoadImage", "inputs": {"image": "tcts_inpaint.png"}}
    prompt["9"] = {"class_type": "TCTSVQEncode", "inputs": {"vq": ["1", 1], "image": ["8", 0]}}
    ref = load_case(AMUSED / "e2e" / "inpaint_256x256.safetensors")
    assert torch.equal(comfy.run(prompt).output("3", 0).tokens, ref["final_tokens"])


def test_meissonic_folder_reproduces_its_reference_through_the_same_nodes(comfy):
    prompt = txt2img(model="meissonic-tiny", prompt="a photo of a red cat", width=64, height=1024, cfg=9.0)
    prompt["2"]["inputs"]["negative"] = "low quality, blurry"
    ref = load_case(MEISSONIC / "e2e" / "t2i_1024x64.safetensors")
    assert torch.equal(comfy.run(prompt).output("3", 0).tokens, ref["final_tokens"])


@pytest.mark.parametrize("sampler,node,extra", [("uniform", "TCTSPersistentSampler", {}),
                                                ("random-revoke", "TCTSRevocableSampler", {"repredict_visible": False})])
def test_meissonic_runs_every_strategy_node(comfy, sampler, node, extra):
    result = comfy.run(txt2img(sampler, node=node, extra=extra, model="meissonic-tiny", width=64, height=1024,
                               steps=3, cfg=9.0))
    assert result.output("4", 0).shape == (1, 1024, 64, 3)


@pytest.mark.parametrize("change,error_type", [
    (lambda p: p["3"]["inputs"].update(steps=0), "value_smaller_than_min"),
    (lambda p: p["5"]["inputs"].update(images=["3", 0]), "return_type_mismatch"),
    (lambda p: p["4"]["inputs"].update(tokens=["4", 0]), "return_type_mismatch"),
])
def test_bad_wiring_and_values_are_rejected_by_validation(comfy, change, error_type):
    prompt = txt2img()
    change(prompt)
    with pytest.raises(PromptValidationError) as info:
        comfy.run(prompt)
    assert error_type in str(info.value) or error_type in info.value.error_types


@pytest.mark.parametrize("change,message", [
    (lambda p: p["3"]["inputs"].update(width=100), "width must be a positive multiple of 32 px"),
    (lambda p: p["1"]["inputs"].update(model_name="../../etc"), "is not among the installed models"),
    (lambda p: p["1"]["inputs"].update(model_name="/etc"), "is not among the installed models"),
])
def test_bad_values_fail_the_node_with_a_clear_message(comfy, change, message):
    prompt = txt2img()
    change(prompt)
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(prompt)
    assert message in info.value.exception_message


def test_conditioning_from_another_model_is_named_as_the_problem(comfy):
    prompt = txt2img()
    prompt["6"] = {"class_type": "TCTSLoadModel", "inputs": {"model_name": "meissonic-tiny", "dtype": "auto"}}
    prompt["2"]["inputs"]["clip"] = ["6", 2]
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(prompt)
    assert "was it encoded with this model's text encoder?" in info.value.exception_message


def test_interrupt_mid_sampling_ends_cleanly_and_the_next_run_matches(comfy, monkeypatch):
    baseline = comfy.run(txt2img(steps=6)).output("3", 0).tokens
    original = comfy._server.send_sync

    def interrupt_at_step_2(event, data, sid=None):
        if event == "progress" and data.get("node") == "3" and data.get("value") == 2:
            comfy.interrupt()
        return original(event, data, sid)

    monkeypatch.setattr(comfy._server, "send_sync", interrupt_at_step_2)
    interrupted = comfy.run(txt2img(steps=6), check=False)
    monkeypatch.setattr(comfy._server, "send_sync", original)
    assert not interrupted.success
    assert any(e[0] == "execution_interrupted" for e in interrupted.events)
    assert torch.equal(comfy.run(txt2img(steps=6)).output("3", 0).tokens, baseline)


def test_a_second_run_after_unloading_all_models_gives_identical_output(comfy):
    first = comfy.run(txt2img())
    comfy.model_management.unload_all_models()
    second = comfy.run(txt2img())
    assert torch.equal(first.output("3", 0).tokens, second.output("3", 0).tokens)
    assert torch.equal(first.output("4", 0), second.output("4", 0))


@pytest.mark.comfyui_server
def test_real_server_runs_our_workflow_and_serves_the_png(comfy_models):
    from tests.conftest import ROOT

    with ComfyUIServer(custom_nodes=[ROOT], extra_model_paths={"tcts_models": {"base_path": str(comfy_models),
                                                                               "tcts": "."}}) as server:
        entry = server.run(txt2img())
        images = history_images(entry, "5")
        assert len(images) == 1
        png = server.view(images[0]["filename"], images[0].get("subfolder", ""), images[0].get("type", "output"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(_io.BytesIO(png)).size == (96, 128)


def test_model_default_schedule_uses_the_checkpoints_scheduler_config(comfy):
    default = comfy.run(txt2img(schedule="model default")).output("3", 0).tokens
    cosine = comfy.run(txt2img(schedule="cosine")).output("3", 0).tokens  # the fixture's scheduler says cosine
    assert torch.equal(default, cosine)

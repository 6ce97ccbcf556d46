"""Our nodes inside a real ComfyUI 0.3.75, in process (the stock server and browser: test_user_journey.py)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.comfy_prompts import MODEL, txt2img
from tests.helpers import AMUSED, MEISSONIC, load_case
from tests.support.comfyui import PromptValidationError

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
def test_a_batch_equals_single_runs_with_consecutive_seeds(comfy, sampler, node, extra):
    """Image i of a batch with seed s is the image a single run with seed s + i draws, so a user can pull
    one picture out of a batch by its seed."""
    settings = dict(node=node, extra=extra, width=64, height=64, steps=3)
    batch = comfy.run(txt2img(sampler, batch_size=2, seed=7, **settings))
    for i in range(2):
        single = comfy.run(txt2img(sampler, batch_size=1, seed=7 + i, **settings))
        assert torch.equal(batch.output("3", 0).tokens[i], single.output("3", 0).tokens[0])
        gap = (batch.output("4", 0)[i] - single.output("4", 0)[0]).abs().max()
        assert gap <= 1e-4, f"decoded pixels differ by {gap}"  # a batched convolution rounds differently
    assert not torch.equal(batch.output("3", 0).tokens[0], batch.output("3", 0).tokens[1])


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
def test_meissonic_through_the_nodes_draws_what_the_engine_draws(comfy, sampler, node, extra):
    from tcts.pipeline import Pipeline
    from tests.engine_helpers import generate

    result = comfy.run(txt2img(sampler, node=node, extra=extra, model="meissonic-tiny", width=64, height=1024,
                               steps=3, cfg=9.0))
    engine = generate(Pipeline.from_folder(MEISSONIC), "a photo of a red cat", sampler=sampler, steps=3, cfg=9.0,
                      width=64, height=1024, schedule="cosine", choice_temperature=(2.0, 0.0),
                      sampling_temperature=1.0, rule_options=extra)
    assert torch.equal(result.output("3", 0).tokens, engine.tokens)


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


def test_model_default_schedule_uses_the_checkpoints_scheduler_config(comfy):
    default = comfy.run(txt2img(schedule="model default")).output("3", 0).tokens
    cosine = comfy.run(txt2img(schedule="cosine")).output("3", 0).tokens  # the fixture's scheduler says cosine
    assert torch.equal(default, cosine)

"""The real-ComfyUI harness (tests/support/comfyui.py) works: in-process and over HTTP.

Needs `python -m tests.support.comfyui setup` first (skipped locally, failed under CI otherwise).
Core nodes only, plus a tiny V3 pack this file writes into a temporary folder.
"""
from __future__ import annotations

import copy
import io
import textwrap
from pathlib import Path

import pytest

from tests.support import comfyui as harness

pytestmark = pytest.mark.comfyui

PACK_NAME = "tcts_harness_testpack"

PACK_SOURCE = textwrap.dedent('''
    """Test-only V3 pack written by tests/test_comfyui_harness.py."""
    import torch
    from comfy_api.latest import ComfyExtension, io


    class TctsTestSolidColor(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id="TctsTestSolidColor",
                display_name="TCTS test: solid colour",
                category="tcts/testing",
                inputs=[
                    io.Int.Input("width", default=64, min=1, max=4096),
                    io.Int.Input("height", default=64, min=1, max=4096),
                    io.Int.Input("color", default=0xFF0000, min=0, max=0xFFFFFF),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                ],
                outputs=[io.Image.Output()],
            )

        @classmethod
        def execute(cls, width, height, color, seed) -> io.NodeOutput:
            rgb = torch.tensor([(color >> 16) & 255, (color >> 8) & 255, color & 255], dtype=torch.float32) / 255.0
            return io.NodeOutput(rgb.view(1, 1, 1, 3).expand(1, height, width, 3).contiguous())


    class TctsTestFail(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id="TctsTestFail",
                category="tcts/testing",
                inputs=[io.Image.Input("image"), io.String.Input("message", default="boom")],
                outputs=[io.Image.Output()],
            )

        @classmethod
        def execute(cls, image, message) -> io.NodeOutput:
            raise ValueError(message)


    class _Extension(ComfyExtension):
        async def get_node_list(self):
            return [TctsTestSolidColor, TctsTestFail]


    async def comfy_entrypoint() -> _Extension:
        return _Extension()
''')


@pytest.fixture(scope="session")
def test_pack(tmp_path_factory) -> Path:
    pack = tmp_path_factory.mktemp("packs") / PACK_NAME
    pack.mkdir()
    (pack / "__init__.py").write_text(PACK_SOURCE)
    return pack


@pytest.fixture(scope="session")
def comfy(comfyui, test_pack):
    """The in-process ComfyUI with the test pack loaded from outside the tree."""
    ids = comfyui.load_custom_nodes(test_pack)
    assert set(ids) >= {"TctsTestSolidColor", "TctsTestFail"} or "TctsTestSolidColor" in comfyui.nodes.NODE_CLASS_MAPPINGS
    return comfyui


def _png_info(data_or_path):
    from PIL import Image

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(src) as im:
        return im.format, im.size, im.convert("RGB").getpixel((0, 0))


def _pipeline(source: dict, scale: float = 2.0, prefix: str = "tcts_harness") -> dict:
    return {
        "1": copy.deepcopy(source),
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "scale_by": scale}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


SOLID = {"class_type": "TctsTestSolidColor", "inputs": {"width": 32, "height": 24, "color": 0x00FF00, "seed": 7}}
EMPTY = {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0xFF0000}}


# ---- (a) in-process execution -----------------------------------------------------------------


def test_inprocess_core_nodes(comfyui):
    res = comfyui.run(_pipeline(EMPTY, prefix="core"))
    assert res.success
    assert [m[0] for m in res.messages][0] == "execution_start"
    assert [m[0] for m in res.messages][-1] == "execution_success"
    (png,) = res.images("3")
    assert png.is_file() and png.parent == comfyui.output_dir
    assert _png_info(png) == ("PNG", (32, 16), (255, 0, 0))
    assert tuple(res.output("2").shape) == (1, 16, 32, 3)  # raw IMAGE tensor from the output cache
    executed = [d for e, d in res.events if e == "executed"]
    assert [d["node"] for d in executed] == ["3"] and executed[0]["output"] == res.outputs["3"]


def test_inprocess_custom_v3_pack(comfy):
    info = comfy.node_info("TctsTestSolidColor")
    assert info["python_module"] == f"custom_nodes.{PACK_NAME}"
    assert info["input"]["required"]["seed"][1]["control_after_generate"] is True

    res = comfy.run(_pipeline(SOLID, prefix="v3"))
    (png,) = res.images()
    assert _png_info(png) == ("PNG", (64, 48), (0, 255, 0))
    img = res.output("1")
    assert img.dtype.is_floating_point and tuple(img.shape) == (1, 24, 32, 3)
    assert res.outputs["3"]["images"][0]["type"] == "output"


def test_inprocess_execution_error_is_raised(comfy):
    prompt = _pipeline(SOLID)
    prompt["4"] = {"class_type": "TctsTestFail", "inputs": {"image": ["1", 0], "message": "deliberate failure"}}
    prompt["3"]["inputs"]["images"] = ["4", 0]
    with pytest.raises(harness.PromptExecutionError) as ei:
        comfy.run(prompt)
    err = ei.value
    assert err.node_id == "4" and err.exception_message == "deliberate failure"
    assert "TctsTestFail" in str(err) and "ValueError" in str(err)
    # check=False returns the failed result instead
    res = comfy.run(prompt, check=False)
    assert not res.success and res.error_details()["node_type"] == "TctsTestFail"


V1_PACK_SOURCE = textwrap.dedent('''
    """Test-only V1 pack (NODE_CLASS_MAPPINGS) loaded through extra_model_paths custom_nodes."""
    import folder_paths


    class TctsTestListModels:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": (folder_paths.get_filename_list("tcts_test_models"),)}}

        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"
        CATEGORY = "tcts/testing"

        def run(self, model):
            return (folder_paths.get_full_path_or_raise("tcts_test_models", model),)


    NODE_CLASS_MAPPINGS = {"TctsTestListModels": TctsTestListModels}
''')


def test_inprocess_extra_model_paths(comfy, tmp_path):
    models = tmp_path / "models"
    (models / "ckpts").mkdir(parents=True)
    (models / "ckpts" / "tiny.safetensors").write_bytes(b"")
    (models / "mine").mkdir()
    (models / "mine" / "a.bin").write_bytes(b"x")
    packs = tmp_path / "custom_nodes"
    (packs / "tcts_v1_pack").mkdir(parents=True)
    (packs / "tcts_v1_pack" / "__init__.py").write_text(V1_PACK_SOURCE)

    new_ids = comfy.load_extra_model_paths({"harness_test": {
        "base_path": str(models), "checkpoints": "ckpts", "tcts_test_models": "mine", "custom_nodes": str(packs)}})
    assert new_ids == ["TctsTestListModels"]
    fp = comfy.folder_paths
    assert "tiny.safetensors" in fp.get_filename_list("checkpoints")
    assert fp.get_filename_list("tcts_test_models") == ["a.bin"]  # a new key accepts any extension
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
              "2": {"class_type": "TctsTestListModels", "inputs": {"model": "a.bin"}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    v = comfy.validate(prompt)
    assert v.ok, v.format()
    res = comfy.run({k: prompt[k] for k in ("2", "3")})
    assert res.output("2") == str(models / "mine" / "a.bin")


# ---- (b) validation rejects bad values and wiring ------------------------------------------------


def test_validation_rejects_bad_value(comfy):
    prompt = _pipeline(SOLID, scale=100.0)
    prompt["1"]["inputs"]["color"] = -5
    v = comfy.validate(prompt)
    assert not v.ok
    assert v.error["type"] == "prompt_outputs_failed_validation"
    assert {"value_bigger_than_max", "value_smaller_than_min"} <= v.error_types
    assert set(v.node_errors) == {"1", "2"}
    text = v.format()
    assert "node 2 (ImageScaleBy) input 'scale_by'" in text and "bigger than max of 8.0" in text
    assert "node 1 (TctsTestSolidColor) input 'color'" in text
    with pytest.raises(harness.PromptValidationError, match="bigger than max of 8.0"):
        comfy.run(prompt)


def test_validation_rejects_bad_wiring(comfy):
    prompt = _pipeline(SOLID)
    prompt["5"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    prompt["2"]["inputs"]["image"] = ["5", 0]  # LATENT into IMAGE
    prompt["2"]["inputs"]["upscale_method"] = "no-such-method"
    with pytest.raises(harness.PromptValidationError) as ei:
        comfy.run(prompt)
    err = ei.value
    assert {"return_type_mismatch", "value_not_in_list"} <= err.error_types
    assert "LATENT" in str(err) and "IMAGE" in str(err) and "no-such-method" in str(err)

    unknown = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    v = comfy.validate(unknown)
    assert not v.ok and v.error["type"] == "invalid_prompt" and "NoSuchNode does not exist" in v.error["message"]
    no_output = {"1": copy.deepcopy(SOLID)}
    assert comfy.validate(no_output).error_types == {"prompt_no_outputs"}
    missing = _pipeline(SOLID)
    del missing["2"]["inputs"]["image"]
    assert "required_input_missing" in comfy.validate(missing).error_types


# ---- (c) UI workflow (format 0.4) -> API prompt -> execution ------------------------------------


def _ui_workflow() -> dict:
    """What the frontend saves: a PrimitiveNode drives a converted widget, a Reroute, a bypassed
    ImageInvert, a muted PreviewImage, a Note, and a seed with its control_after_generate value."""
    return {
        "last_node_id": 8, "last_link_id": 6, "version": 0.4, "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "links": [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 4, 0, "IMAGE"],
                  [4, 4, 0, 5, 0, "IMAGE"], [5, 5, 0, 6, 0, "IMAGE"], [6, 5, 0, 7, 0, "IMAGE"]],
        "nodes": [
            {"id": 1, "type": "PrimitiveNode", "pos": [0, 0], "size": [210, 82], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "INT", "type": "INT", "links": [1], "slot_index": 0, "widget": {"name": "width"}}],
             "title": "width", "properties": {"Run widget replace on values": False}, "widgets_values": [40, "fixed"]},
            {"id": 2, "type": "TctsTestSolidColor", "pos": [250, 0], "size": [315, 130], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 1},
                        {"name": "height", "type": "INT", "widget": {"name": "height"}, "link": None}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2], "slot_index": 0}],
             "properties": {"Node name for S&R": "TctsTestSolidColor"},
             "widgets_values": [64, 24, 255, 123, "randomize"]},
            {"id": 3, "type": "Reroute", "pos": [600, 0], "size": [75, 26], "flags": {}, "order": 2, "mode": 0,
             "inputs": [{"name": "", "type": "*", "link": 2}],
             "outputs": [{"name": "", "type": "IMAGE", "links": [3], "slot_index": 0}],
             "properties": {"showOutputText": False, "horizontal": False}},
            {"id": 4, "type": "ImageInvert", "pos": [700, 0], "size": [210, 26], "flags": {}, "order": 3, "mode": 4,
             "inputs": [{"name": "image", "type": "IMAGE", "link": 3}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4], "slot_index": 0}],
             "properties": {"Node name for S&R": "ImageInvert"}, "widgets_values": []},
            {"id": 5, "type": "ImageScaleBy", "pos": [950, 0], "size": [315, 82], "flags": {}, "order": 4, "mode": 0,
             "inputs": [{"name": "image", "type": "IMAGE", "link": 4}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [5, 6], "slot_index": 0}],
             "properties": {"Node name for S&R": "ImageScaleBy"}, "widgets_values": ["nearest-exact", 2]},
            {"id": 6, "type": "SaveImage", "pos": [1300, 0], "size": [315, 270], "flags": {}, "order": 5, "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 5}], "outputs": [],
             "properties": {"Node name for S&R": "SaveImage"}, "widgets_values": ["tcts_wf"]},
            {"id": 7, "type": "PreviewImage", "pos": [1300, 300], "size": [210, 246], "flags": {}, "order": 6, "mode": 2,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 6}], "outputs": [],
             "properties": {"Node name for S&R": "PreviewImage"}, "widgets_values": []},
            {"id": 8, "type": "Note", "pos": [0, 200], "size": [300, 60], "flags": {}, "order": 7, "mode": 0,
             "inputs": [], "outputs": [], "properties": {"text": ""}, "widgets_values": ["harness test workflow"]},
        ],
    }


EXPECTED_API = {
    "2": {"class_type": "TctsTestSolidColor", "inputs": {"width": 40, "height": 24, "color": 255, "seed": 123}},
    "5": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "scale_by": 2}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "tcts_wf"}},
}


def _strip_meta(prompt: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in prompt.items()}


def test_ui_workflow_converts_and_runs(comfy):
    wf = _ui_workflow()
    prompt = comfy.workflow_to_prompt(wf)
    assert _strip_meta(prompt) == EXPECTED_API
    assert prompt["2"]["_meta"]["title"] == "TCTS test: solid colour"

    res = comfy.run_workflow(wf)
    (png,) = res.images("6")
    # 40x24 doubled; blue, i.e. the bypassed ImageInvert did not run
    assert _png_info(png) == ("PNG", (80, 48), (0, 0, 255))
    from PIL import Image

    with Image.open(png) as im:  # SaveImage embedded the UI workflow we passed as extra_pnginfo
        assert '"TctsTestSolidColor"' in im.info.get("workflow", "")


def test_converter_widget_value_rules():
    # pure converter checks against hand-written object_info (no ComfyUI needed)
    info = {
        "KSamplerLike": {"input": {"required": {
            "model": ["MODEL", {}], "seed": ["INT", {"default": 0}], "steps": ["INT", {"default": 20}],
            "sampler": [["euler", "dpm"], {}], "cfg": ["FLOAT", {"default": 8.0}], "latent": ["LATENT", {}],
            "hint": ["STRING", {"forceInput": True}]},
            "optional": {"denoise": ["FLOAT", {"default": 1.0}]}}},
        "Loader": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}}},
    }
    wf = {"nodes": [
        {"id": 1, "type": "Loader", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["b.png", "image"]},
        {"id": 2, "type": "KSamplerLike", "mode": 0, "inputs": [], "outputs": [],
         "widgets_values": [5, "increment", 30, "dpm", 4.5, 0.5]},
        # saved before frontend 1.16: a dummy value for the forceInput STRING
        {"id": 3, "type": "KSamplerLike", "mode": 0, "inputs": [], "outputs": [],
         "widgets_values": [6, "fixed", 10, "euler", 7.0, "", 0.75]},
    ], "links": []}
    p = harness.workflow_to_prompt(wf, info)
    assert p["1"]["inputs"] == {"image": "b.png"}
    assert p["2"]["inputs"] == {"seed": 5, "steps": 30, "sampler": "dpm", "cfg": 4.5, "denoise": 0.5}
    assert p["3"]["inputs"] == {"seed": 6, "steps": 10, "sampler": "euler", "cfg": 7.0, "denoise": 0.75}
    with pytest.raises(harness.WorkflowConversionError, match="NoSuch"):
        harness.workflow_to_prompt({"nodes": [{"id": 1, "type": "NoSuch", "mode": 0}], "links": []}, info)


# ---- (d) HTTP server ------------------------------------------------------------------------------


@pytest.mark.comfyui_server
def test_server_prompt_history_view(comfyui_root, test_pack, tmp_path):
    models = tmp_path / "ckpts"
    models.mkdir()
    (models / "server_tiny.safetensors").write_bytes(b"")
    srv = harness.ComfyUIServer(comfyui_root, custom_nodes=[test_pack],
                                extra_model_paths={"harness_test": {"checkpoints": str(models)}})
    try:
        srv.start()
        base_dir, pid = srv.base_dir, srv.pid
        stats = srv.get_json("/system_stats")
        assert stats["system"]["comfyui_version"] == harness.comfyui_version(comfyui_root)
        info = srv.object_info("TctsTestSolidColor")["TctsTestSolidColor"]
        assert info["python_module"] == f"custom_nodes.{PACK_NAME}"
        ckpts = srv.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        assert "server_tiny.safetensors" in ckpts

        entry = srv.run(_pipeline(SOLID, prefix="srv"), timeout=60)
        assert entry["status"]["status_str"] == "success"
        (ref,) = harness.history_images(entry, "3")
        assert ref["type"] == "output" and ref["filename"].startswith("srv_")
        png = srv.view(**ref)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert _png_info(png) == ("PNG", (64, 48), (0, 255, 0))
        assert (srv.output_dir / ref["subfolder"] / ref["filename"]).is_file()

        bad = _pipeline(SOLID, scale=100.0)
        with pytest.raises(harness.PromptValidationError) as ei:
            srv.queue_prompt(bad)
        assert "value_bigger_than_max" in ei.value.error_types

        # the converter also works from the server's /object_info
        assert _strip_meta(srv.workflow_to_prompt(_ui_workflow())) == EXPECTED_API
    finally:
        proc = srv.proc
        srv.stop()
    assert proc is not None and proc.poll() is not None  # the process is gone
    assert srv.proc is None and not base_dir.exists()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)

"""The shipped workflows as files: what ``scripts/make_workflows.py`` generates, well formed against the node
registry, with the settings the notes promise, a thumbnail each and example inputs that the pack provides.

Running them is the browser journey's job (``tests/test_user_journey.py``): every workflow is opened from
its template card in a stock ComfyUI, run, and its pictures compared with ``python -m tcts``.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))
MODEL = "shapes-demo"
FRONTEND_ONLY = {"MarkdownNote", "Note", "Reroute", "PrimitiveNode"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
TOP_KEYS = {"last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"}
NODE_KEYS = {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
             "widgets_values"}


def _load_make_workflows():
    spec = importlib.util.spec_from_file_location("tcts_make_workflows", ROOT / "scripts" / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


mw = _load_make_workflows()


def _nodes(path: Path) -> dict[int, dict]:
    return {n["id"]: n for n in json.loads(path.read_text(encoding="utf-8"))["nodes"]}


def test_committed_files_are_what_make_workflows_generates(comfyui, pack):
    generated = mw.render_all(comfyui.node_info)
    assert set(generated) == {p.name for p in WORKFLOW_FILES}
    stale = [name for name, text in generated.items() if (WORKFLOWS_DIR / name).read_text(encoding="utf-8") != text]
    assert not stale, f"out of date: {stale}; run: .venv/bin/python scripts/make_workflows.py --thumbnails"
    assert not list(WORKFLOWS_DIR.glob("*/*.json")), "the template browser reads workflows/*.json only"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_file_is_well_formed(path, comfyui, pack):
    wf = json.loads(path.read_text(encoding="utf-8"))
    assert TOP_KEYS <= set(wf) and wf["version"] == 0.4
    nodes = _nodes(path)
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] >= max(nodes)
    link_ids = [link[0] for link in wf["links"]]
    assert len(set(link_ids)) == len(link_ids) and wf["last_link_id"] >= max(link_ids, default=0)
    assert sorted(n["order"] for n in nodes.values()) == list(range(len(nodes)))
    for n in nodes.values():
        assert NODE_KEYS <= set(n), f"node {n['id']} lacks {NODE_KEYS - set(n)}"
        if n["type"] in FRONTEND_ONLY:
            continue
        assert n["type"] in comfyui.nodes.NODE_CLASS_MAPPINGS, f"{n['type']} is not registered"
        info = comfyui.node_info(n["type"])
        specs = mw.input_specs(info)
        sockets = [s for s in specs if not s["widget"]]
        plain = [i for i in n["inputs"] if "widget" not in i]
        assert [(i["name"], i["type"]) for i in plain] == [(s["name"], s["type"]) for s in sockets]
        widget_types = {s["name"]: s["type"] for s in specs if s["widget"]}
        for i in n["inputs"][len(plain):]:  # widgets fed by a link follow the sockets
            assert widget_types.get(i["widget"]["name"]) == i["type"] and i["link"] is not None
        assert [o["type"] for o in n["outputs"]] == list(info["output"])
        expected = 0
        for s in (s for s in specs if s["widget"]):
            expected += 1
            if mw._has_control(s):
                assert n["widgets_values"][expected] in CONTROL_VALUES, f"{n['type']}.{s['name']}: no control value"
                expected += 1
            expected += bool(s["opts"].get("image_upload"))
        assert len(n["widgets_values"]) == expected, f"{n['type']}: {len(n['widgets_values'])} widget values"
        if n["type"] == "TCTSLoadModel":
            assert n["widgets_values"][0] == MODEL
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[src]["outputs"][src_slot]["type"] == typ == nodes[dst]["inputs"][dst_slot]["type"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id and nodes[src]["order"] < nodes[dst]["order"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_each_workflow_has_a_thumbnail_and_opens_fitted(path):
    """The template browser shows ``<name>.jpg``; the saved view shows the whole graph at 1600 x 1000."""
    with Image.open(path.with_suffix(".jpg")) as im:
        assert im.format == "JPEG" and im.width == im.height >= 128
    wf = json.loads(path.read_text(encoding="utf-8"))
    ds = wf["extra"]["ds"]
    left, top, right, bottom = mw.VIEW_BOX
    for n in wf["nodes"]:
        x0, y0 = ((n["pos"][0] + ds["offset"][0]) * ds["scale"], (n["pos"][1] + ds["offset"][1]) * ds["scale"])
        x1 = (n["pos"][0] + n["size"][0] + ds["offset"][0]) * ds["scale"]
        y1 = (n["pos"][1] + n["size"][1] + ds["offset"][1]) * ds["scale"]
        assert left - 1 <= x0 and x1 <= right + 1 and top - 1 <= y0 and y1 <= 1000, (path.stem, n["type"])


def test_example_settings_follow_the_reference_defaults():
    """img2img keeps the CLI's default strength (0.5); inpaint uses the reference's linear schedule and
    strength 1.0; the upscale workflow offers its model for download and scales x4 by 0.5."""
    def sampler(name: str) -> dict:
        (node,) = [n for n in _nodes(WORKFLOWS_DIR / name).values() if n["type"] == "TCTSPersistentSampler"]
        return dict(zip([s for s in ("sampler", "width", "height", "batch_size", "steps", "cfg", "seed", "control",
                                     "schedule", "choice_temperature", "temperature", "preview", "strength",
                                     "strength_mode", "draw_on_device")], node["widgets_values"]))
    assert sampler("Image to image.json")["strength"] == 0.5
    inpaint = sampler("Inpaint.json")
    assert inpaint["schedule"] == "linear" and inpaint["strength"] == 1.0
    nodes = _nodes(WORKFLOWS_DIR / "Upscale with a model (RealESRGAN).json").values()
    (loader,) = [n for n in nodes if n["type"] == "UpscaleModelLoader"]
    (model,) = loader["properties"]["models"]
    assert model["name"] == loader["widgets_values"][0] and model["directory"] == "upscale_models"
    assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith(model["name"])
    (scale,) = [n for n in nodes if n["type"] == "ImageScaleBy"]
    assert scale["widgets_values"][1] * mw.UPSCALE_MODEL_SCALE == 2


def test_example_inputs_are_the_generated_ones_and_the_inpaint_hole_is_token_aligned(tmp_path):
    for path in mw.write_example_inputs(tmp_path):
        assert path.read_bytes() == (WORKFLOWS_DIR / "inputs" / path.name).read_bytes(), path.name
    with Image.open(WORKFLOWS_DIR / "inputs" / mw.INPAINT_IMAGE) as im:
        alpha = im.getchannel("A")
        x0, y0, x1, y1 = mw.INPAINT_BOX
        assert alpha.getbbox() is not None and all(v % 16 == 0 for v in mw.INPAINT_BOX)
        assert alpha.crop((x0, y0, x1, y1)).getextrema() == (0, 0)
        assert int((np.asarray(alpha) == 0).sum()) == (x1 - x0) * (y1 - y0)

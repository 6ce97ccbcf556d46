"""The example workflows in ``workflows/`` load, convert and run in a real ComfyUI, and match the CLI.

For every ``workflows/*.json`` (UI format 0.4, as the frontend and its template browser load them):

* the file is well formed (ids, links both ways, slot types, ``widgets_values`` count against the node
  registry, a seed's control value) and every node type is registered;
* it is what ``scripts/make_workflows.py`` generates from its descriptions (no hand drift);
* it converts to an API prompt with the harness converter and executes in-process with the tiny
  fixture model installed as ``shapes-demo`` (``tests/fixtures/amused-tiny``), the example input images
  in ComfyUI's input folder and a tiny random x2 upscaler (``tests/support/tiny_upscaler.py``) in
  ``upscale_models``; the SaveImage PNGs exist with the expected size;
* its sampler's tokens equal ``python -m tcts generate`` (a subprocess, the same prompt, negative,
  sampler, steps, cfg, seed, size, schedule, temperatures, strength and mask) exactly, and the decoded
  image equals the CLI's PNG within 1/255; core nodes after VQ Decode (ImageScaleBy,
  ImageUpscaleWithModel) produce exactly what they produce from that image.

Model folders are registered once through the harness's model-folder API and once through an
``extra_model_paths.yaml``. The CLI subprocesses (~5 s of CPU each, one per distinct setting, only for
the selected tests) start in the background when this module's first test needs them (before ComfyUI
boots when the module runs alone), at most one per CPU at a time.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import AMUSED
from tests.support.tiny_upscaler import tiny_upscaler_state_dict, write_tiny_upscaler

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))
EXPECTED_FILES = {"tcts_txt2img_purity.json", "tcts_txt2img_uniform.json", "tcts_txt2img_random_revoke.json",
                  "tcts_img2img.json", "tcts_inpaint.json", "tcts_chain_core_nodes.json", "tcts_upscale_model.json",
                  "tcts_mask_free_edit.json", "tcts_txt2img_tcts_fas.json"}
#: workflows without a generate-parity sampler node, executed and checked by their own tests
OWN_TESTS = {"tcts_mask_free_edit.json": "tests/test_comfy_attention.py"}
MODEL = "shapes-demo"
SAMPLERS = {"TCTSPersistentSampler", "TCTSRevocableSampler", "TCTSFASSampler"}
FRONTEND_ONLY = {"MarkdownNote", "Note", "Reroute", "PrimitiveNode"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPSCALE_SEED = 0
#: run again with its models found through an extra_model_paths.yaml (covers tcts and upscale_models)
YAML_ROUTE_WORKFLOW = "tcts_upscale_model.json"
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


def _ids(path: Path) -> str:
    return path.stem


# ---------------------------------------------------------------------------------------------
# environment: models, inputs, prompts, CLI results
# ---------------------------------------------------------------------------------------------


def _install_models(base: Path, upscale_seed: int) -> Path:
    """``base/tcts/shapes-demo`` (the tiny fixture) and ``base/upscale_models/<name>`` (tiny x2)."""
    (base / "tcts").mkdir(parents=True, exist_ok=True)
    link = base / "tcts" / MODEL
    try:
        link.symlink_to(AMUSED.resolve(), target_is_directory=True)
    except OSError:  # no symlinks here: copy the parts a model folder needs
        import shutil
        for part in ("model_index.json", "transformer", "vqvae", "text_encoder", "tokenizer", "scheduler"):
            src = AMUSED / part
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, link / part)
    write_tiny_upscaler(base / "upscale_models" / mw.UPSCALE_MODEL, seed=upscale_seed)
    write_tiny_selector(base / "tcts_selectors" / mw.SELECTOR)
    return base


def write_tiny_selector(folder: Path) -> Path:
    """A deterministic random TCTS selector for the tiny fixture generator (same files on every call)."""
    from tcts.selector import SelectorConfig, TokenSelector, save_selector

    torch.manual_seed(0)
    save_selector(TokenSelector(SelectorConfig(codebook_size=64, text_hidden_size=16, hidden_size=16, num_layers=1,
                                               num_heads=2, max_grid=(16, 16))), folder)
    return folder


class CliJob:
    """``python -m tcts generate ... --out X.png --tokens-out X.npy``, run by a worker thread."""

    def __init__(self, argv: tuple[str, ...], folder: Path):
        folder.mkdir(parents=True)
        self.png, self.npy = folder / "out.png", folder / "tokens.npy"
        self.cmd = [sys.executable, "-m", "tcts", *argv, "--out", str(self.png), "--tokens-out", str(self.npy)]
        self.seconds: float | None = None
        self.proc: subprocess.Popen | None = None
        self.cancelled = False

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, RGB uint8 image)."""
        if self.cancelled:
            raise RuntimeError("cancelled")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        out, err = self.proc.communicate(timeout=600)
        self.seconds = time.monotonic() - t0
        if self.proc.returncode != 0:
            raise AssertionError(f"{' '.join(self.cmd)} failed ({self.proc.returncode}):\n{out}\n{err}")
        with Image.open(self.png) as im:
            image = np.asarray(im.convert("RGB"))
        return np.load(self.npy), image

    def kill(self) -> None:
        self.cancelled = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


class CliRuns:
    """CLI runs keyed by their arguments: each distinct setting runs once, in the background, at most
    one process per CPU at a time (more only oversubscribe the cores), in the order they were asked for.

    ``inputs`` holds the CLI's copies of the example images (``make_workflows.write_example_inputs``,
    byte-identical to the ones ComfyUI loads) and the CLI mask files derived from their alpha."""

    def __init__(self, work: Path):
        from concurrent.futures import ThreadPoolExecutor

        self.work = work
        self.inputs = work / "inputs"
        mw.write_example_inputs(self.inputs)
        self.selectors = work / "selectors"
        write_tiny_selector(self.selectors / mw.SELECTOR)
        self.jobs: dict[tuple[str, ...], CliJob] = {}
        self.futures: dict[tuple[str, ...], object] = {}
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))

    def start(self, argv: list[str]) -> tuple[str, ...]:
        key = tuple(argv)
        if key not in self.jobs:
            self.jobs[key] = CliJob(key, self.work / f"run{len(self.jobs)}")
            self.futures[key] = self.pool.submit(self.jobs[key].run)
        return key

    def result(self, argv: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.futures[self.start(argv)].result()

    def mask_for(self, image_name: str) -> Path:
        """The CLI's mask file (white = regenerate) for an RGBA input whose alpha ComfyUI's LoadImage reads
        as MASK = 1 - alpha."""
        out = self.inputs / f"{Path(image_name).stem}.mask.png"
        if not out.is_file():
            with Image.open(self.inputs / image_name) as im:
                alpha = np.asarray(im.getchannel("A"))
            Image.fromarray(255 - alpha, mode="L").save(out)
        return out

    def kill_all(self) -> None:
        for future in self.futures.values():
            future.cancel()
        for job in self.jobs.values():
            job.kill()
        self.pool.shutdown(wait=True)


def _graph_as_prompt(graph) -> dict:
    """make_workflows' description as a rough API prompt (enough for :func:`_cli_argv`), so the CLI runs
    can start before ComfyUI has booted; the prompts converted from the committed files decide later
    (a run whose arguments differ is started then)."""
    slots = {("TCTSTextEncode", "negative"): 1, ("LoadImage", "MASK"): 1}
    prompt = {}
    for n in graph.nodes:
        inputs = {}
        for k, v in n.values.items():
            if isinstance(v, mw.Out):
                v = [str(v.node.id), slots.get((v.node.type, v.name), 0)]
            elif isinstance(v, tuple):  # (seed, control)
                v = v[0]
            inputs[k] = v
        prompt[str(n.id)] = {"class_type": n.type, "inputs": inputs}
    return prompt


def _files_needing_the_cli(session) -> set[str]:
    """The workflow files whose CLI runs the selected tests of this module will ask for."""
    names = set()
    for item in session.items:
        if getattr(item, "module", None) is None or item.module.__name__ != __name__:
            continue
        name = getattr(item, "originalname", None)
        if name == "test_workflow_runs_in_comfyui_and_matches_the_cli":
            names.add(item.callspec.params["path"].name)
        elif name == "test_extra_model_paths_yaml_route":
            names.add(YAML_ROUTE_WORKFLOW)
    return names


@pytest.fixture(scope="session")
def cli_runs(request, tmp_path_factory):
    """The CLI runs, started before ComfyUI boots for the selected tests (from make_workflows'
    descriptions; a run the committed file asks for with other arguments is started when asked for)."""
    runs = CliRuns(tmp_path_factory.mktemp("tcts-workflows-cli"))
    needed = _files_needing_the_cli(request.session)
    try:
        for graph in sorted(mw.all_graphs(), key=lambda g: g.name):  # the order the tests need them
            if f"{graph.name}.json" not in needed:
                continue
            prompt = _graph_as_prompt(graph)
            for sid in _sampler_ids(prompt):
                try:
                    runs.start(_cli_argv(prompt, sid, runs))
                except (AssertionError, KeyError):
                    pass  # an early start is only an optimisation
        yield runs
    finally:
        runs.kill_all()


@dataclass
class Env:
    comfy: object
    loaders: object
    input_dir: Path
    models: Path
    cli: CliRuns
    prompts: dict = field(default_factory=dict)      # file name -> (ui workflow, api prompt)


@pytest.fixture(scope="module")
def env(cli_runs, comfyui, pack, tmp_path_factory):
    fp = comfyui.folder_paths
    saved = {key: (list(fp.folder_names_and_paths[key][0]), fp.folder_names_and_paths[key][1])
             for key in ("tcts", "upscale_models", "tcts_selectors") if key in fp.folder_names_and_paths}
    models = _install_models(tmp_path_factory.mktemp("tcts-workflows") / "models", UPSCALE_SEED)
    comfyui.add_model_folder("tcts", models / "tcts")
    comfyui.add_model_folder("tcts_selectors", models / "tcts_selectors")
    comfyui.add_model_folder("upscale_models", models / "upscale_models")
    input_dir = Path(fp.get_input_directory())
    for path in mw.write_example_inputs(input_dir):  # what the workflows' LoadImage nodes read
        assert path.read_bytes() == (cli_runs.inputs / path.name).read_bytes()
    e = Env(comfy=comfyui, loaders=pack("nodes.loaders"), input_dir=input_dir, models=models, cli=cli_runs)
    assert e.loaders.resolve_model_folder(MODEL).parent.resolve() == (models / "tcts").resolve()
    for path in WORKFLOW_FILES:
        workflow = json.loads(path.read_text(encoding="utf-8"))
        e.prompts[path.name] = (workflow, comfyui.workflow_to_prompt(workflow))
    try:
        yield e
    finally:
        for key, (paths, exts) in saved.items():  # leave the session's model folders as we found them
            fp.folder_names_and_paths[key] = (paths, exts)
        fp.filename_list_cache.clear()


def _sampler_ids(prompt: dict) -> list[str]:
    return sorted((k for k, v in prompt.items() if v["class_type"] in SAMPLERS), key=int)


def _source(prompt: dict, ref) -> tuple[str, dict, int]:
    node_id, slot = ref
    return node_id, prompt[node_id], slot


def _cli_argv(prompt: dict, sid: str, cli: CliRuns) -> list[str]:
    """``python -m tcts`` arguments for the sampler node ``sid`` of an API prompt (same settings)."""
    s = prompt[sid]["inputs"]
    _, text, pslot = _source(prompt, s["positive"])
    nid, text_n, nslot = _source(prompt, s["negative"])
    assert text["class_type"] == text_n["class_type"] == "TCTSTextEncode" and (pslot, nslot) == (0, 1)
    _, load, _ = _source(prompt, s["model"])
    assert load["class_type"] == "TCTSLoadModel" and load["inputs"]["model_name"] == MODEL
    sampler = s.get("sampler") or ("tcts-fas" if "selector" in s else "fas")
    argv = ["generate", "--model", str(AMUSED), "--prompt", text["inputs"]["prompt"],
            "--negative", text_n["inputs"]["negative"], "--sampler", sampler, "--steps", str(s["steps"]),
            "--cfg", repr(float(s["cfg"])), "--seed", str(s["seed"]), "--batch-size", str(s["batch_size"]),
            "--schedule", s["schedule"], "--choice-temperature", repr(float(s["choice_temperature"])), "0.0",
            "--temperature", repr(float(s["temperature"]))]
    if s.get("repredict_visible"):
        argv.append("--repredict-visible")
    if prompt[sid]["class_type"] == "TCTSFASSampler":
        argv += ["--fas-statistic", s["statistic"], "--fas-q", repr(float(s["q"])), "--fas-cutoff", repr(float(s["cutoff"])),
                 "--fas-regroup", s["regroup"], "--fas-freeze-after", repr(float(s["freeze_after"])),
                 "--fas-low-scorer", s["low_scorer"], "--fas-start-frac", repr(float(s["start_frac"]))]
        argv += ["--fas-smooth"] * bool(s["smooth"]) + ["--fas-invert"] * bool(s["invert"])
        if s["layers"]:
            argv += ["--fas-layers", s["layers"]]
        if "selector" in s:
            _, loader, _ = _source(prompt, s["selector"])
            assert loader["class_type"] == "TCTSLoadSelector"
            argv += ["--selector", str(cli.selectors / loader["inputs"]["selector_name"]),
                     "--selector-guidance", repr(float(s["selector_guidance"])),
                     "--selector-noise", repr(float(s["selector_noise"])), "--selector-choice", s["selector_choice"]]
    if "start_tokens" in s:
        _, encode, _ = _source(prompt, s["start_tokens"])
        assert encode["class_type"] == "TCTSVQEncode"
        _, image, slot = _source(prompt, encode["inputs"]["image"])
        assert image["class_type"] == "LoadImage" and slot == 0
        argv += ["--init-image", str(cli.inputs / image["inputs"]["image"]),
                 "--strength", repr(float(s.get("strength", 0.5))),
                 "--strength-mode", s.get("strength_mode", "reference")]
        if "mask" in s:
            _, mask_src, slot = _source(prompt, s["mask"])
            assert mask_src["class_type"] == "LoadImage" and slot == 1
            argv += ["--mask", str(cli.mask_for(mask_src["inputs"]["image"]))]
    else:
        assert "mask" not in s
        argv += ["--width", str(s["width"]), "--height", str(s["height"])]
    return argv


# ---------------------------------------------------------------------------------------------
# the files themselves
# ---------------------------------------------------------------------------------------------


def test_the_expected_workflows_exist():
    assert EXPECTED_FILES <= {p.name for p in WORKFLOW_FILES}
    assert not list(WORKFLOWS_DIR.glob("*/*.json")), "the template browser reads workflows/*.json only (not recursive)"


def test_committed_files_are_what_make_workflows_generates(comfyui, pack):
    generated = mw.render_all(comfyui.node_info)
    assert set(generated) == EXPECTED_FILES
    stale = [name for name, text in generated.items()
             if not (WORKFLOWS_DIR / name).is_file() or (WORKFLOWS_DIR / name).read_text(encoding="utf-8") != text]
    assert not stale, f"out of date: {stale}; run: .venv/bin/python scripts/make_workflows.py"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids)
def test_workflow_file_is_well_formed(path, comfyui, pack):
    wf = json.loads(path.read_text(encoding="utf-8"))
    assert TOP_KEYS <= set(wf) and wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and all(isinstance(i, int) for i in nodes)
    assert wf["last_node_id"] >= max(nodes)
    link_ids = [l[0] for l in wf["links"]]
    assert len(set(link_ids)) == len(link_ids) and wf["last_link_id"] >= max(link_ids, default=0)
    orders = sorted(n["order"] for n in nodes.values())
    assert orders == list(range(len(nodes)))
    for n in nodes.values():
        assert NODE_KEYS <= set(n), f"node {n['id']} lacks {NODE_KEYS - set(n)}"
        assert len(n["pos"]) == 2 and len(n["size"]) == 2 and n["mode"] == 0
        if n["type"] in FRONTEND_ONLY:
            continue
        assert n["type"] in comfyui.nodes.NODE_CLASS_MAPPINGS, f"{n['type']} is not registered"
        assert n["properties"]["Node name for S&R"] == n["type"]
        info = comfyui.node_info(n["type"])
        specs = mw.input_specs(info)
        sockets = [s for s in specs if not s["widget"]]
        assert [i["name"] for i in n["inputs"]] == [s["name"] for s in sockets]
        assert [i["type"] for i in n["inputs"]] == [s["type"] for s in sockets]
        assert [o["type"] for o in n["outputs"]] == list(info["output"])
        expected_values = 0
        values = n["widgets_values"]
        for s in (s for s in specs if s["widget"]):
            expected_values += 1
            if mw._has_control(s):
                assert values[expected_values] in CONTROL_VALUES, f"{n['type']}.{s['name']}: no control value"
                expected_values += 1
            if s["opts"].get("image_upload"):
                expected_values += 1
        assert len(values) == expected_values, f"{n['type']}: {len(values)} widget values, expected {expected_values}"
        if n["type"] == "TCTSLoadModel":
            assert values[0] == MODEL
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[src]["outputs"][src_slot]["type"] == typ
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[dst]["inputs"][dst_slot]["type"] == typ
        assert nodes[src]["order"] < nodes[dst]["order"]
    linked = {l[0] for l in wf["links"]}
    for n in nodes.values():
        for i in n["inputs"]:
            assert i["link"] is None or i["link"] in linked
        for o in n["outputs"]:
            assert set(o["links"] or []) <= linked


# ---------------------------------------------------------------------------------------------
# execution and parity with the CLI
# ---------------------------------------------------------------------------------------------


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.int16)


def _assert_close_255(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16)).max()
    assert diff <= 1, f"{what}: differs by {diff}/255"


def _check_image_chain(env: Env, res, prompt: dict, ref, cli_images: dict, upscale_seed: int) -> bool:
    """Follow an IMAGE input back to the VQ Decode of one of our samplers, checking each node's output:
    VQ Decode against the CLI's PNG, core nodes (ImageScaleBy, ImageUpscaleWithModel) against running
    them on their input. False when the chain holds a node this test does not know (nothing checked)."""
    node_id, slot = ref
    node = prompt[node_id]
    out = res.output(node_id, slot)
    ct = node["class_type"]
    if ct == "TCTSVQDecode":
        source = node["inputs"]["tokens"][0]
        if source not in cli_images:
            return False
        _assert_close_255(_to_uint8(out[0]), cli_images[source], "VQ Decode output vs the CLI PNG")
        return True
    if ct == "ImageScaleBy":
        if not _check_image_chain(env, res, prompt, node["inputs"]["image"], cli_images, upscale_seed):
            return False
        src = res.output(*node["inputs"]["image"])
        expect = env.comfy.nodes.ImageScaleBy().upscale(src, node["inputs"]["upscale_method"],
                                                        node["inputs"]["scale_by"])[0]
        assert torch.equal(out, expect), "ImageScaleBy output differs from ImageScaleBy on its input"
        return True
    if ct == "ImageUpscaleWithModel":
        if not _check_image_chain(env, res, prompt, node["inputs"]["image"], cli_images, upscale_seed):
            return False
        assert prompt[node["inputs"]["upscale_model"][0]]["class_type"] == "UpscaleModelLoader"
        descriptor = res.output(*node["inputs"]["upscale_model"])
        actual_sd = descriptor.model.state_dict()
        assert all(torch.equal(actual_sd[k].cpu(), v) for k, v in tiny_upscaler_state_dict(upscale_seed).items()), \
            "UpscaleModelLoader did not load the expected tiny upscaler"
        src = res.output(*node["inputs"]["image"])
        with torch.no_grad():
            expect = descriptor.model(src.movedim(-1, -3)).clamp(0, 1).movedim(-3, -1)
        assert out.shape == expect.shape and torch.allclose(out, expect, atol=1e-5)
        return True
    return False


#: SaveImage sizes of the files with a sampler-to-SaveImage chain this test checks against the CLI
EXPECTED_SIZES = {"tcts_txt2img_purity.json": (64, 64), "tcts_txt2img_uniform.json": (64, 64),
                  "tcts_txt2img_random_revoke.json": (64, 64), "tcts_img2img.json": (64, 64),
                  "tcts_inpaint.json": (64, 64), "tcts_chain_core_nodes.json": (128, 128),
                  "tcts_upscale_model.json": (128, 128), "tcts_txt2img_tcts_fas.json": (64, 64)}


def _run_and_compare(env: Env, name: str, upscale_seed: int = UPSCALE_SEED) -> None:
    workflow, prompt = env.prompts[name]
    res = env.comfy.run_workflow(workflow)
    saves = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    assert saves, f"{name}: no SaveImage node"
    for save in saves:  # every workflow: the PNGs exist and are their input images
        ref = prompt[save]["inputs"]["images"]
        pngs = res.images(save)
        source = res.output(*ref)
        assert len(pngs) == source.shape[0] and all(p.is_file() for p in pngs)
        image = _png(pngs[0])
        _assert_close_255(image, _to_uint8(source[0]), f"{name}: SaveImage PNG vs its input")
        if name in EXPECTED_SIZES:
            assert (image.shape[1], image.shape[0]) == EXPECTED_SIZES[name]
        with Image.open(pngs[0]) as im:  # the UI workflow travels in the PNG, so the image re-opens the graph
            assert json.loads(im.info["workflow"])["nodes"]
    samplers = _sampler_ids(prompt)
    if name in EXPECTED_SIZES:
        assert samplers, f"{name}: no sampler node"
    cli_images = {}
    for sid in samplers:  # our samplers: tokens and decoded images against python -m tcts generate
        cli_tokens, cli_images[sid] = env.cli.result(_cli_argv(prompt, sid, env.cli))
        grid = res.output(sid, 0)
        tokens = grid.tokens
        assert tokens.shape[0] == 1 and tokens.dtype == torch.long
        assert np.array_equal(tokens[0].cpu().numpy(), cli_tokens), f"{name}: tokens differ from the CLI"
        assert (grid.width, grid.height) == (cli_images[sid].shape[1], cli_images[sid].shape[0])
    for save in saves:
        checked = _check_image_chain(env, res, prompt, prompt[save]["inputs"]["images"], cli_images, upscale_seed)
        assert checked or name not in EXPECTED_SIZES, f"{name}: SaveImage {save} is not fed by a checked chain"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids)
def test_workflow_runs_in_comfyui_and_matches_the_cli(path, env):
    """Every file executes and saves its images; where it uses our samplers, tokens and images equal the
    CLI's (workflows of other nodes, see OWN_TESTS, compare with their reference in their own tests)."""
    _run_and_compare(env, path.name)


def test_example_workflow_settings_follow_the_reference_defaults(env):
    """img2img keeps the CLI's default strength (0.5); inpaint uses the reference's linear schedule and
    strength 1.0 (the CLI's inpaint defaults); every workflow names the bundled demo model."""
    _, img2img = env.prompts["tcts_img2img.json"]
    (sid,) = _sampler_ids(img2img)
    assert img2img[sid]["inputs"]["strength"] == 0.5 and "mask" not in img2img[sid]["inputs"]
    _, inpaint = env.prompts["tcts_inpaint.json"]
    (sid,) = _sampler_ids(inpaint)
    assert inpaint[sid]["inputs"]["schedule"] == "linear" and inpaint[sid]["inputs"]["strength"] == 1.0
    assert "mask" in inpaint[sid]["inputs"]
    for name, (_, prompt) in env.prompts.items():
        for node in prompt.values():
            if node["class_type"] == "TCTSLoadModel":
                assert node["inputs"]["model_name"] == MODEL, name
    # the early CLI starts (from make_workflows' descriptions) ask for what the committed files ask for
    for graph in mw.all_graphs():
        _, prompt = env.prompts[f"{graph.name}.json"]
        early = _graph_as_prompt(graph)
        assert [_cli_argv(early, sid, env.cli) for sid in _sampler_ids(early)] == \
            [_cli_argv(prompt, sid, env.cli) for sid in _sampler_ids(prompt)], graph.name


def test_inpaint_example_mask_is_token_aligned_and_keeps_the_rest(env):
    """The inpaint example's alpha hole covers whole tokens, and tokens outside it are the VQ Encode's."""
    workflow, prompt = env.prompts["tcts_inpaint.json"]
    res = env.comfy.run_workflow(workflow)
    (sid,) = _sampler_ids(prompt)
    start = res.output(*prompt[sid]["inputs"]["start_tokens"]).tokens
    out = res.output(sid, 0).tokens
    mask = res.output(*prompt[sid]["inputs"]["mask"])
    x0, y0, x1, y1 = mw.INPAINT_BOX
    assert mask.shape[-2:] == (64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[..., y0:y1, x0:x1].min() == 1 and mask.sum() == (x1 - x0) * (y1 - y0)
    keep = torch.ones_like(out, dtype=torch.bool)
    keep[:, y0 // 16:y1 // 16, x0 // 16:x1 // 16] = False
    assert torch.equal(out[keep], start[keep])


def test_extra_model_paths_yaml_route(env, comfyui, tmp_path):
    """The same workflow with its models found through an extra_model_paths.yaml (as users configure them)."""
    fp = comfyui.folder_paths
    saved = {key: (list(fp.folder_names_and_paths[key][0]), fp.folder_names_and_paths[key][1])
             for key in ("tcts", "upscale_models")}
    base = _install_models(tmp_path / "yaml-models", upscale_seed=UPSCALE_SEED + 1)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"tcts_workflow_test:\n    base_path: {base}\n    is_default: true\n"
                      "    tcts: tcts\n    upscale_models: upscale_models\n", encoding="utf-8")
    try:
        comfyui.load_extra_model_paths(config)
        found = env.loaders.resolve_model_folder(MODEL)
        assert found.parent.resolve() == (base / "tcts").resolve()
        assert Path(fp.get_full_path("upscale_models", mw.UPSCALE_MODEL)).parent.resolve() == \
            (base / "upscale_models").resolve()
        _run_and_compare(env, YAML_ROUTE_WORKFLOW, upscale_seed=UPSCALE_SEED + 1)
    finally:
        for key, (paths, exts) in saved.items():
            fp.folder_names_and_paths[key] = (paths, exts)
        fp.filename_list_cache.clear()


@pytest.mark.comfyui_server
def test_server_lists_and_serves_the_templates_and_node_docs(comfyui_root):
    """The frontend's template browser (GET /api/workflow_templates) and help pages (the pack's web/docs)."""
    from tests.support.comfyui import ComfyUIServer

    with ComfyUIServer(comfyui_root, custom_nodes=[ROOT]) as server:
        listed = server.get_json("/api/workflow_templates")
        assert set(listed.get(ROOT.name, [])) >= {Path(n).stem for n in EXPECTED_FILES}, listed
        status, _, body = server.request("GET", f"/api/workflow_templates/{ROOT.name}/tcts_inpaint.json")
        assert status == 200 and json.loads(body) == json.loads((WORKFLOWS_DIR / "tcts_inpaint.json").read_text())
        status, _, body = server.request("GET", f"/extensions/{ROOT.name}/docs/TCTSPersistentSampler.md")
        assert status == 200 and b"Persistent" in body

"""The pack as a user meets it: a stock ComfyUI, the pack in ``custom_nodes/``, a real browser.

A fresh copy of the ComfyUI tree gets this repository in ``custom_nodes/tcts`` and its requirements, as
the README says; the server starts as users start it (``main.py --cpu --listen 127.0.0.1 --port N``);
nothing tells it where models are except the places users put them: ``models/tcts/`` (a random-weight
aMUSEd folder), an ``extra_model_paths.yaml`` (a random-weight Meissonic folder) and
``models/upscale_models/`` (a tiny random x4 upscaler under the name the upscale workflow asks for).
The bundled demo model and selector are found because the pack registers its own ``models/``.

Headless Chromium (Debian's, driven by Playwright) then opens every shipped workflow by clicking its card
in *Browse Templates*, checks that no node is missing and the graph is on screen, presses Run, and checks
that the output nodes show pictures, that the pictures of the pack's part equal what ``python -m tcts``
makes with the same settings, and that each card's thumbnail is that workflow's picture. A soak then
sends 100 prompts through the HTTP API, 20 of them cancelled mid-run, and checks the queue, the history,
the memory and the log. Screenshots go to the folder printed at the start.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import AMUSED, MEISSONIC
from tests.support import journey
from tests.support.tiny_upscaler import write_tiny_upscaler
from tests.support.workflow_cli import EDITS, SAMPLERS, Places, edit_argv, generate_argv, node_ids

pytestmark = [pytest.mark.journey, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
TITLES = [p.stem for p in WORKFLOWS]
AMUSED_RANDOM = "amused-tiny-random"       # in ComfyUI/models/tcts/
MEISSONIC_RANDOM = "meissonic-tiny-random"  # in a folder named by extra_model_paths.yaml
MODEL_PARTS = ("model_index.json", "transformer", "vqvae", "text_encoder", "tokenizer", "scheduler")
UPSCALE_MODEL = "RealESRGAN_x4plus.safetensors"
IMAGE_OUTPUTS = {"SaveImage", "PreviewImage"}


def _required(why: str) -> None:
    if os.environ.get("CI") or os.environ.get("TCTS_REQUIRE_COMFYUI"):
        pytest.fail(why)
    pytest.skip(why)


def _model_folder(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for part in MODEL_PARTS:
        (shutil.copytree if (source / part).is_dir() else shutil.copy2)(source / part, target / part)
    return target


@pytest.fixture(scope="module")
def stock(comfyui_root, tmp_path_factory):
    """A stock ComfyUI with the pack installed and its server running."""
    if journey.chromium_path() is None:
        _required("no chromium (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _required("playwright is not installed (pip install playwright)")
    base = tmp_path_factory.mktemp("stock-comfyui")
    server = journey.StockComfyUI(comfyui_root, base)
    server.install()
    _model_folder(AMUSED, server.root / "models" / "tcts" / AMUSED_RANDOM)
    more = base / "more-models"
    _model_folder(MEISSONIC, more / "tcts" / MEISSONIC_RANDOM)
    server.write_extra_model_paths({"my_models": {"base_path": str(more), "tcts": "tcts"}})
    write_tiny_upscaler(server.root / "models" / "upscale_models" / UPSCALE_MODEL, seed=0, scale=4)
    server.start()
    print(f"\nstock ComfyUI at {server.url} (tree {server.root}, log {server.log_path}), "
          f"started in {server.startup_seconds:.1f} s")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(stock, tmp_path_factory):
    shots = Path(os.environ.get("TCTS_SCREENSHOTS") or tmp_path_factory.mktemp("journey-screenshots"))
    print(f"\nscreenshots: {shots}")
    b = journey.Browser(stock.url, shots)
    b.open()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def places(stock, tmp_path_factory) -> Places:
    """Where the CLI finds what the workflows name: the same files the server used."""
    folders = {"shapes-demo": REPO / "models" / "shapes-demo",
               AMUSED_RANDOM: stock.root / "models" / "tcts" / AMUSED_RANDOM,
               MEISSONIC_RANDOM: stock.base / "more-models" / "tcts" / MEISSONIC_RANDOM}
    return Places(model=folders.__getitem__, selector=lambda name: REPO / "models" / name,
                  image=lambda name: stock.root / "input" / name, work=tmp_path_factory.mktemp("journey-cli"))


#: API prompts as the frontend sent them (title -> prompt), for the soak
SENT: dict[str, dict] = {}


def run_cli(argv: list[str], outputs: dict[str, Path]) -> None:
    cmd = [sys.executable, "-m", "tcts", *argv]
    for flag, path in outputs.items():
        cmd += [flag, str(path)]
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def png_pixels(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def assert_same_picture(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    diff = int(np.abs(actual - expected).max())
    assert diff <= 1, f"{what}: differs by up to {diff}/255"


def output_refs(entry: dict, node_id: str) -> list[dict]:
    return entry["outputs"].get(node_id, {}).get("images", [])


def decoded_outputs(prompt: dict) -> dict[str, str]:
    """Output node id -> the pack node (sampler or edit) whose decoded picture it shows directly."""
    found = {}
    for node_id, node in prompt.items():
        if node["class_type"] in IMAGE_OUTPUTS:
            source = prompt[node["inputs"]["images"][0]]
            if source["class_type"] == "TCTSVQDecode":
                found[node_id] = source["inputs"]["tokens"][0]
    return found


# ---------------------------------------------------------------------------------------------------------
# what the server registered
# ---------------------------------------------------------------------------------------------------------


def test_the_pack_registers_its_nodes_models_and_selectors(stock):
    info = stock.get_json("/object_info")
    ours = {k: v for k, v in info.items() if v.get("python_module", "").endswith(journey.PACK_NAME)}
    assert len(ours) >= 14, sorted(ours)
    categories = {v["category"] for v in ours.values()}
    assert all(c.startswith("tcts/") for c in categories), categories
    models = info["TCTSLoadModel"]["input"]["required"]["model_name"][1]["options"]
    assert {"shapes-demo", AMUSED_RANDOM, MEISSONIC_RANDOM} <= set(models), models
    selectors = info["TCTSLoadSelector"]["input"]["required"]["selector_name"][1]["options"]
    assert selectors == ["shapes-demo-selector"], selectors
    for name in ("tcts_example.png", "tcts_example_inpaint.png"):
        assert (stock.root / "input" / name).read_bytes() == (REPO / "workflows" / "inputs" / name).read_bytes()
    print(f"\n{len(ours)} nodes in {sorted(categories)}; models {models}; selectors {selectors}")


# ---------------------------------------------------------------------------------------------------------
# the template browser
# ---------------------------------------------------------------------------------------------------------


def test_template_browser_shows_every_workflow_with_its_thumbnail(stock, browser):
    browser.open()
    browser.open_templates()
    cards = browser.template_cards()
    browser.screenshot("templates")
    assert sorted(cards) == sorted(TITLES)
    fetched = {urllib.parse.unquote(url.removeprefix(stock.url)): status for url, status in browser.responses}
    for title, width in cards.items():
        assert width > 0, f"{title}: the card shows no thumbnail"
        assert fetched.get(f"/api/workflow_templates/{journey.PACK_NAME}/{title}.jpg") == 200, title
    browser.page.keyboard.press("Escape")


# ---------------------------------------------------------------------------------------------------------
# every workflow, from its card to its pictures
# ---------------------------------------------------------------------------------------------------------


def watch_until_done(stock, browser, prompt_id: str, sampler_type: str | None, title: str) -> tuple[dict, int]:
    """Wait for the prompt; screenshot every new live preview the sampler node shows (the file keeps the
    last one seen while the prompt ran). Returns the history entry and how many previews were seen."""
    previews, last = 0, None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        shown = browser.preview_on(sampler_type) if sampler_type else None
        if shown and shown != last:
            browser.screenshot(f"{title} - live preview")
            previews, last = previews + 1, shown
        entry = stock.history(prompt_id)
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            return entry, previews
        time.sleep(0.05)
    raise TimeoutError(f"{title}: no result in 600 s")


def check_thumbnail(title: str, picture: np.ndarray) -> None:
    """The card's thumbnail is this picture, enlarged (JPEG-compressed)."""
    with Image.open(REPO / "workflows" / f"{title}.jpg") as im:
        thumb = im.convert("RGB").resize((picture.shape[1], picture.shape[0]), Image.BOX)
    diff = np.abs(np.asarray(thumb).astype(np.int16) - picture).mean()
    assert diff < 4, f"{title}: the thumbnail is not this workflow's picture (mean difference {diff:.1f}/255)"


@pytest.mark.parametrize("title", TITLES)
def test_workflow_runs_from_its_template_card(title, stock, browser, places, tmp_path):
    browser.open()
    browser.open_template(title)
    assert browser.missing_node_types() == []
    assert browser.open_dialogs() == [], "a dialog (missing nodes or models?) opened with the workflow"
    boxes = browser.node_screen_boxes()
    for name, (x0, y0, x1, y1) in boxes.items():
        if name.split("#")[0] in IMAGE_OUTPUTS:
            assert 0 <= x0 and x1 <= journey.VIEWPORT["width"] and 0 <= y0 and y1 <= journey.VIEWPORT["height"], \
                f"{name} is not on screen when the workflow opens: {x0:.0f},{y0:.0f} - {x1:.0f},{y1:.0f}"
    browser.screenshot(f"{title} - opened")

    prompt_id, body = browser.run()
    prompt = body["prompt"]
    SENT[title] = prompt
    samplers = [prompt[i]["class_type"] for i in node_ids(prompt, SAMPLERS | EDITS)]
    entry, previews = watch_until_done(stock, browser, prompt_id, samplers[0] if samplers else None, title)
    status, messages = journey.history_status(entry)
    assert status == "success", f"{title}: {status} {entry.get('status')}\n{stock.log_tail()}"
    assert browser.nodes_in_error() == []
    browser.page.wait_for_function(
        "() => app.graph._nodes.filter(n => n.type === 'SaveImage' || n.type === 'PreviewImage')"
        ".every(n => (n.imgs || []).length > 0)", timeout=30_000)
    browser.screenshot(f"{title} - after run")

    decoded = decoded_outputs(prompt)
    assert decoded, f"{title}: no picture of the pack's part is shown"
    thumbnail_done = False
    for output_id, maker in sorted(decoded.items(), key=lambda kv: int(kv[0])):
        (ref,) = output_refs(entry, output_id)
        picture = png_pixels(stock.view(ref))
        out = tmp_path / f"cli-{maker}.png"
        if prompt[maker]["class_type"] in EDITS:
            region = tmp_path / f"cli-{maker}-region.png"
            run_cli(edit_argv(prompt, maker, places), {"--out": out, "--mask-out": region})
            (region_output,) = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"
                                and prompt[v["inputs"]["images"][0]]["class_type"] == "MaskToImage"]
            (region_ref,) = output_refs(entry, region_output)
            assert_same_picture(png_pixels(stock.view(region_ref)), png_pixels(region), f"{title}: edit region")
        else:
            run_cli(generate_argv(prompt, maker, places), {"--out": out})
        assert_same_picture(picture, png_pixels(out), f"{title}: node {output_id} against python -m tcts")
        if not thumbnail_done:
            check_thumbnail(title, picture)
            thumbnail_done = True
    for output_id, node in prompt.items():
        if node["class_type"] == "SaveImage" and output_id not in decoded:
            (ref,) = output_refs(entry, output_id)
            if prompt[node["inputs"]["images"][0]]["class_type"] == "ImageScaleBy":
                assert png_pixels(stock.view(ref)).shape[:2] == (128, 128), f"{title}: not upscaled x2"
    print(f"\n{title}: success; {previews} live previews seen")


# ---------------------------------------------------------------------------------------------------------
# real-weights folders where users put them
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [AMUSED_RANDOM, MEISSONIC_RANDOM])
def test_model_folders_of_users_appear_in_the_loader_and_generate(model, stock, browser, places, tmp_path):
    """``models/tcts/`` (aMUSEd layout) and a folder from ``extra_model_paths.yaml`` (Meissonic)."""
    browser.open()
    workflow = json.loads((REPO / "workflows" / "Text to image - Purity.json").read_text(encoding="utf-8"))
    browser.load_workflow(workflow, f"{model}.json")
    assert model in browser.combo_options("TCTSLoadModel", "model_name")
    browser.set_widget("TCTSLoadModel", "model_name", model)
    browser.set_widget("TCTSPersistentSampler", "steps", 4)
    prompt_id, body = browser.run()
    entry = stock.wait(prompt_id)
    assert journey.history_status(entry)[0] == "success", f"{model}: {entry.get('status')}\n{stock.log_tail()}"
    browser.screenshot(f"random {model} - after run")
    prompt = body["prompt"]
    (output_id, maker), = decoded_outputs(prompt).items()
    (ref,) = output_refs(entry, output_id)
    out = tmp_path / "cli.png"
    run_cli(generate_argv(prompt, maker, places), {"--out": out})
    assert_same_picture(png_pixels(stock.view(ref)), png_pixels(out), f"{model} against python -m tcts")


def test_a_missing_upscale_model_is_offered_for_download(stock, browser):
    """Without its model the upscale template opens with ComfyUI's missing-model dialog, which names the
    file, where it goes and where to download it."""
    model = stock.root / "models" / "upscale_models" / UPSCALE_MODEL
    aside = model.with_name(model.name + ".aside")
    model.rename(aside)
    try:
        browser.open()
        browser.open_template("Upscale with a model (RealESRGAN)", expect_dialog=True)
        text = " ".join(browser.open_dialogs())
        browser.screenshot("missing upscale model")
        links = browser.evaluate("Array.from(document.querySelectorAll('[role=dialog] a, [role=dialog] [title]'))"
                                 ".map(e => e.href || e.title)")
        assert UPSCALE_MODEL in text and "upscale_models" in text, text
        assert any("huggingface.co" in link and UPSCALE_MODEL in link for link in links), links
    finally:
        aside.rename(model)


def test_every_node_has_its_help_page(stock):
    info = stock.get_json("/object_info")
    ours = [k for k, v in info.items() if v.get("python_module", "").endswith(journey.PACK_NAME)]
    for node in ours:
        status, body = stock.request("GET", f"/extensions/{journey.PACK_NAME}/docs/{node}.md")
        assert status == 200 and body.strip(), f"{node}: no help page"


def test_the_console_shows_no_error_of_the_pack(browser):
    errors = browser.errors()
    ours = [m for m in errors if m.from_the_pack()]
    unexpected = [m for m in errors if not m.is_noise()]
    noise = len(errors) - len(unexpected)
    print(f"\nconsole: {len(errors)} errors, {noise} of them known offline/frontend noise "
          f"({', '.join(p for p, _ in journey.CONSOLE_NOISE)})")
    assert not ours, "\n".join(f"{m.type}: {m.text} ({m.url})" for m in ours)
    assert not unexpected, "\n".join(f"{m.type}: {m.text} ({m.url})" for m in unexpected)


# ---------------------------------------------------------------------------------------------------------
# soak: the same server, many prompts
# ---------------------------------------------------------------------------------------------------------

SOAK_PROMPTS = 100
SOAK_CANCELLED = 20
RSS_GROWTH_LIMIT = 1.10


@pytest.fixture(scope="module")
def api_prompts(browser) -> dict[str, dict]:
    """The API prompt of every workflow, as the frontend makes it (sent during the journey, or converted
    now when the soak runs alone)."""
    prompts = dict(SENT)
    for path in WORKFLOWS:
        if path.stem not in prompts:
            browser.open()
            browser.load_workflow(json.loads(path.read_text(encoding="utf-8")), path.name)
            prompts[path.stem] = browser.evaluate("async () => (await app.graphToPrompt()).output")
    return prompts


def with_seed(prompt: dict, seed: int, **changes) -> dict:
    """A copy with every seed set and the given inputs changed (``{"class": {"input": value}}``)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = seed
        for key, value in changes.get(node["class_type"], {}).items():
            node["inputs"][key] = value
    return prompt


def long_prompt(prompts: dict, seed: int) -> dict:
    """Text to image made long enough (steps, batch) to be cancelled while it runs."""
    return with_seed(prompts["Text to image - Purity"], seed, TCTSPersistentSampler={"steps": 200, "batch_size": 16})


def test_soak_100_prompts_with_cancellations(stock, api_prompts):
    log_start = len(stock.log_text())
    rng = random.Random(0)
    ordinary = [t for t in sorted(api_prompts)]
    cancel_at = set(range(4, SOAK_PROMPTS, SOAK_PROMPTS // SOAK_CANCELLED))
    assert len(cancel_at) == SOAK_CANCELLED
    done = {"success": 0, "interrupted": 0}
    baseline_rss = None
    pending: list[str] = []

    def drain() -> None:
        for pid in pending:
            entry = stock.wait(pid)
            status, messages = journey.history_status(entry)
            assert status == "success", f"prompt {pid}: {entry.get('status')}\n{stock.log_tail()}"
            done["success"] += 1
        pending.clear()

    t_start = time.monotonic()
    for i in range(SOAK_PROMPTS):
        seed = 1000 + i
        if i in cancel_at:
            drain()
            pid = stock.queue(long_prompt(api_prompts, seed))
            deadline = time.monotonic() + 60
            while pid not in stock.running() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
            assert stock.request("POST", "/interrupt", {})[0] == 200
            entry = stock.wait(pid)
            status, messages = journey.history_status(entry)
            assert status == "error" and "execution_interrupted" in messages, (i, entry.get("status"))
            done["interrupted"] += 1
        else:
            title = ordinary[rng.randrange(len(ordinary))]
            changes = {}
            if i in (2, 7):  # the switch to a second model folder within the first 10 prompts
                title, changes = "Text to image - Purity", {"TCTSLoadModel": {"model_name": AMUSED_RANDOM}}
            pending.append(stock.queue(with_seed(api_prompts[title], seed, **changes)))
            if len(pending) == 4:
                drain()
        if i == 9:
            drain()
            baseline_rss = stock.rss_bytes()
    drain()
    queue = stock.get_json("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    final_rss = stock.rss_bytes()
    log = stock.log_text()[log_start:]
    total = time.monotonic() - t_start
    print(f"\nsoak: {SOAK_PROMPTS} prompts in {total:.0f} s: {done['success']} succeeded, {done['interrupted']} "
          f"interrupted; RSS after 10 prompts {baseline_rss / 2**20:.0f} MiB, after {SOAK_PROMPTS} "
          f"{final_rss / 2**20:.0f} MiB ({final_rss / baseline_rss:.3f}x)")
    assert done == {"success": SOAK_PROMPTS - SOAK_CANCELLED, "interrupted": SOAK_CANCELLED}
    assert final_rss <= RSS_GROWTH_LIMIT * baseline_rss
    assert "Traceback" not in log, log[log.index("Traceback") - 200:][:3000]

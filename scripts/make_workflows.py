"""Build the example workflows in ``workflows/`` (ComfyUI UI format, ``"version": 0.4``).

Maintainer tool. Each workflow is described below in a few lines (nodes, the values of the inputs that
differ from the node's default, links); the UI JSON is laid out from the **node registry** of a real
ComfyUI with this pack loaded (the same ``object_info`` the frontend reads), so ``widgets_values`` always
follow the nodes' current widget order (required then optional, a seed's ``control_after_generate``
value right after it, LoadImage's upload value), socket lists and slot indices follow the nodes' inputs
and outputs, and an unknown input name, a missing required link or an out-of-range value is an error.

Commands (from the repository root; ComfyUI is the test harness's tree, see ``tests/support/comfyui_tree.py``,
set up by ``bash scripts/test.sh`` or ``.venv/bin/python -m tests.support.comfyui_tree setup``)::

    .venv/bin/python scripts/make_workflows.py                # (re)write workflows/*.json
    .venv/bin/python scripts/make_workflows.py --thumbnails   # ... and their template thumbnails (*.jpg)
    .venv/bin/python scripts/make_workflows.py --check        # exit 1 if a committed file is out of date
    .venv/bin/python scripts/make_workflows.py --inputs DIR   # only write the example input images into DIR
                                                              # (default for the pack: workflows/inputs, which
                                                              # the pack copies into ComfyUI's input folder):
                                                              # tcts_example.png, tcts_example_inpaint.png
                                                              # (alpha = mask); needs the engine and Pillow

``tests/test_workflows.py`` runs the same builder against the test session's registry and fails when a
committed file differs from what this script would write, then executes every workflow.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / "workflows"

#: the bundled demo model folder (models/shapes-demo): 64x64 px images, 8x8 tokens
MODEL = "shapes-demo"
#: the bundled demo model's TCTS selector folder (models/shapes-demo-selector)
SELECTOR = "shapes-demo-selector"
#: FAS settings of the TCTS + FAS workflow (the node's defaults; docs/method.md, FAS)
FAS_SETTINGS = dict(statistic="fft_hf", q=0.5, cutoff=0.5, regroup="every_step", freeze_after=0.25, smooth=False,
                    invert=False, low_scorer="inner", start_frac=0.0, layers="")
PROMPT = "a large red circle left of a small blue triangle on a striped background"
NEGATIVE = ""
INPUT_IMAGE = "tcts_example.png"
INPAINT_IMAGE = "tcts_example_inpaint.png"
#: the upscale model of the upscale workflow: the x4 RealESRGAN that ComfyUI's own templates offer for download
#: (the frontend's missing-model dialog takes the URL from the node's ``properties.models``); the
#: workflow scales its x4 output by 0.5, so the picture comes out x2
UPSCALE_MODEL = "RealESRGAN_x4plus.safetensors"
UPSCALE_MODEL_URL = "https://huggingface.co/Comfy-Org/Real-ESRGAN_repackaged/resolve/main/RealESRGAN_x4plus.safetensors"
UPSCALE_MODEL_SCALE = 4
#: sampler settings of the workflows; steps, cfg, width and height come from the loader (the model folder's
#: tcts_settings.json), so another model brings its own
SAMPLER_SETTINGS = dict(batch_size=1, seed=(42, "fixed"), schedule="cosine", choice_temperature=2.0,
                        temperature=1.0, preview="colours")
#: the loader outputs that feed the samplers' widgets of the same name
FROM_LOADER = ("steps", "cfg", "width", "height")

#: values of a combo/text widget the frontend never sends to the backend
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: frontend-only nodes (not in the registry)
FRONTEND_NODES = {"MarkdownNote": ["text"], "Note": ["text"]}
#: combos whose options are files on the user's machine: their values are not checked here
FILE_COMBOS = frozenset({"model_name", "image", "transformer_name", "vq_name", "clip_name", "selector_name"})
PACK_NODE_PREFIX = "TCTS"
PACK_REGISTRY_ID = "tcts"          # pyproject [project] name (Comfy Registry id)
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}


class WorkflowSpecError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# compact description
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Out:
    """An output socket, named by its output name (e.g. ``"clip"``) or its type (e.g. ``"IMAGE"``)."""

    node: "Node"
    name: str


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    values: dict[str, Any]
    size: tuple[float, float] | None = None
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, str]] = field(default_factory=list)  # downloads the frontend offers when missing

    def out(self, name: str) -> Out:
        return Out(self, name)


@dataclass
class Graph:
    """One workflow. ``title`` is its file name (without ``.json``), which the template browser shows as
    the card's title and, with ``-``/``_`` as spaces, its description; ``slug`` names its outputs."""

    title: str
    slug: str
    nodes: list[Node] = field(default_factory=list)
    groups: list[tuple[str, list[Node], str]] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return f"{self.title}.json"

    def node(self, type: str, pos: tuple[float, float], *, size=None, title=None, models=(), **values) -> Node:
        n = Node(len(self.nodes) + 1, type, pos, values, size, title, models=list(models))
        self.nodes.append(n)
        return n

    def note(self, text: str, pos: tuple[float, float], size=(380, 200), title="About this workflow") -> Node:
        n = self.node("MarkdownNote", pos, size=size, title=title, text=text)
        n.extra.update(NOTE_COLORS)
        return n

    def group(self, title: str, nodes: list[Node], color: str = "#3f789e") -> None:
        self.groups.append((title, nodes, color))


# ---------------------------------------------------------------------------------------------
# the workflows
# ---------------------------------------------------------------------------------------------

COMMON_NOTE = (
    "**Model**: `{model}` is the demo model that comes with the pack. Pick another aMUSEd / Meissonic folder "
    "(diffusers layout, in `ComfyUI/models/tcts/`) in *Load Masked Generative Model*: its outputs `steps`, "
    "`cfg`, `width` and `height` feed the sampler, so each model brings the settings it recommends (its "
    "`tcts_settings.json`, else the reference's 12 steps, cfg 10 and its own size). Disconnect a link to "
    "type your own value.\n\n"
    "**Seeds**: image *i* of a batch uses seed + *i*; the same seed and settings give the same tokens as "
    "`python -m tcts generate`.")


def _model_and_prompt(g: Graph, y: float = 0) -> tuple[Node, Node]:
    load = g.node("TCTSLoadModel", (0, y + 40), model_name=MODEL, dtype="auto")
    text = g.node("TCTSTextEncode", (360, y + 40), size=(400, 270), clip=load.out("clip"), prompt=PROMPT,
                  negative=NEGATIVE)
    return load, text


def _sampler(g: Graph, kind: str, load: Node, text: Node, pos, title=None, **values) -> Node:
    node_type = "TCTSRevocableSampler" if kind in ("random-revoke", "remdm") else "TCTSPersistentSampler"
    extra = {"repredict_visible": False} if node_type == "TCTSRevocableSampler" else {}
    settings = {**SAMPLER_SETTINGS, **{k: load.out(k) for k in FROM_LOADER}, **values}
    return g.node(node_type, pos, title=title, sampler=kind, **extra, model=load.out("model"),
                  positive=text.out("positive"), negative=text.out("negative"), **settings)


def _save(g: Graph, image: Out, pos, what: str = "") -> Node:
    return g.node("SaveImage", pos, size=(300, 340), images=image, filename_prefix=f"tcts/{g.slug}{what}")


def txt2img(title: str, slug: str, kind: str, note: str) -> Graph:
    """Load -> encode -> sampler -> VQ decode -> SaveImage."""
    g = Graph(title, slug)
    g.note(note + "\n\n" + COMMON_NOTE.format(model=MODEL), (0, 330), size=(330, 330))
    load, text = _model_and_prompt(g)
    sampler = _sampler(g, kind, load, text, (800, 40))
    decode = g.node("TCTSVQDecode", (1160, 40), vq=load.out("vq"), tokens=sampler.out("tokens"))
    save = _save(g, decode.out("image"), (1420, 40))
    g.group("1 · model and prompt", [load, text])
    g.group("2 · sample tokens", [sampler])
    g.group("3 · decode and save", [decode, save])
    return g


def upscale(title: str, slug: str, note: str, with_model: bool) -> Graph:
    """Purity txt2img, VQ decode -> Preview Image (the 64 px picture) and -> x2 upscale -> SaveImage."""
    g = Graph(title, slug)
    g.note(note + "\n\n" + COMMON_NOTE.format(model=MODEL), (0, 330), size=(330, 430))
    load, text = _model_and_prompt(g)
    sampler = _sampler(g, "purity", load, text, (800, 40))
    decode = g.node("TCTSVQDecode", (1160, 40), vq=load.out("vq"), tokens=sampler.out("tokens"))
    preview = g.node("PreviewImage", (1160, 200), size=(240, 270), images=decode.out("image"))
    if with_model:
        loader = g.node("UpscaleModelLoader", (1420, 330), model_name=UPSCALE_MODEL,
                        models=[{"name": UPSCALE_MODEL, "url": UPSCALE_MODEL_URL, "directory": "upscale_models"}])
        up = g.node("ImageUpscaleWithModel", (1420, 40), upscale_model=loader.out("UPSCALE_MODEL"),
                    image=decode.out("image"))
        scale = g.node("ImageScaleBy", (1420, 170), image=up.out("IMAGE"), upscale_method="lanczos",
                       scale_by=2.0 / UPSCALE_MODEL_SCALE)
        chain = [up, scale, loader]
    else:
        scale = g.node("ImageScaleBy", (1420, 40), image=decode.out("image"), upscale_method="lanczos", scale_by=2.0)
        chain = [scale]
    save = _save(g, scale.out("IMAGE"), (1780, 40))
    g.group("1 · model and prompt", [load, text])
    g.group("2 · sample tokens", [sampler])
    g.group("3 · decode, preview, upscale and save", [decode, preview, *chain, save])
    return g


#: the samplers of the side-by-side workflow: Purity as the reference, then the training-free samplers
#: published after the paper (docs/method.md has a section on each)
SIDE_BY_SIDE = (("purity", "Purity (reference)"), ("halton", "Halton order"), ("remdm", "ReMDM re-masking"),
                ("entropy-bounded", "Entropy-bounded"), ("noise-regularized", "Noise-regularized"))


def samplers_side_by_side() -> Graph:
    """One prompt, five samplers in parallel, each decoded and saved under its name."""
    g = Graph("Samplers side by side", "samplers_side_by_side")
    g.note("**Samplers side by side**: the same prompt and seed through Purity and the four training-free "
           "samplers published after the paper. *Halton* unmasks in a fixed low-discrepancy spatial order "
           "(Besnier et al. 2025); *ReMDM* re-masks a scheduled share of decoded tokens, least confident first "
           "(Wang et al. 2025); *Entropy-bounded* commits as many certain tokens per step as an entropy budget "
           "allows and may finish early (Ben-Hamu et al. 2025); *Noise-regularized* perturbs the confidence "
           "that orders the tokens (Shao et al. 2024). None needs a trained selector, so they work with any "
           "aMUSEd or Meissonic folder. Their options are on the *Rule* nodes (composable sampler).\n\n"
           + COMMON_NOTE.format(model=MODEL), (0, 330), size=(330, 520))
    load, text = _model_and_prompt(g)
    samplers, outputs = [], []
    for i, (kind, title) in enumerate(SIDE_BY_SIDE):
        x = 800 + 330 * i
        sampler = _sampler(g, kind, load, text, (x, 40), title=title)
        decode = g.node("TCTSVQDecode", (x, 730), vq=load.out("vq"), tokens=sampler.out("tokens"))
        decode.extra["flags"] = {"collapsed": True}      # five columns fit the screen only with the decoders folded
        save = g.node("SaveImage", (x, 780), size=(300, 220), images=decode.out("image"),
                      filename_prefix=f"tcts/{g.slug}_{kind}")
        samplers.append(sampler)
        outputs += [decode, save]
    g.group("1 · model and prompt", [load, text])
    g.group("2 · five samplers, same seed: sample, decode, save", samplers + outputs)
    return g


def txt2img_tcts_fas() -> Graph:
    """Load model + Load Token Selector -> TCTS + FAS Sampler -> VQ decode -> SaveImage."""
    g = Graph("Text to image - TCTS + FAS", "txt2img_tcts_fas")
    g.note("**Text to image, TCTS + FAS** (the paper's sampler): each step the generator's self-attention "
           "splits the tokens into low- and high-frequency groups; low-frequency areas are kept persistently "
           "(no over-simplified backgrounds), high-frequency areas are re-masked by the learned token selector "
           "(TCTS) wherever it judges a token misaligned with the prompt. The selector must be trained for the "
           f"model: `{SELECTOR}` belongs to `{MODEL}`; train one for another model with "
           "`python -m tcts train-selector` and put it in `ComfyUI/models/tcts_selectors/`. Without a "
           "selector the sampler falls back to FAS with random revocation.\n\n" + COMMON_NOTE.format(model=MODEL),
           (0, 330), size=(330, 400))
    load, text = _model_and_prompt(g)
    selector = g.node("TCTSLoadSelector", (360, 340), selector_name=SELECTOR, dtype="auto")
    sampler = g.node("TCTSFASSampler", (800, 40), size=(340, 720), model=load.out("model"),
                     positive=text.out("positive"), negative=text.out("negative"), selector=selector.out("selector"),
                     **FAS_SETTINGS, **SAMPLER_SETTINGS, **{k: load.out(k) for k in FROM_LOADER},
                     selector_guidance=1.0, selector_noise=0.0, selector_choice="topk")
    decode = g.node("TCTSVQDecode", (1160, 40), vq=load.out("vq"), tokens=sampler.out("tokens"))
    save = _save(g, decode.out("image"), (1420, 40))
    g.group("1 · model, selector and prompt", [load, text, selector])
    g.group("2 · sample tokens", [sampler])
    g.group("3 · decode and save", [decode, save])
    return g


def composable() -> Graph:
    """Rule: TCTS -> Rule: FAS (wraps it) -> Masked Sampler (Custom) -> VQ decode -> SaveImage."""
    g = Graph("Composable sampler - FAS around TCTS", "composable_fas_tcts")
    g.note("**Composable sampler**: the sampling strategy is a socket. *Rule: TCTS* (the learned selector) is the "
           "revocable rule; *Rule: FAS* wraps it (low-frequency areas persistent, high-frequency areas revoked "
           "by TCTS); *Masked Sampler (Custom)* runs whatever rule reaches its `rule` input. Swap in *Rule: Random "
           "Revoke*, *Rule: Purity* or *Rule: Uniform* (FAS needs a revocable rule), or connect *FAS Options "
           "(advanced)* for the ablation knobs. Same tokens as the *TCTS + FAS Sampler* node with the same "
           "settings.\n\n" + COMMON_NOTE.format(model=MODEL), (0, 330), size=(330, 420))
    load, text = _model_and_prompt(g)
    selector = g.node("TCTSLoadSelector", (360, 340), selector_name=SELECTOR, dtype="auto")
    tcts = g.node("TCTSRuleTCTS", (360, 560), size=(320, 180), model=load.out("model"),
                  selector=selector.out("selector"))
    fas = g.node("TCTSRuleFAS", (360, 800), size=(320, 110), inner=tcts.out("rule"), q=FAS_SETTINGS["q"])
    sampler = g.node("TCTSCustomSampler", (800, 40), size=(340, 440), rule=fas.out("rule"), model=load.out("model"),
                     positive=text.out("positive"), negative=text.out("negative"), **SAMPLER_SETTINGS,
                     **{k: load.out(k) for k in FROM_LOADER})
    decode = g.node("TCTSVQDecode", (1160, 40), vq=load.out("vq"), tokens=sampler.out("tokens"))
    save = _save(g, decode.out("image"), (1420, 40))
    g.group("1 · model, selector and prompt", [load, text, selector])
    g.group("2 · the rule: FAS around TCTS", [tcts, fas])
    g.group("3 · sample", [sampler])
    g.group("4 · decode and save", [decode, save])
    return g


def img2img() -> Graph:
    g = Graph("Image to image", "img2img")
    g.note("**img2img**: *VQ Encode* turns your image into tokens; the sampler re-masks part of them and "
           "regenerates. The example image `tcts_example.png` is copied into ComfyUI's `input/` folder when "
           "the pack loads; pick your own in *Load Image* (the size must be a multiple of the model's token "
           "size: 8 px for the demo model, 16 px for aMUSEd, 32 px for models that downsample). `strength` = "
           "fraction of the steps that run (0.5: half). `strength_mode` reference reproduces diffusers "
           "(strength 1.0 then masks *nothing*); full makes 1.0 a pure text-to-image run. Width/height are "
           "taken from the image.\n\n" + COMMON_NOTE.format(model=MODEL), (0, 330), size=(330, 460))
    load, text = _model_and_prompt(g)
    image = g.node("LoadImage", (360, 360), size=(320, 330), image=INPUT_IMAGE)
    encode = g.node("TCTSVQEncode", (800, 560), vq=load.out("vq"), image=image.out("IMAGE"))
    sampler = _sampler(g, "purity", load, text, (800, 40), start_tokens=encode.out("tokens"), strength=0.5,
                       strength_mode="reference")
    decode = g.node("TCTSVQDecode", (1160, 40), vq=load.out("vq"), tokens=sampler.out("tokens"))
    save = _save(g, decode.out("image"), (1420, 40))
    g.group("1 · model, prompt and image", [load, text, image])
    g.group("2 · encode and sample", [sampler, encode])
    g.group("3 · decode and save", [decode, save])
    return g


def inpaint() -> Graph:
    g = Graph("Inpaint", "inpaint")
    g.note("**Inpaint**: Load Image gives the picture *and* its mask (transparent pixels = regenerate). The "
           "example `tcts_example_inpaint.png` (copied into ComfyUI's `input/` folder when the pack loads) has "
           "a transparent hole around the triangle; for your own image right-click *Load Image* → *Open in "
           "MaskEditor* and paint one. The mask is resized to the token grid and thresholded at 0.5; tokens "
           "outside it are kept. Linear schedule and strength 1.0, like diffusers' AmusedInpaintPipeline."
           "\n\n" + COMMON_NOTE.format(model=MODEL), (0, 330), size=(330, 440))
    load, text = _model_and_prompt(g)
    image = g.node("LoadImage", (360, 360), size=(320, 330), image=INPAINT_IMAGE)
    encode = g.node("TCTSVQEncode", (800, 560), vq=load.out("vq"), image=image.out("IMAGE"))
    sampler = _sampler(g, "purity", load, text, (800, 40), schedule="linear", start_tokens=encode.out("tokens"),
                       mask=image.out("MASK"), strength=1.0, strength_mode="reference")
    decode = g.node("TCTSVQDecode", (1160, 40), vq=load.out("vq"), tokens=sampler.out("tokens"))
    save = _save(g, decode.out("image"), (1420, 40))
    g.group("1 · model, prompt, image and mask", [load, text, image])
    g.group("2 · encode and sample", [sampler, encode])
    g.group("3 · decode and save", [decode, save])
    return g


#: mask-free edit example: the word of the source prompt (PROMPT) whose object changes, and the target prompt
EDIT_WORD = "red"
EDIT_TARGET = "a large red square left of a small blue triangle on a striped background"


def mask_free_edit() -> Graph:
    """Load Image -> VQ Encode -> Mask-free Edit (source / target prompt, word) -> decode + save, region saved."""
    g = Graph("Mask-free edit", "mask_free_edit")
    g.note("**Mask-free edit**: no mask to paint. Name the object by any word of the source prompt: its noun, "
           f"an adjective (here `{EDIT_WORD}`) or the phrase. The region is where the target prompt makes the "
           "generator expect other tokens than the source prompt (`select` = contrast; `object` reads the "
           "cross-attention of the noun the word describes); tokens outside it stay exactly the image's "
           "tokens, tokens inside are regenerated with the target prompt (TCTS when a selector is connected, "
           "else random-revoke; schedule over the region only). The source prompt should describe the image and "
           "contain the word (Masked Generative Text Encode records its tokens). `threshold`/`k`/`top_q`/`dilate` "
           "size the region; the second Save Image shows it: exactly what was regenerated. The example image `tcts_example.png` is copied into "
           "ComfyUI's `input/` folder when the pack loads." + "\n\n"
           + COMMON_NOTE.format(model=MODEL).replace("python -m tcts generate", "python -m tcts edit"),
           (0, 330), size=(330, 460))
    load, source = _model_and_prompt(g)
    target = g.node("TCTSTextEncode", (360, 340), size=(400, 270), title="Target prompt", clip=load.out("clip"),
                    prompt=EDIT_TARGET, negative=NEGATIVE)
    image = g.node("LoadImage", (360, 640), size=(320, 330), image=INPUT_IMAGE)
    encode = g.node("TCTSVQEncode", (800, 760), vq=load.out("vq"), image=image.out("IMAGE"))
    edit = g.node("TCTSMaskFreeEdit", (800, 40), size=(340, 640), model=load.out("model"),
                  source_tokens=encode.out("tokens"), source=source.out("positive"), target=target.out("positive"),
                  negative=target.out("negative"), word=EDIT_WORD, strategy="auto", steps=load.out("steps"),
                  cfg=load.out("cfg"), seed=(42, "fixed"), schedule="linear")
    decode = g.node("TCTSVQDecode", (1180, 40), vq=load.out("vq"), tokens=edit.out("tokens"))
    save = _save(g, decode.out("image"), (1440, 40))
    region = g.node("MaskToImage", (1180, 420), mask=edit.out("region"))
    save_region = _save(g, region.out("IMAGE"), (1440, 420), "_region")
    g.group("1 · model, prompts and image", [load, source, target, image])
    g.group("2 · encode and edit", [edit, encode])
    g.group("3 · decode and save (edit, region)", [decode, save, region, save_region])
    return g


def all_graphs() -> list[Graph]:
    return [
        txt2img("Text to image - Purity", "txt2img_purity", "purity",
                "**Text to image, Purity** (MaskGIT / aMUSEd confidence order): reproduces diffusers' "
                "AmusedPipeline token for token for the same seed and settings. Tokens are kept once chosen."),
        txt2img("Text to image - Uniform", "txt2img_uniform", "uniform",
                "**Text to image, Uniform**: persistent like Purity, but the positions to keep each step "
                "are drawn at random instead of by confidence (often better object coverage)."),
        txt2img("Text to image - Random Revoke", "txt2img_random_revoke", "random-revoke",
                "**Text to image, Random Revoke** (revocable): every step the kept set is drawn afresh "
                "over all positions, so earlier tokens can be revoked and resampled."),
        txt2img_tcts_fas(),
        composable(),
        samplers_side_by_side(),
        img2img(),
        inpaint(),
        upscale("Upscale with a core node", "upscale_core",
                "**Chaining core nodes**: *VQ Decode* gives a standard IMAGE, so any core node can follow; "
                "here *Upscale Image By* (lanczos, x2) before *Save Image*. *Preview Image* shows the model's "
                "own picture.", with_model=False),
        upscale("Upscale with a model (RealESRGAN)", "upscale_model",
                "**Upscale with a model**: *Upscale Image (using Model)* with RealESRGAN x4plus, then *Upscale "
                "Image By* 0.5, so the picture comes out x2. If the model is missing, ComfyUI offers it for "
                f"download when the workflow opens; or download `{UPSCALE_MODEL}` yourself from "
                f"{UPSCALE_MODEL_URL} and put it in `ComfyUI/models/upscale_models/`, then press R (refresh). "
                "Any other upscale model works too: pick it in *Load Upscale Model* and set the scale to "
                "2 / its factor.", with_model=True),
        mask_free_edit(),
    ]


# ---------------------------------------------------------------------------------------------
# registry -> UI JSON
# ---------------------------------------------------------------------------------------------

Lookup = Callable[[str], Mapping[str, Any] | None]


def _spec(spec) -> tuple[Any, dict]:
    if isinstance(spec, (list, tuple)):
        return (spec[0] if spec else None), (dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], Mapping) else {})
    return spec, {}


def input_specs(info: Mapping[str, Any]) -> list[dict]:
    """Inputs of a node in the frontend's order: ``[{name, type, opts, optional, widget}]``."""
    inputs, order = info.get("input") or {}, info.get("input_order") or {}
    out = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in [n for n in order.get(section, []) if n in specs] or list(specs):
            typ, opts = _spec(specs[name])
            is_combo = isinstance(typ, (list, tuple)) or typ == "COMBO"
            widget = (is_combo or typ in WIDGET_TYPES) and not opts.get("forceInput")
            if isinstance(typ, (list, tuple)):
                opts = {**opts, "options": list(typ)}
                typ = "COMBO"
            out.append({"name": name, "type": typ, "opts": opts, "optional": section == "optional", "widget": widget})
    return out


def _has_control(spec: dict) -> bool:
    if "control_after_generate" in spec["opts"]:
        return bool(spec["opts"]["control_after_generate"])
    return spec["type"] == "INT" and spec["name"] in ("seed", "noise_seed")


def _check_value(where: str, spec: dict, value: Any) -> None:
    typ, opts = spec["type"], spec["opts"]
    if typ == "COMBO":
        options = opts.get("options") or []
        if spec["name"] not in FILE_COMBOS and options and value not in options:
            raise WorkflowSpecError(f"{where}: {value!r} is not one of {options}")
    elif typ in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ == "INT" and not isinstance(value, int)):
            raise WorkflowSpecError(f"{where}: {value!r} is not an {typ}")
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            raise WorkflowSpecError(f"{where}: {value!r} is outside [{opts.get('min')}, {opts.get('max')}]")
    elif typ == "BOOLEAN" and not isinstance(value, bool):
        raise WorkflowSpecError(f"{where}: {value!r} is not a BOOLEAN")
    elif typ == "STRING" and not isinstance(value, str):
        raise WorkflowSpecError(f"{where}: {value!r} is not a STRING")


def _default_size(info: Mapping[str, Any] | None, n_sockets: int, n_widgets: int, n_outputs: int) -> list[float]:
    rows = max(n_sockets, n_outputs)
    return [320, 30 + 22 * rows + 26 * n_widgets]


def build(graph: Graph, lookup: Lookup) -> dict:
    """The UI JSON (format 0.4) of ``graph``, laid out from the registry (``lookup``: class -> object_info)."""
    infos: dict[int, Mapping[str, Any] | None] = {}
    for n in graph.nodes:
        if n.type in FRONTEND_NODES:
            infos[n.id] = None
            continue
        info = lookup(n.type)
        if info is None:
            raise WorkflowSpecError(f"{graph.title}: node type {n.type} is not registered")
        infos[n.id] = info

    def out_slot(o: Out) -> tuple[int, str]:
        info = infos[o.node.id]
        if info is None:
            raise WorkflowSpecError(f"{graph.title}: {o.node.type} has no outputs")
        names, types = list(info.get("output_name") or info["output"]), list(info["output"])
        for i, name in enumerate(names):
            if name == o.name:
                return i, types[i]
        if types.count(o.name) == 1:
            i = types.index(o.name)
            return i, types[i]
        raise WorkflowSpecError(f"{graph.title}: {o.node.type} (node {o.node.id}) has no output {o.name!r} ({names})")

    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    ui_nodes: dict[int, dict] = {}
    for n in graph.nodes:
        info = infos[n.id]
        if info is None:
            ui_nodes[n.id] = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size or (380, 200)),
                              "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [],
                              **({"title": n.title} if n.title else {}), "properties": {},
                              "widgets_values": [n.values[k] for k in FRONTEND_NODES[n.type]], **n.extra}
            continue
        specs = input_specs(info)
        known = {s["name"] for s in specs}
        unknown = set(n.values) - known
        if unknown:
            raise WorkflowSpecError(f"{graph.title}: {n.type} (node {n.id}) has no input(s) {sorted(unknown)}; "
                                    f"it has {[s['name'] for s in specs]}")
        sockets, widgets, linked_widgets = [], [], []
        for s in specs:
            where = f"{graph.title}: {n.type} (node {n.id}) input {s['name']!r}"
            value = n.values.get(s["name"], ...)
            if not s["widget"]:
                entry = {"name": s["name"], "type": s["type"], "link": None}
                if s["optional"]:
                    entry["shape"] = 7
                if isinstance(value, Out):
                    slot, typ = out_slot(value)
                    if typ != s["type"] and "*" not in (typ, s["type"]):
                        raise WorkflowSpecError(f"{where}: output type {typ} does not fit input type {s['type']}")
                    link_id = len(links) + 1
                    links.append([link_id, value.node.id, slot, n.id, len(sockets), typ])
                    out_links.setdefault((value.node.id, slot), []).append(link_id)
                    entry["link"] = link_id
                elif value is not ...:
                    raise WorkflowSpecError(f"{where}: a socket needs a link (node.out(...)), got {value!r}")
                elif not s["optional"]:
                    raise WorkflowSpecError(f"{where}: required input is not connected")
                sockets.append(entry)
                continue
            if isinstance(value, Out):  # a widget fed by a link: its input entry follows the sockets
                linked_widgets.append((s, value, where))
                value = ...
            control = None
            if _has_control(s):
                if isinstance(value, tuple):
                    value, control = value
                control = control or "fixed"
            if value is ...:
                if "default" not in s["opts"]:
                    raise WorkflowSpecError(f"{where}: no value given and the input has no default")
                value = s["opts"]["default"]
            _check_value(where, s, value)
            widgets.append(value)
            if control is not None:
                widgets.append(control)
            if s["opts"].get("image_upload"):
                widgets.append("image")
        for s, value, where in linked_widgets:
            slot, typ = out_slot(value)
            if typ != s["type"]:
                raise WorkflowSpecError(f"{where}: output type {typ} does not fit widget type {s['type']}")
            link_id = len(links) + 1
            links.append([link_id, value.node.id, slot, n.id, len(sockets), typ])
            out_links.setdefault((value.node.id, slot), []).append(link_id)
            sockets.append({"name": s["name"], "type": s["type"], "widget": {"name": s["name"]}, "link": link_id})
        outputs = [{"name": name, "type": typ, "links": [], "slot_index": i}
                   for i, (name, typ) in enumerate(zip(info.get("output_name") or info["output"], info["output"]))]
        props = {"Node name for S&R": n.type,
                 "cnr_id": PACK_REGISTRY_ID if n.type.startswith(PACK_NODE_PREFIX) else "comfy-core"}
        if n.models:
            props["models"] = n.models
        ui_nodes[n.id] = {
            "id": n.id, "type": n.type, "pos": list(n.pos),
            "size": list(n.size or _default_size(info, len(sockets), len(widgets), len(outputs))),
            "flags": {}, "order": 0, "mode": 0, "inputs": sockets, "outputs": outputs,
            **({"title": n.title} if n.title else {}), "properties": props, "widgets_values": widgets, **n.extra}
    for (node_id, slot), ids in out_links.items():
        ui_nodes[node_id]["outputs"][slot]["links"] = ids

    # execution order as the frontend computes it: a topological order (sources first)
    indeg = {i: 0 for i in ui_nodes}
    for l in links:
        indeg[l[3]] += 1
    order, ready = [], sorted(i for i, d in indeg.items() if d == 0)
    while ready:
        i = ready.pop(0)
        order.append(i)
        for l in links:
            if l[1] == i:
                indeg[l[3]] -= 1
                if indeg[l[3]] == 0:
                    ready.append(l[3])
                    ready.sort()
    if len(order) != len(ui_nodes):
        raise WorkflowSpecError(f"{graph.title}: the graph has a cycle")
    for k, i in enumerate(order):
        ui_nodes[i]["order"] = k

    groups = []
    for gid, (title, members, color) in enumerate(graph.groups, 1):
        boxes = [(ui_nodes[m.id]["pos"], ui_nodes[m.id]["size"]) for m in members]
        x0 = min(p[0] for p, _ in boxes) - 10
        y0 = min(p[1] for p, _ in boxes) - 40 - 30
        x1 = max(p[0] + s[0] for p, s in boxes) + 10
        y1 = max(p[1] + s[1] for p, s in boxes) + 10
        groups.append({"id": gid, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color,
                       "font_size": 24, "flags": {}})

    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tcts/workflows/{graph.slug}")),
        "revision": 0,
        "last_node_id": max(ui_nodes),
        "last_link_id": len(links),
        "nodes": [ui_nodes[n.id] for n in graph.nodes],
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": fitted_view([ui_nodes[n.id] for n in graph.nodes], groups)},
        "version": 0.4,
    }


#: where the graph should appear when it opens: a 1600 x 1000 px browser window minus the menu bars above,
#: the sidebar on the left and the minimap at the bottom right (screen px)
VIEW_BOX = (80, 150, 1560, 740)
#: LiteGraph draws nodes without their widgets below about this scale; never fit smaller
MIN_SCALE = 0.6


def fitted_view(nodes: list[dict], groups: list[dict]) -> dict:
    """The canvas position (``extra.ds``) that shows the whole graph inside :data:`VIEW_BOX` when the
    frontend opens the workflow (LiteGraph: screen = (graph + offset) * scale)."""
    boxes = [(*n["pos"], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in nodes]
    boxes += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
               g["bounding"][1] + g["bounding"][3]) for g in groups]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    left, top, right, bottom = VIEW_BOX
    scale = max(MIN_SCALE, min(1.0, (right - left) / (x1 - x0), (bottom - top) / (y1 - y0)))
    scale = round(scale, 3)
    return {"scale": scale, "offset": [round(left / scale - x0, 1), round(top / scale - y0, 1)]}


def dumps(obj: Any, indent: int = 0) -> str:
    """JSON with 2-space indentation, but lists of scalars (links, pos, widgets_values) on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return json.dumps(obj, ensure_ascii=False)
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def render_all(lookup: Lookup) -> dict[str, str]:
    """File name -> file text of every workflow."""
    return {g.file_name: dumps(build(g, lookup)) + "\n" for g in all_graphs()}


# ---------------------------------------------------------------------------------------------
# example input images
# ---------------------------------------------------------------------------------------------

#: the area the inpaint example regenerates: the right half around the triangle (token-aligned at 16 px)
INPAINT_BOX = (32, 16, 64, 48)
EXAMPLE_SIZE = 64


def example_image(size: int = EXAMPLE_SIZE):
    """The shapes-world scene of :data:`PROMPT` (the demo model's world), as PIL RGB."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from lab.shapes.world import render, scene_from_caption

    pixels = render(scene_from_caption(PROMPT, seed=0), size)
    return Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB")


def example_inpaint_image(size: int = EXAMPLE_SIZE):
    """:func:`example_image` as RGBA whose alpha is 0 inside :data:`INPAINT_BOX` (ComfyUI's LoadImage
    turns that into MASK = 1 - alpha = 1 = regenerate)."""
    from PIL import Image, ImageDraw

    rgba = example_image(size).convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    s = size / EXAMPLE_SIZE
    x0, y0, x1, y1 = INPAINT_BOX
    ImageDraw.Draw(alpha).rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], fill=0)
    rgba.putalpha(alpha)
    return rgba


def write_example_inputs(folder: str | Path) -> list[Path]:
    """Write ``tcts_example.png`` and ``tcts_example_inpaint.png`` (the images the workflows load)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / INPUT_IMAGE, folder / INPAINT_IMAGE]
    example_image().save(paths[0])
    example_inpaint_image().save(paths[1])
    return paths


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _boot_comfyui():
    """The harness's in-process ComfyUI with this pack loaded (the pack registers its bundled models)."""
    import tempfile

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support import comfyui as harness

    comfy = harness.get_comfyui(base_dir=tempfile.mkdtemp(prefix="tcts-make-workflows-"))
    comfy.load_custom_nodes(ROOT)
    return comfy


def registry_lookup() -> Lookup:
    """``node_info`` of the harness's in-process ComfyUI with this pack loaded."""
    return _boot_comfyui().node_info


#: thumbnails: the picture a workflow makes, enlarged with square pixels (the demo's pictures are 64 px)
THUMBNAIL_SIZE = 256
THUMBNAIL_QUALITY = 92
IMAGE_OUTPUTS = ("SaveImage", "PreviewImage")


def thumbnail_node(prompt: Mapping[str, Any]) -> str:
    """The output node whose picture is the workflow's thumbnail: the first Save/Preview Image fed straight
    by a VQ Decode (the model's own picture, before any upscaler)."""
    for node_id in sorted(prompt, key=int):
        node = prompt[node_id]
        if node["class_type"] in IMAGE_OUTPUTS:
            source = node["inputs"]["images"][0]
            if prompt[source]["class_type"] == "TCTSVQDecode":
                return node_id
    raise WorkflowSpecError("no Save/Preview Image is fed by a VQ Decode")


def ancestors(prompt: Mapping[str, Any], node_id: str) -> dict:
    """``prompt`` cut down to ``node_id`` and what it depends on."""
    keep, todo = {}, [node_id]
    while todo:
        current = todo.pop()
        if current in keep:
            continue
        keep[current] = prompt[current]
        todo += [v[0] for v in prompt[current]["inputs"].values() if isinstance(v, list) and len(v) == 2
                 and isinstance(v[0], str)]
    return keep


def thumbnail(image) -> "Any":
    """A PIL thumbnail of a picture: :data:`THUMBNAIL_SIZE` px on its longer side, square pixels kept."""
    from PIL import Image

    factor = max(1, THUMBNAIL_SIZE // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def write_thumbnails(out: Path) -> list[Path]:
    """Run every workflow's thumbnail branch in ComfyUI and write ``<title>.jpg`` beside its JSON (the
    template browser shows ``/api/workflow_templates/<pack>/<name>.jpg`` on the card)."""
    from PIL import Image

    comfy = _boot_comfyui()
    written = []
    write_example_inputs(comfy.folder_paths.get_input_directory())
    for graph in all_graphs():
        workflow = json.loads((out / graph.file_name).read_text(encoding="utf-8"))
        prompt = comfy.workflow_to_prompt(workflow)
        node_id = thumbnail_node(prompt)
        result = comfy.run(ancestors(prompt, node_id))
        (png,) = result.images(node_id)
        with Image.open(png) as im:
            path = out / f"{graph.title}.jpg"
            thumbnail(im.convert("RGB")).save(path, quality=THUMBNAIL_QUALITY)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/make_workflows.py", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only compare with the committed files; exit 1 on a difference")
    p.add_argument("--out", type=Path, default=WORKFLOWS_DIR, help="output folder (default: workflows/)")
    p.add_argument("--inputs", type=Path, default=None,
                   help="only write the example input images into this folder (no ComfyUI needed)")
    p.add_argument("--thumbnails", action="store_true",
                   help="also run each workflow's picture branch and write its template thumbnail (<title>.jpg)")
    a = p.parse_args(argv)
    if a.inputs is not None:
        for path in write_example_inputs(a.inputs):
            print(f"wrote {path}")
        return 0
    files = render_all(registry_lookup())
    stale = []
    for name, text in files.items():
        path = a.out / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            stale.append(name)
            if not a.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    extra = sorted(p.name for p in a.out.glob("*.json") if p.name not in files)
    if a.check:
        problems = ([f"out of date: {', '.join(stale)}"] if stale else []) + \
                   ([f"not generated by this script: {', '.join(extra)}"] if extra else [])
        print("; ".join(problems) if problems else f"{len(files)} workflows up to date")
        return 1 if problems else 0
    for name in extra:
        (a.out / name).unlink()
        (a.out / name).with_suffix(".jpg").unlink(missing_ok=True)
    print(f"wrote {', '.join(stale)}" if stale else f"{len(files)} workflows already up to date")
    if extra:
        print(f"removed {', '.join(extra)}")
    if a.thumbnails:
        for path in write_thumbnails(a.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

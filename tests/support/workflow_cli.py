"""The ``python -m tcts`` command that does what one node of an API-format ComfyUI prompt does.

A workflow's sampler node (or Mask-free Edit node) and the CLI share every setting, so a prompt the
frontend queued can be replayed on the command line and the two results compared. Names that the prompt
holds (model folder, selector, input image) are turned into paths by a :class:`Places`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from PIL import Image

from tcts.sampling.fas import fas_name

SAMPLERS = {"TCTSPersistentSampler", "TCTSRevocableSampler", "TCTSFASSampler", "TCTSCustomSampler"}
#: rule node -> the CLI's sampler name (FAS: by its inner rule)
RULE_NODES = {"TCTSRulePurity": "purity", "TCTSRuleUniform": "uniform", "TCTSRuleRandomRevoke": "random-revoke",
              "TCTSRuleTCTS": "tcts", "TCTSRuleHalton": "halton", "TCTSRuleReMDM": "remdm",
              "TCTSRuleEntropyBounded": "entropy-bounded", "TCTSRuleNoiseRegularized": "noise-regularized"}
#: rule node -> the flag prefix of its option family (tcts/cli_rules.py, FAMILIES)
FAMILY_FLAGS = {"TCTSRuleHalton": "--halton-", "TCTSRuleReMDM": "--remdm-", "TCTSRuleEntropyBounded": "--eb-",
                "TCTSRuleNoiseRegularized": "--"}
EDITS = {"TCTSMaskFreeEdit"}


@dataclass
class Places:
    """Where the CLI finds what a prompt names: ``model(name)``, ``selector(name)``, ``image(name)``;
    masks derived from RGBA inputs are written into ``work``."""

    model: Callable[[str], Path]
    selector: Callable[[str], Path]
    image: Callable[[str], Path]
    work: Path
    masks: dict[str, Path] = field(default_factory=dict)

    def mask(self, image_name: str) -> Path:
        """The CLI's mask file (white = regenerate) for an RGBA input whose alpha ComfyUI's Load Image reads
        as MASK = 1 - alpha."""
        if image_name not in self.masks:
            out = self.work / f"{Path(image_name).stem}.mask.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(self.image(image_name)) as im:
                alpha = np.asarray(im.getchannel("A"))
            Image.fromarray(255 - alpha, mode="L").save(out)
            self.masks[image_name] = out
        return self.masks[image_name]


def node_ids(prompt: Mapping[str, dict], classes: set[str]) -> list[str]:
    return sorted((k for k, v in prompt.items() if v["class_type"] in classes), key=int)


def _source(prompt: Mapping[str, dict], ref) -> tuple[dict, int]:
    node_id, slot = ref
    return prompt[str(node_id)], int(slot)


def _f(value) -> str:
    return repr(float(value))


#: loader outputs (slot -> name) that carry the model folder's recommended settings
LOADER_SETTINGS = {3: "steps", 4: "cfg", 5: "width", 6: "height"}


def _setting(prompt, inputs: dict, name: str, flag: str, fmt=str) -> list[str]:
    """``[flag, value]`` for a widget value; nothing when the widget is fed by the loader's output of the
    same name: the CLI then takes the model folder's recommendation too."""
    value = inputs[name]
    if isinstance(value, list):
        source, slot = _source(prompt, value)
        loader, _ = _source(prompt, inputs["model"])
        assert source is loader and LOADER_SETTINGS.get(slot) == name, f"{name} is linked to something else"
        return []
    return [flag, fmt(value)]


def _text(prompt, inputs: dict, name: str, slot: int) -> str:
    node, got = _source(prompt, inputs[name])
    assert node["class_type"] == "TCTSTextEncode" and got == slot, f"{name} must come from Masked Generative Text Encode"
    return node["inputs"]["prompt" if slot == 0 else "negative"]


def _model(prompt, inputs: dict, places: Places) -> list[str]:
    load, _ = _source(prompt, inputs["model"])
    assert load["class_type"] == "TCTSLoadModel", "the model must come from Load Masked Generative Model"
    return ["--model", str(places.model(load["inputs"]["model_name"]))]


def _selector(prompt, inputs: dict, places: Places) -> list[str]:
    if "selector" not in inputs:
        return []
    loader, _ = _source(prompt, inputs["selector"])
    assert loader["class_type"] == "TCTSLoadSelector"
    return ["--selector", str(places.selector(loader["inputs"]["selector_name"]))]


def _image(prompt, ref, slot: int) -> str:
    encode, _ = _source(prompt, ref)
    assert encode["class_type"] == "TCTSVQEncode"
    image, got = _source(prompt, encode["inputs"]["image"])
    assert image["class_type"] == "LoadImage" and got == slot
    return image["inputs"]["image"]


def rule_argv(prompt: Mapping[str, dict], ref, places: Places) -> tuple[str, list[str]]:
    """(sampler, options) for the chain of rule nodes feeding a custom sampler's ``rule`` input."""
    node, _ = _source(prompt, ref)
    inputs, kind = node["inputs"], node["class_type"]
    argv = ["--repredict-visible"] if inputs.get("repredict_visible") else []
    if kind == "TCTSRuleFAS":
        inner, argv = rule_argv(prompt, inputs["inner"], places)
        fas = dict(inputs)
        if "options" in inputs:
            fas.update(_source(prompt, inputs["options"])[0]["inputs"])
        argv += ["--fas-q", _f(fas["q"])]
        for name in ("statistic", "cutoff", "regroup", "freeze_after", "low_scorer", "start_frac"):
            if name in fas:
                value = fas[name]
                argv += [f"--fas-{name.replace('_', '-')}", _f(value) if isinstance(value, float) else str(value)]
        argv += ["--fas-smooth"] * bool(fas.get("smooth")) + ["--fas-invert"] * bool(fas.get("invert"))
        argv += ["--fas-layers", fas["layers"]] if fas.get("layers") else []
        return fas_name(inner), argv
    if kind == "TCTSRuleTCTS":
        argv += _selector(prompt, inputs, places) + [
            "--selector-guidance", _f(inputs["selector_guidance"]), "--selector-noise", _f(inputs["selector_noise"]),
            "--selector-choice", inputs["selector_choice"]]
    if kind in FAMILY_FLAGS:
        for name, value in inputs.items():
            if name == "repredict_visible":
                continue
            flag = FAMILY_FLAGS[kind] + name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else flag.replace("--", "--no-", 1))
            else:
                argv += [flag, _f(value) if isinstance(value, float) else str(value)]
    return RULE_NODES[kind], argv


def generate_argv(prompt: Mapping[str, dict], node_id: str, places: Places) -> list[str]:
    """``generate`` arguments for the sampler node ``node_id`` (without ``--out`` / ``--tokens-out``)."""
    s = prompt[node_id]["inputs"]
    rule_options: list[str] = []
    if prompt[node_id]["class_type"] == "TCTSCustomSampler":
        sampler, rule_options = rule_argv(prompt, s["rule"], places)
    else:
        sampler = s.get("sampler") or ("tcts-fas" if "selector" in s else "fas")
    argv = ["generate", *_model(prompt, s, places), "--prompt", _text(prompt, s, "positive", 0),
            "--negative", _text(prompt, s, "negative", 1), "--sampler", sampler,
            *_setting(prompt, s, "steps", "--steps"), *_setting(prompt, s, "cfg", "--cfg", _f),
            "--seed", str(s["seed"]), "--batch-size", str(s["batch_size"]),
            "--schedule", s["schedule"], "--choice-temperature", _f(s["choice_temperature"]), "0.0",
            "--temperature", _f(s["temperature"])]
    argv += rule_options
    if s.get("repredict_visible"):
        argv.append("--repredict-visible")
    if prompt[node_id]["class_type"] == "TCTSFASSampler":
        argv += ["--fas-statistic", s["statistic"], "--fas-q", _f(s["q"]), "--fas-cutoff", _f(s["cutoff"]),
                 "--fas-regroup", s["regroup"], "--fas-freeze-after", _f(s["freeze_after"]),
                 "--fas-low-scorer", s["low_scorer"], "--fas-start-frac", _f(s["start_frac"])]
        argv += ["--fas-smooth"] * bool(s["smooth"]) + ["--fas-invert"] * bool(s["invert"])
        if s["layers"]:
            argv += ["--fas-layers", s["layers"]]
        if "selector" in s:
            argv += _selector(prompt, s, places) + [
                "--selector-guidance", _f(s["selector_guidance"]), "--selector-noise", _f(s["selector_noise"]),
                "--selector-choice", s["selector_choice"]]
    if "start_tokens" in s:
        argv += ["--init-image", str(places.image(_image(prompt, s["start_tokens"], 0))),
                 "--strength", _f(s.get("strength", 0.5)), "--strength-mode", s.get("strength_mode", "reference")]
        if "mask" in s:
            mask_source, slot = _source(prompt, s["mask"])
            assert mask_source["class_type"] == "LoadImage" and slot == 1
            argv += ["--mask", str(places.mask(mask_source["inputs"]["image"]))]
    else:
        assert "mask" not in s, "a mask needs start tokens"
        argv += _setting(prompt, s, "width", "--width") + _setting(prompt, s, "height", "--height")
    return argv


def edit_argv(prompt: Mapping[str, dict], node_id: str, places: Places) -> list[str]:
    """``edit`` arguments for the Mask-free Edit node ``node_id`` (without ``--out`` / ``--mask-out``)."""
    s = prompt[node_id]["inputs"]
    argv = ["edit", *_model(prompt, s, places), "--image", str(places.image(_image(prompt, s["source_tokens"], 0))),
            "--source-prompt", _text(prompt, s, "source", 0), "--target-prompt", _text(prompt, s, "target", 0),
            "--negative", _text(prompt, s, "negative", 1), "--word", s["word"], "--strategy", s["strategy"],
            *_setting(prompt, s, "steps", "--steps"), *_setting(prompt, s, "cfg", "--cfg", _f),
            "--seed", str(s["seed"]), "--schedule", s["schedule"],
            "--choice-temperature", _f(s["choice_temperature"]), "0.0", "--temperature", _f(s["temperature"]),
            "--threshold", s["threshold"], "--k", _f(s["k"]), "--top-q", _f(s["top_q"]), "--dilate", str(s["dilate"]),
            "--select", s["select"], "--contrast-samples", str(s["contrast_samples"])]
    argv += ["--no-blur"] * (not s["blur"]) + _selector(prompt, s, places)
    if s["region_layers"]:
        argv += ["--region-layers", s["region_layers"]]
    return argv

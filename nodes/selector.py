"""TCTS nodes: load a trained token selector, and sample with it (the learned revocable sampler).

A selector is a folder with ``config.json`` + ``model.safetensors`` (what ``python -m tcts train-selector``
writes to ``OUT/selector``) under ``models/tcts_selectors/`` (or any path ``extra_model_paths.yaml`` adds
for ``tcts_selectors``). It runs under ComfyUI's model manager (a ModelPatcher) like the generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import io

from ..tcts.selector import check_selector_matches, is_selector_folder, load_selector
from ..tcts.sampling.registry import RuleOptions, make_rule
from ..tcts.selector.rule import SelectorOptions
from . import bridge
from .folders import SELECTORS_FOLDER, named_folders
from .options import option_inputs, option_values
from .samplers import SamplerInputs, common_inputs, sample_tokens
from .types import LOADERS_CATEGORY, SAMPLERS_CATEGORY, GeneratorBundle, TokensType

DTYPES = ["auto", "fp32", "fp16", "bf16"]
SelectorType = io.Custom("TCTS_SELECTOR")


@dataclass
class SelectorBundle:
    """TCTS_SELECTOR: a token selector under ComfyUI's model manager."""

    patcher: Any                         # comfy.model_patcher.ModelPatcher around the TokenSelector
    name: str

    @property
    def model(self):
        return self.patcher.model


def selector_folders() -> dict[str, Path]:
    """Name -> path of every selector folder (``config.json`` + ``model.safetensors``) in the model paths."""
    return named_folders((SELECTORS_FOLDER,), is_selector_folder)


def resolve_selector(name: str) -> Path:
    """A listed selector by name; anything else (paths, ``../`` tricks) is refused."""
    folders = selector_folders()
    if name not in folders:
        listed = ", ".join(sorted(folders)) or "none"
        raise ValueError(f"selector {name!r} is not among the installed selectors ({listed}); put selector folders "
                         f"(config.json + model.safetensors, from train-selector) under models/{SELECTORS_FOLDER}")
    return folders[name]


class LoadSelector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSLoadSelector", display_name="Load Token Selector", category=LOADERS_CATEGORY,
            description="Loads a trained TCTS token selector (a folder with config.json + model.safetensors from "
                        "`python -m tcts train-selector`) from models/tcts_selectors. A selector is trained for one "
                        "generator: its codebook size and text width must match the model it samples with.",
            inputs=[
                io.Combo.Input("selector_name", options=sorted(selector_folders()),
                               tooltip="a selector folder under models/tcts_selectors"),
                io.Combo.Input("dtype", options=DTYPES, default="auto",
                               tooltip="auto = fp32 on CPU, what ComfyUI picks for diffusion models on GPU"),
            ],
            outputs=[SelectorType.Output(display_name="selector")])

    @classmethod
    def execute(cls, selector_name: str, dtype: str = "auto") -> io.NodeOutput:
        model = load_selector(resolve_selector(selector_name))
        patcher = bridge.wrap_generator(model, bridge.generator_dtype(model, dtype))
        return io.NodeOutput(SelectorBundle(patcher=patcher, name=selector_name))


class TCTSSelectorSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TCTSSelectorSampler", display_name="TCTS Sampler", category=SAMPLERS_CATEGORY,
            description="Text-conditioned token selection (Lee et al. 2023): every step a trained selector scores "
                        "the whole proposed token map against the prompt and the most trustworthy tokens are kept; "
                        "the rest, including earlier tokens it now distrusts, are re-masked (revocable).",
            inputs=[
                SelectorType.Input("selector", tooltip="from Load Token Selector (trained for this model)"),
                *option_inputs(SelectorOptions, prefix="selector_"),
                *common_inputs(),
            ],
            outputs=[TokensType.Output(display_name="tokens")])

    @classmethod
    def execute(cls, selector: SelectorBundle, model: GeneratorBundle, **inputs) -> io.NodeOutput:
        rule = make_rule("tcts", selector_rule_options(selector, model, inputs))
        return io.NodeOutput(sample_tokens(rule, SamplerInputs.of({"model": model, **inputs}), [selector.patcher]))


def selector_rule_options(selector: SelectorBundle | None, model: GeneratorBundle, inputs: dict) -> RuleOptions:
    """The rule options of a node with a selector socket and ``selector_*`` inputs."""
    if selector is None:
        raise ValueError("selector input is missing: connect a Load Token Selector")
    check_selector_matches(selector.model, model.model, source=f"selector {selector.name}")
    return RuleOptions(selector=option_values(SelectorOptions, inputs, prefix="selector_"),
                       selector_model=selector.model)


NODES = [LoadSelector, TCTSSelectorSampler]

"""Short spellings of engine calls for the tests: keyword arguments in, the engine's typed objects inside.

Every helper builds the same objects a user or a node builds (``Sampling``, a start, a rule, a ``Job``) and
runs the one loop, so the tests exercise the product's own path; they only save each test from repeating
the object construction.
"""
from __future__ import annotations

from typing import Any

import torch

from tcts.engine import Job, condition, make_generators, run
from tcts.sampling.fas_options import FASOptions
from tcts.sampling.loop import Draws, LoopStart, sample
from tcts.sampling.registry import RuleOptions, make_rule
from tcts.sampling.rules import RevocableOptions, Rule
from tcts.sampling.step import Conditioning
from tcts.selector.rule import SelectorOptions
from tcts.settings import Sampling
from tcts.starts import ImageToImage, Inpaint, TextToImage

FAS_NAMES = {f for f in FASOptions.__dataclass_fields__}
SELECTOR_NAMES = {"guidance", "noise", "choice"}


def rule_options(selector: Any = None, **options: Any) -> RuleOptions:
    """``RuleOptions`` from flat keyword options (FAS, selector and revocable names)."""
    fas = {k: v for k, v in options.items() if k in FAS_NAMES}
    sel = {k: v for k, v in options.items() if k in SELECTOR_NAMES}
    rev = {k: v for k, v in options.items() if k == "repredict_visible"}
    unknown = set(options) - FAS_NAMES - SELECTOR_NAMES - {"repredict_visible"}
    if unknown:
        raise TypeError(f"unknown rule options {sorted(unknown)}")
    if "layers" in fas and fas["layers"] is None:
        fas["layers"] = ""
    return RuleOptions(revocable=RevocableOptions(**rev), selector=SelectorOptions(**sel), fas=FASOptions(**fas),
                       selector_model=selector)


def rule(name: str, **options: Any) -> Rule:
    return make_rule(name, rule_options(**options))


def sampling(steps: int = 12, cfg: float = 10.0, schedule: str = "cosine",
             choice_temperature: tuple[float, float] = (2.0, 0.0), sampling_temperature: float = 1.0,
             draw_on_device: bool = False) -> Sampling:
    return Sampling(steps=steps, cfg=cfg, schedule=schedule, choice_temperature=tuple(choice_temperature),
                    temperature=sampling_temperature, draw_on_device=draw_on_device)


def loop(model: torch.nn.Module, cond: Conditioning, the_rule: Rule | str, *, steps: int = 12, grid=None,
         tokens: torch.Tensor | None = None, fixed: torch.Tensor | None = None, generators=None, draw_generators=None,
         cfg: float = 10.0, schedule: str = "cosine", choice_temperature=(2.0, 0.0), sampling_temperature=1.0,
         start_step: int = 0, starting_mask_ratio=1, callback=None, seed: int = 0) -> torch.Tensor:
    """The sampling loop with a hand-made start (tokens or an empty grid, fixed positions, start step)."""
    the_rule = make_rule(the_rule) if isinstance(the_rule, str) else the_rule
    batch = cond.batch_size
    if tokens is None:
        tokens = torch.full((batch, *grid), model.mask_token_id, dtype=torch.long)
    start = LoopStart(tokens=tokens, fixed=fixed, start_step=start_step, starting_mask_ratio=starting_mask_ratio)
    draws = Draws(generators if generators is not None else make_generators(seed, batch), draw_generators)
    return sample(model, cond, the_rule, sampling(steps, cfg, schedule, choice_temperature, sampling_temperature),
                  start, draws, callback)


def cond_for(positive, negative, width: int, height: int, batch: int) -> Conditioning:
    """A prompt's condition for ``batch`` images of ``width`` x ``height`` px."""
    return condition(positive, negative, TextToImage(width, height), batch)


def generate(pipe, prompt, negative_prompt="", *, sampler="purity", steps=None, cfg=None, seed=0, width=None,
             height=None, batch_size=1, schedule=None, choice_temperature=None, sampling_temperature=None,
             init_image=None, strength=None, strength_mode="reference", mask=None, rule_options=None,
             draw_on_device=None, callback=None):
    """``Pipeline.generate`` from flat keywords (what the CLI passes on)."""
    settings = Sampling(steps=steps, cfg=cfg, schedule=schedule,
                        choice_temperature=tuple(choice_temperature) if choice_temperature else None,
                        temperature=sampling_temperature, draw_on_device=draw_on_device)
    start = None
    if init_image is not None:
        image = pipe.encode(init_image)
        if mask is not None:
            start = Inpaint(image, mask, 1.0 if strength is None else strength)
        else:
            start = ImageToImage(image, 0.5 if strength is None else strength, strength_mode)
    elif mask is not None:
        raise ValueError("a mask needs an init image to inpaint")
    elif width is not None or height is not None:
        w, h = pipe.default_dimensions
        start = TextToImage(w if width is None else width, h if height is None else height)
    the_rule = make_rule(sampler, rule_options_from(rule_options)) if isinstance(sampler, str) else sampler
    return pipe.generate(prompt, negative_prompt, sampler=the_rule, seed=seed, batch_size=batch_size,
                         sampling=settings, start=start, callback=callback)


def rule_options_from(options: dict | None) -> RuleOptions:
    options = dict(options or {})
    selector = options.pop("selector", None)
    return rule_options(selector, **options)


def tokens_for(model, cond, *, sampler: str = "purity", rule_options: dict | None = None, seed: int = 0,
               vq_factor: int = 16, **kw) -> torch.Tensor:
    """A text-to-image run of the engine for ``cond`` on ``grid`` (or ``tokens``), like a node's job."""
    if "grid" in kw and "tokens" not in kw and "fixed" not in kw and "start_step" not in kw:
        h, w = kw.pop("grid")
        job = Job(condition=cond, sampling=sampling(**{k: kw.pop(k) for k in list(kw) if k in (
            "steps", "cfg", "schedule", "choice_temperature", "sampling_temperature", "draw_on_device")}),
                  rule=make_rule(sampler, rule_options_from(rule_options)), start=TextToImage(w * vq_factor, h * vq_factor),
                  seed=seed, callback=kw.pop("callback", None))
        if kw:
            raise TypeError(f"unused arguments {sorted(kw)}")
        return run(model, job, vq_factor)
    return loop(model, cond, make_rule(sampler, rule_options_from(rule_options)), seed=seed, **kw)


def edit(model, source_tokens, source_cond, target_cond, columns, *, generators=None, seed: int = 0,
         strategy: str = "auto", rule_options: dict | None = None, steps: int = 12, cfg: float = 10.0,
         schedule: str = "linear", choice_temperature=(2.0, 0.0), sampling_temperature: float = 1.0, region=None,
         callback=None, vq_factor: int = 16):
    """``tcts.editing.mask_free_edit`` from flat keywords (``generators`` only fix the seed: seed of the first)."""
    from tcts.editing import EditRequest, RegionOptions, mask_free_edit, resolve_strategy
    from tcts.starts import EncodedImage

    options = rule_options_from(rule_options)
    strategy = resolve_strategy(strategy, options.selector_model is not None)
    if generators is not None:
        seed = int(generators[0].initial_seed())
    b, h, w = source_tokens.shape
    request = EditRequest(source=EncodedImage(source_tokens, w * vq_factor, h * vq_factor),
                          source_condition=source_cond, columns=columns,
                          region=region if region is not None else RegionOptions())
    target = Job(condition=target_cond, sampling=sampling(steps, cfg, schedule, choice_temperature, sampling_temperature),
                 rule=make_rule(strategy, options), seed=seed, callback=callback)
    return mask_free_edit(model, request, target, vq_factor)

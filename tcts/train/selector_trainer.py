"""Guidance-sampling training of the TCTS token selector (docs/method.md, Guidance-sampling training; after
``train_token_critic.py`` of the first author's 2022 prototype code).

For each training sample (an image's VQ tokens ``x0`` and its caption):

1. draw a step ``i`` of the sampling schedule uniformly from ``0 … steps−2`` (the steps at which the sampler
   consults the selector; the last step fills everything);
2. mask ``x0`` as the sampler's map is masked *before* step ``i``: all tokens for ``i = 0``, otherwise the
   schedule's count after step ``i − 1`` (``tokens_to_mask``), at uniformly random positions;
3. reconstruct in ONE step with the frozen generator using the *same* guided sampling as inference: the
   loop's model step (CFG ``u + cfg·(c − u)`` against the encoded empty prompt, the timestep the loop
   would pass), ``softmax(logits / T)``, one categorical draw per position; visible tokens are kept:
   ``x̂ = where(masked, draw, x0)``;
4. label ``changed = (x̂ != x0)``; the selector sees ``(x̂, caption, t = (i + 1) / steps)`` — the progress
   *after* step ``i``, the value the ``tcts`` rule feeds at inference — and is trained with per-token BCE;
   with probability ``caption_dropout`` (10 %) its caption is replaced by its learned null embedding (for
   selector guidance).

Every random choice of a sample (its step, caption dropout, mask positions, proposal draws) comes from its
own CPU generator seeded by ``(seed, position in the global sample stream)``, and the stream is a seeded
permutation per epoch, so results do not depend on how samples are split over processes or micro-batches:
2 DDP processes with batch 2 train the same selector as 1 process with batch 4 (up to float rounding).
The loss of a micro-batch is its BCE *sum* divided by the number of tokens in the whole global batch
(times the world size, which DDP's gradient averaging divides out).

Optimisation: AdamW (β = 0.9, 0.96; weight decay on matrices only), linear warm-up then constant or cosine
learning rate, gradient-norm clipping, optional EMA of the weights (exported when on), gradient accumulation,
bf16 autocast on GPU. Checkpoints hold weights, EMA and optimizer state as safetensors tensors plus a JSON
file (no pickle); ``resume`` continues bit-for-bit on the same sample stream. Validation reports precision
and recall of "changed" among the positions the sampler would re-mask at that step (the re-mask budget)
against chance.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..atomic import atomic_write
from ..checkpoints import CheckpointError, read_safetensors
from ..engine import micro_conditions
from ..pipeline import Pipeline
from ..sampling.schedules import SCHEDULES, tokens_to_mask
from ..sampling.step import Conditioning, NonFiniteLogitsError, drawing_from, model_step
from ..settings import Sampling
from ..selector.model import (
    SelectorConfig,
    TokenSelector,
    check_selector_matches,
    save_selector,
)
from .data import CaptionDataset, tokenize_dataset
from .ddp import DistInfo, all_reduce_sum, barrier, wrap_model

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


@dataclass
class TrainConfig:
    """Settings of a selector training run (CLI flags of ``python -m tcts train-selector`` in brackets)."""

    steps: int = 1000                  # optimizer steps [--steps]
    batch_size: int = 4                # samples per process per micro-batch [--batch-size]
    grad_accum: int = 1                # micro-batches per optimizer step [--grad-accum]
    lr: float = 2e-4                   # peak learning rate [--lr]
    warmup: int = 1000                 # linear warm-up steps [--warmup]
    lr_schedule: str = "constant"      # after warm-up: constant or cosine (to 0) [--lr-schedule]
    weight_decay: float = 0.045        # AdamW, on weight matrices only [--weight-decay]
    betas: tuple[float, float] = (0.9, 0.96)
    grad_clip: float = 1.0             # max gradient norm, 0 = off [--grad-clip]
    ema: float = 0.0                   # EMA decay, 0 = off (prototype 0.99 every 25) [--ema]
    ema_every: int = 1                 # [--ema-every]
    cfg: float = 10.0                  # generator guidance of the reconstruction (= inference) [--cfg]
    sampling_temperature: float = 1.0  # token temperature of the reconstruction [--temperature]
    sampling_steps: int = 12           # the sampling schedule the selector is trained for [--sampling-steps]
    schedule: str | None = None        # mask schedule; None = the generator's [--schedule]
    caption_dropout: float = 0.1       # [--caption-dropout]
    resolution: int | None = None      # training size in px for folder datasets; None = the model's default
    seed: int = 0
    val_every: int = 100               # 0 = only at the end [--val-every]
    val_samples: int = 64              # validation examples (from the val set) [--val-samples]
    save_every: int = 500              # checkpoint interval, 0 = only at the end [--save-every]
    log_every: int = 10
    precision: str = "auto"            # auto (bf16 autocast on GPU, fp32 on CPU), fp32, bf16 [--precision]
    layers: int = 8                    # selector architecture [--layers --width --heads]
    width: int = 512
    heads: int = 8
    mlp_ratio: float = 4.0
    max_grid: tuple[int, int] | None = None  # position table; None = max(64, training grid)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.max_grid is not None:
            self.max_grid = tuple(self.max_grid)
        checks = [("steps", self.steps >= 1), ("batch_size", self.batch_size >= 1), ("grad_accum", self.grad_accum >= 1),
                  ("lr", self.lr > 0), ("warmup", self.warmup >= 0), ("sampling_steps", self.sampling_steps >= 2),
                  ("caption_dropout", 0 <= self.caption_dropout <= 1), ("ema", 0 <= self.ema < 1),
                  ("ema_every", self.ema_every >= 1), ("cfg", self.cfg >= 0), ("grad_clip", self.grad_clip >= 0),
                  ("sampling_temperature", self.sampling_temperature > 0), ("val_samples", self.val_samples >= 0),
                  ("lr_schedule", self.lr_schedule in ("constant", "cosine")),
                  ("precision", self.precision in ("auto", "fp32", "bf16")),
                  ("schedule", self.schedule is None or self.schedule in SCHEDULES)]
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ValueError("invalid training settings: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
                             + " (sampling_steps must be >= 2; ema in [0, 1); lr > 0; schedule one of "
                             + ", ".join(SCHEDULES) + ")")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------------------------------------
# The guidance-sampling example: mask -> one guided reconstruction -> label


def sample_generator(seed: int, position: int) -> torch.Generator:
    """The CPU generator of one sample of the stream (its step, dropout, mask and proposal draws)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(position) * 7_919 + 1) % (2 ** 62))


def masked_before_step(schedule: str, step: int, steps: int, num_tokens: int) -> int:
    """How many tokens are masked when step ``step`` starts (all for step 0)."""
    if step == 0:
        return num_tokens
    return int(tokens_to_mask(schedule, step - 1, steps, num_tokens, torch.tensor([num_tokens]))[0, 0])


def remask_budget(schedule: str, step: int, steps: int, num_tokens: int) -> int:
    """How many tokens the sampler re-masks after step ``step`` (what the validation flags)."""
    return int(tokens_to_mask(schedule, step, steps, num_tokens, torch.tensor([num_tokens]))[0, 0])


@dataclass
class Masked:
    """Token maps to reconstruct: ``x0`` ``[B, h, w]`` codebook ids, ``masked`` ``[B, h, w]`` bool, the schedule
    step each row is taken at, the prompt condition and each row's generator."""

    x0: torch.Tensor
    masked: torch.Tensor
    steps_taken: Sequence[int]
    cond: Conditioning
    generators: Sequence[torch.Generator]


@torch.no_grad()
def guidance_reconstruct(generator: torch.nn.Module, batch: Masked, sampling: Sampling,
                         autocast: bool = False) -> torch.Tensor:
    """One guided reconstruction of masked token maps with the frozen generator: the sampling loop's own model
    step (``tcts.sampling.step.model_step``) with ``sampling.steps``, ``cfg`` and ``temperature``.

    Rows with the same step share one forward (the generator gets the loop's timestep ``steps − 1 − i``).
    Returns ``x̂ = where(masked, draw, x0)``, row b's draw from its own generator."""
    x0, masked = batch.x0, batch.masked
    inputs = torch.where(masked, generator.mask_token_id, x0)
    proposal = x0.clone()
    device = next(generator.parameters()).device
    for step in sorted(set(batch.steps_taken)):
        rows = [k for k, s in enumerate(batch.steps_taken) if s == step]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            try:
                drawn = model_step(generator, inputs[rows].to(device), batch.cond.rows(rows), sampling.cfg,
                                   sampling.steps - 1 - step, sampling.temperature,
                                   drawing_from([batch.generators[k] for k in rows]), upcast=True)
            except NonFiniteLogitsError:
                raise NonFiniteLogitsError("the generator returned NaN/inf logits during selector training") from None
        draws = drawn.draws.view(len(rows), *x0.shape[1:]).to(x0.device)
        proposal[rows] = torch.where(masked[rows], draws, x0[rows])
    return proposal


@dataclass
class Batch:
    tokens: torch.Tensor        # [B, h, w] the reconstruction x̂ the selector reads
    changed: torch.Tensor       # [B, h, w] bool labels
    masked: torch.Tensor        # [B, h, w] bool: masked in the generator's input
    text: torch.Tensor          # [B, 77, D] caption hidden states
    drop: torch.Tensor          # [B] bool: caption replaced by the null embedding
    t: torch.Tensor             # [B] progress after the step
    steps_taken: list[int]      # [B] schedule step of each row
    budget: torch.Tensor        # [B] re-mask budget after the step


class ExampleMaker:
    """Turns stream positions into training batches (or a fixed validation set) with a frozen pipeline."""

    def __init__(self, pipeline: Pipeline, data: CaptionDataset, tokens: torch.Tensor, config: TrainConfig,
                 device: torch.device, autocast: bool = False, seed_offset: int = 0) -> None:
        self.pipe = pipeline
        self.data = data
        self.tokens = tokens.clone()        # [M, h, w] (a normal tensor even if built in inference mode)
        self.config = config
        self.device = device
        self.autocast = autocast
        self.seed = config.seed + seed_offset
        self.schedule = config.schedule or pipeline.schedule
        self.grid = tuple(tokens.shape[1:])
        self.num_tokens = self.grid[0] * self.grid[1]
        self._perm: tuple[int, torch.Tensor] | None = None
        with torch.inference_mode():
            negative = pipeline.text_encoder.encode([""])
        self.negative = (negative.hidden_states.clone(), negative.pooled.clone())

    def order(self, position: int) -> int:
        """Caption index at a stream position: a seeded permutation of the dataset per epoch."""
        epoch, j = divmod(position, len(self.data))
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 7_777 + epoch)
            self._perm = (epoch, torch.randperm(len(self.data), generator=g))
        return int(self._perm[1][j])

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            text = self.pipe.text_encoder.encode(captions)
        return text.hidden_states.clone(), text.pooled.clone()

    def make(self, positions: Sequence[int], *, indices: Sequence[int] | None = None,
             steps_taken: Sequence[int] | None = None, dropout: bool = True) -> Batch:
        """The batch for these stream positions (``indices``/``steps_taken`` override the stream's choices)."""
        cfg = self.config
        gens = [sample_generator(self.seed, p) for p in positions]
        idx = [self.order(p) for p in positions] if indices is None else list(indices)
        x0 = self.tokens[[self.data.image_index[i] for i in idx]]
        chosen = []
        drops = []
        masked = torch.zeros(len(gens), self.num_tokens, dtype=torch.bool)
        for row, g in enumerate(gens):
            step = int(torch.randint(0, cfg.sampling_steps - 1, (1,), generator=g))
            if steps_taken is not None:
                step = int(steps_taken[row])
            drop = bool(torch.rand(1, generator=g) < cfg.caption_dropout)
            count = masked_before_step(self.schedule, step, cfg.sampling_steps, self.num_tokens)
            masked[row, torch.rand(self.num_tokens, generator=g).argsort()[:count]] = True
            chosen.append(step)
            drops.append(drop and dropout)
        masked = masked.view(len(gens), *self.grid)
        hidden, pooled = self.encode([self.data.captions[i] for i in idx])
        b = len(gens)
        cond = Conditioning(hidden, pooled, micro_conditions(self.grid[1] * self.pipe.vq_factor,
                                                             self.grid[0] * self.pipe.vq_factor, b),
                            self.negative[0].expand(b, -1, -1), self.negative[1].expand(b, -1))
        sampling = Sampling(steps=cfg.sampling_steps, cfg=cfg.cfg, temperature=cfg.sampling_temperature)
        proposal = guidance_reconstruct(self.pipe.transformer, Masked(x0, masked, chosen, cond, gens), sampling,
                                        autocast=self.autocast)
        steps_t = torch.tensor(chosen)
        return Batch(tokens=proposal, changed=proposal != x0, masked=masked, text=hidden,
                     drop=torch.tensor(drops, dtype=torch.bool), t=(steps_t + 1).float() / cfg.sampling_steps,
                     steps_taken=chosen,
                     budget=torch.tensor([remask_budget(self.schedule, s, cfg.sampling_steps, self.num_tokens)
                                          for s in chosen]))

    def validation_set(self, count: int, batch_size: int = 16) -> list[Batch]:
        """A fixed validation set: examples cycle through the dataset and through the steps 0 … steps−2."""
        count = min(count, max(len(self.data), 0)) if count else 0
        batches = []
        for start in range(0, count, batch_size):
            rows = list(range(start, min(count, start + batch_size)))
            batches.append(self.make(rows, indices=[r % len(self.data) for r in rows],
                                     steps_taken=[r % (self.config.sampling_steps - 1) for r in rows], dropout=False))
        return batches


# ---------------------------------------------------------------------------------------------------------
# Metrics


def selector_loss(logits: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """Per-token BCE summed over the batch (the caller divides by the global token count)."""
    return F.binary_cross_entropy_with_logits(logits.float(), changed.float(), reduction="sum")


@torch.no_grad()
def evaluate(selector: TokenSelector, batches: Sequence[Batch], guidance: float = 1.0) -> dict[str, float]:
    """Precision/recall of "changed" among the ``budget`` positions with the highest P(changed), vs chance.

    Chance (flagging random positions) has precision = the changed rate and recall = budget / N.
    """
    if not batches:
        return {}
    was_training = selector.training
    selector.eval()
    device = selector.weight_device()
    tp = flagged = changed = tokens = budget_total = 0
    loss = 0.0
    for batch in batches:
        text = batch.text.to(device)
        logits = selector(batch.tokens.to(device), text, batch.t.to(device)).float()
        q = logits.sigmoid() if guidance == 1.0 else selector.prob_changed(batch.tokens.to(device), text, batch.t,
                                                                           guidance)
        labels = batch.changed.to(device)
        loss += float(selector_loss(logits, labels))
        flat_q, flat_y = q.flatten(1), labels.flatten(1)
        for row in range(flat_q.shape[0]):
            k = int(batch.budget[row])
            top = flat_q[row].topk(k).indices
            tp += int(flat_y[row, top].sum())
            flagged += k
        changed += int(flat_y.sum())
        tokens += flat_y.numel()
        budget_total += int(batch.budget.sum())
    selector.train(was_training)
    precision = tp / max(flagged, 1)
    recall = tp / max(changed, 1)
    return {"precision": precision, "recall": recall, "chance_precision": changed / max(tokens, 1),
            "chance_recall": budget_total / max(tokens, 1), "changed_rate": changed / max(tokens, 1),
            "loss": loss / max(tokens, 1), "examples": sum(b.tokens.shape[0] for b in batches)}


# ---------------------------------------------------------------------------------------------------------
# Checkpoints (safetensors + JSON; no pickle)


def save_training_state(folder: Path, *, step: int, selector: TokenSelector, optimizer: torch.optim.Optimizer,
                        ema: dict[str, torch.Tensor] | None, config: TrainConfig) -> None:
    """Weights, EMA and optimizer tensors in one safetensors file; everything else in JSON."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in selector.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    meta = {"step": str(step)}
    atomic_write(folder / STATE_TENSORS, lambda p: save_file(tensors, str(p), metadata=meta))
    info = {"step": step, "train_config": config.to_json(), "selector_config": selector.config.to_json(),
            "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}}
    atomic_write(folder / STATE_JSON, lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))


def read_training_state(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    info_path, tensor_path = folder / STATE_JSON, folder / STATE_TENSORS
    if not info_path.is_file() or not tensor_path.is_file():
        raise CheckpointError(f"no training checkpoint in {folder} (expected {STATE_JSON} + {STATE_TENSORS})")
    info = json.loads(info_path.read_text())
    tensors = read_safetensors(tensor_path)
    from safetensors import safe_open

    with safe_open(str(tensor_path), framework="pt") as f:
        saved_step = (f.metadata() or {}).get("step")
    if saved_step != str(info["step"]):
        raise CheckpointError(f"{folder}: {STATE_TENSORS} (step {saved_step}) and {STATE_JSON} (step {info['step']}) "
                              "are from different saves; the checkpoint was interrupted while writing")
    return info, tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in info["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": info["optimizer"]["param_groups"]})


# ---------------------------------------------------------------------------------------------------------
# The trainer


class Progress:
    """A one-line progress bar on stderr when it is a terminal, otherwise one log line per ``every`` steps."""

    def __init__(self, total: int, every: int, enabled: bool) -> None:
        self.total, self.every, self.enabled = total, max(1, every), enabled
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, step: int, text: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        if self.tty:
            filled = int(24 * step / self.total)
            print(f"\rtrain-selector [{'#' * filled}{'.' * (24 - filled)}] {step}/{self.total} {text} "
                  f"{elapsed:.0f}s", end="\n" if step == self.total else "", file=sys.stderr, flush=True)
        elif step % self.every == 0 or step == self.total:
            print(f"train-selector {step}/{self.total} {text} {elapsed:.1f}s", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(("\n" if self.tty else "") + text, file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    selector: TokenSelector                     # the exported weights (EMA when on), on CPU, eval mode
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up, then constant or cosine to 0."""
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.lr_schedule == "cosine":
        span = max(1, config.steps - config.warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - config.warmup) / span)))
    return config.lr


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        is_matrix = param.ndim == 2 and not name.endswith(("_embed", "embed.weight", "null_text"))
        (decay if is_matrix else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SelectorTrainer:
    """Trains a :class:`TokenSelector` for ``pipeline``'s generator on an image–caption dataset.

    ``out_dir`` receives ``selector/`` (the model to sample with: ``model.safetensors`` + ``config.json``),
    ``checkpoint/`` (resumable state), ``cache/`` (VQ tokens) and ``train_log.jsonl``.
    """

    def __init__(self, pipeline: Pipeline, train_data: CaptionDataset, out_dir: str | Path,
                 config: TrainConfig | None = None, *, val_data: CaptionDataset | None = None,
                 dist: DistInfo | None = None, resume: bool = False, verbose: bool = True) -> None:
        self.pipe = pipeline
        self.train_data = train_data
        self.val_data = val_data
        self.out_dir = Path(out_dir)
        self.config = config or TrainConfig()
        self.dist = dist or DistInfo()
        self.resume = resume
        self.verbose = verbose and self.dist.is_main
        if len(train_data) == 0:
            raise ValueError("the training set is empty")

    # -- set-up ---------------------------------------------------------------------------------------
    def _tokens(self, data: CaptionDataset, name: str) -> torch.Tensor:
        cache = self.out_dir / "cache" / f"tokens-{name}.safetensors"
        resolution = self.config.resolution or self.pipe.default_size
        if self.dist.is_main:
            tokens = tokenize_dataset(data, self.pipe.vq, resolution, cache_file=cache)
        barrier(self.dist)
        if not self.dist.is_main:
            tokens = tokenize_dataset(data, self.pipe.vq, resolution, cache_file=cache)
        return tokens.long()

    def _check_grid(self, tokens: torch.Tensor) -> None:
        check = getattr(self.pipe.transformer, "check_resolution", None)
        multiple = getattr(self.pipe.transformer, "token_grid_multiple", 1)
        h, w = tokens.shape[1:]
        if h % multiple or w % multiple:
            raise ValueError(f"token grid {h}x{w} does not fit the generator (multiples of {multiple} tokens, i.e. "
                             f"{multiple * self.pipe.vq_factor} px)")
        if check is not None:
            check(h, w)

    def build_selector(self, grid: tuple[int, int]) -> TokenSelector:
        c = self.config
        max_grid = c.max_grid or (max(64, grid[0]), max(64, grid[1]))
        config = SelectorConfig(
            codebook_size=int(self.pipe.transformer.codebook_size),
            text_hidden_size=int(self.pipe.transformer.text_hidden_size), hidden_size=c.width, num_layers=c.layers,
            num_heads=c.heads, mlp_ratio=c.mlp_ratio, max_grid=max_grid, generator_family=self.pipe.family,
            extra={"trained_with": {"cfg": c.cfg, "sampling_steps": c.sampling_steps,
                                    "schedule": c.schedule or self.pipe.schedule,
                                    "sampling_temperature": c.sampling_temperature, "grid": list(grid),
                                    "generator": self.pipe.name}})
        torch.manual_seed(c.seed)   # same initial weights on every process
        return TokenSelector(config)

    @property
    def autocast(self) -> bool:
        p = self.config.precision
        return self.dist.device.type == "cuda" and p in ("auto", "bf16")

    # -- the run --------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        c, info = self.config, self.dist
        device = info.device
        for module in (self.pipe.transformer, self.pipe.vq, self.pipe.text_encoder.model):
            module.to(device).eval().requires_grad_(False)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        barrier(info)
        tokens = self._tokens(self.train_data, "train")
        self._check_grid(tokens)
        maker = ExampleMaker(self.pipe, self.train_data, tokens, c, device, self.autocast)

        ckpt_dir = self.out_dir / "checkpoint"
        start_step = 0
        state_info = state_tensors = None
        if self.resume and (ckpt_dir / STATE_JSON).is_file():
            state_info, state_tensors = read_training_state(ckpt_dir)
            selector = TokenSelector(SelectorConfig.from_json(state_info["selector_config"], str(ckpt_dir)))
            check_selector_matches(selector, self.pipe.transformer, source="the checkpoint's selector")
            from ..checkpoints import load_strict
            load_strict(selector, {k[6:]: v for k, v in state_tensors.items() if k.startswith("model.")},
                        str(ckpt_dir / STATE_TENSORS))
            start_step = int(state_info["step"])
        else:
            selector = self.build_selector(maker.grid)
        selector.to(device).train()
        model = wrap_model(selector, info)
        optimizer = torch.optim.AdamW(parameter_groups(selector, c.weight_decay), lr=c.lr, betas=c.betas)
        ema = None
        if c.ema > 0:
            ema = {k: v.detach().clone().float() for k, v in selector.state_dict().items()}
        if state_info is not None:
            restore_optimizer(optimizer, state_info, state_tensors)
            if ema is not None:
                saved = {k[4:]: v for k, v in state_tensors.items() if k.startswith("ema.")}
                if saved:
                    ema = {k: v.to(device) for k, v in saved.items()}

        val_batches: list[Batch] = []
        if info.is_main and c.val_samples and self.val_data is not None and len(self.val_data):
            val_tokens = tokenize_dataset(self.val_data, self.pipe.vq, c.resolution or self.pipe.default_size,
                                          cache_file=self.out_dir / "cache" / "tokens-val.safetensors")
            val_maker = ExampleMaker(self.pipe, self.val_data, val_tokens, c, device, self.autocast,
                                     seed_offset=1_000_000)
            val_batches = val_maker.validation_set(c.val_samples, batch_size=max(c.batch_size, 8))

        progress = Progress(c.steps, c.log_every, self.verbose)
        history: list[dict[str, Any]] = []
        log_path = self.out_dir / "train_log.jsonl"
        if self.dist.is_main and start_step == 0:
            log_path.write_text("")
        if start_step:
            progress.message(f"resuming from step {start_step} ({ckpt_dir})")
        global_batch = c.batch_size * c.grad_accum * info.world_size
        tokens_per_sample = maker.num_tokens
        validation: dict[str, float] = {}
        window_start = time.perf_counter()

        def log(record: dict[str, Any]) -> None:
            history.append(record)
            if self.dist.is_main:
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")

        def exported() -> TokenSelector:
            with torch.random.fork_rng(devices=[]):   # building a module must not move the global RNG
                out = TokenSelector(selector.config)
            out.load_state_dict(ema if ema is not None else selector.state_dict())
            return out.eval().requires_grad_(False)

        def run_validation(step: int) -> dict[str, float]:
            if not val_batches:
                return {}
            model_for_val = exported().to(device)
            metrics = evaluate(model_for_val, val_batches)
            log({"step": step, "val": metrics})
            progress.message(f"validation @ {step}: precision {metrics['precision']:.3f} (chance "
                             f"{metrics['chance_precision']:.3f}), recall {metrics['recall']:.3f} (chance "
                             f"{metrics['chance_recall']:.3f}), loss {metrics['loss']:.4f}")
            return metrics

        def save(step: int) -> None:
            if self.dist.is_main:
                save_training_state(ckpt_dir, step=step, selector=selector, optimizer=optimizer, ema=ema, config=c)
                save_selector(exported(), self.out_dir / "selector")
            barrier(info)

        for step in range(start_step, c.steps):
            lr = lr_at(c, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            base = step * global_batch
            loss_sum = torch.zeros((), device=device)
            changed_sum = torch.zeros((), device=device)
            total_tokens = global_batch * tokens_per_sample
            for micro in range(c.grad_accum):
                first = base + (micro * info.world_size + info.rank) * c.batch_size
                batch = maker.make(range(first, first + c.batch_size))
                sync = micro == c.grad_accum - 1 or not info.distributed
                context = model.no_sync() if not sync else contextlib.nullcontext()
                with context:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
                        logits = model(batch.tokens.to(device), batch.text.to(device), batch.t.to(device),
                                       drop_text=batch.drop.to(device))
                    loss = selector_loss(logits, batch.changed.to(device))
                    (loss * info.world_size / total_tokens).backward()
                loss_sum += loss.detach()
                changed_sum += batch.changed.sum().to(device)
            grad_norm = (torch.nn.utils.clip_grad_norm_(selector.parameters(), c.grad_clip) if c.grad_clip > 0
                         else torch.zeros(()))
            optimizer.step()
            if ema is not None and (step + 1) % c.ema_every == 0:
                with torch.no_grad():
                    for k, v in selector.state_dict().items():
                        ema[k].lerp_(v.float(), 1 - c.ema)
            done = step + 1
            mean_loss = float(all_reduce_sum(loss_sum, info)) / total_tokens
            changed_rate = float(all_reduce_sum(changed_sum, info)) / total_tokens
            progress.update(done, f"loss {mean_loss:.4f} lr {lr:.2e}")
            if done % c.log_every == 0 or done == c.steps:
                elapsed = time.perf_counter() - window_start
                window_start = time.perf_counter()
                log({"step": done, "loss": mean_loss, "lr": lr, "grad_norm": float(grad_norm),
                     "changed_rate": changed_rate, "sec_per_step": elapsed / (done % c.log_every or c.log_every)})
            if c.val_every and done % c.val_every == 0 and done != c.steps:
                if info.is_main:
                    validation = run_validation(done)
                barrier(info)
            if c.save_every and done % c.save_every == 0 and done != c.steps:
                save(done)
        if info.is_main:
            validation = run_validation(c.steps) or validation
        save(c.steps)
        final = exported()
        del model       # release the DDP wrapper (and its gloo work) before the process group goes away
        return TrainResult(selector=final, history=history, validation=validation, out_dir=self.out_dir)


def train_selector(pipeline: Pipeline, data, out_dir: str | Path, config: TrainConfig | None = None, *,
                   val_data=None, dist: DistInfo | None = None, resume: bool = False,
                   verbose: bool = True) -> TrainResult:
    """Convenience wrapper: ``data``/``val_data`` may be a folder path, a :class:`CaptionDataset` or a list of
    ``(image or token grid, caption)`` pairs (see ``tcts.train.data``)."""
    from .data import load_dataset

    train = load_dataset(data)
    val = load_dataset(val_data) if val_data is not None else None
    return SelectorTrainer(pipeline, train, out_dir, config, val_data=val, dist=dist, resume=resume,
                           verbose=verbose).train()


def split_validation(data: CaptionDataset, fraction: float, seed: int = 0,
                     minimum_images: int = 10) -> tuple[CaptionDataset, CaptionDataset | None]:
    """Hold out ``fraction`` of the *images* (all their captions) for validation; none below ``minimum_images``."""
    images = len(data.images)
    if fraction <= 0 or images < minimum_images:
        return data, None
    count = min(images - 1, max(1, int(round(images * fraction))))
    g = torch.Generator().manual_seed(seed + 99)
    held = set(torch.randperm(images, generator=g)[:count].tolist())
    train_idx = [i for i, img in enumerate(data.image_index) if img not in held]
    val_idx = [i for i, img in enumerate(data.image_index) if img in held]
    return data.subset(train_idx, data.name), data.subset(val_idx, f"{data.name}-val")

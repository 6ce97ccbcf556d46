"""Batched, deterministic text-to-image generation for benchmarks, with each caption encoded once.

The text encoder runs once per caption for a whole benchmark (:func:`encode_captions`); every sampler, step
count and seed reuses those states. A generation run (:func:`generate_images`) then follows
``Pipeline.generate`` exactly (negative prompt ``""``, micro-conditions ``[W, H, 0, 0, 6]``, the engine's
job with the model's settings where the benchmark sets none, one CPU ``torch.Generator`` per image) in batches under
``torch.inference_mode``. Image ``i`` of sampling seed ``s`` uses generator seed ``s * SEED_STRIDE + i``,
so results do not depend on the batch size (up to floating-point summation order) and the same (caption,
seed) pair gets the same random stream under every sampler.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tcts.engine import Job, micro_conditions, run
from tcts.pipeline import Pipeline, decode_tokens
from tcts.sampling.rules import Rule
from tcts.sampling.step import Conditioning
from tcts.settings import Sampling
from tcts.starts import TextToImage

SEED_STRIDE = 1_000_000


def image_seed(seed: int, index: int) -> int:
    """Generator seed of caption ``index`` under sampling seed ``seed``."""
    return int(seed) * SEED_STRIDE + int(index)


@dataclass
class EncodedCaptions:
    """Text states of every caption (and of the negative prompt ``""`` when CFG is on)."""

    hidden_states: torch.Tensor          # [N, L, D]
    pooled: torch.Tensor                 # [N, P]
    negative_hidden_states: torch.Tensor | None = None   # [1, L, D]
    negative_pooled: torch.Tensor | None = None          # [1, P]

    def __len__(self) -> int:
        return self.hidden_states.shape[0]

    def condition(self, start: int, stop: int, width: int, height: int) -> Conditioning:
        b = stop - start
        neg_h = None if self.negative_hidden_states is None else self.negative_hidden_states.expand(b, -1, -1)
        neg_p = None if self.negative_pooled is None else self.negative_pooled.expand(b, -1)
        return Conditioning(self.hidden_states[start:stop], self.pooled[start:stop],
                            micro_conditions(width, height, b), neg_h, neg_p)


@torch.inference_mode()
def encode_captions(pipe: Pipeline, captions: Sequence[str], *, negative: bool = True,
                    batch: int = 256) -> EncodedCaptions:
    """Encode ``captions`` once (in batches); ``negative`` also encodes the empty negative prompt."""
    parts = [pipe.encode_prompts(captions[i:i + batch]) for i in range(0, len(captions), batch)]
    hidden = torch.cat([p.hidden_states for p in parts])
    pooled = torch.cat([p.pooled for p in parts])
    if not negative:
        return EncodedCaptions(hidden, pooled)
    neg = pipe.encode_prompts([""])
    return EncodedCaptions(hidden, pooled, neg.hidden_states, neg.pooled)


def area_downsample(images: np.ndarray, size: int) -> np.ndarray:
    """``[N, H, W, 3]`` -> ``[N, size, size, 3]`` by averaging ``H / size`` x ``W / size`` blocks (H, W multiples)."""
    n, h, w, c = images.shape
    if h == size and w == size:
        return images
    if h % size or w % size:
        raise ValueError(f"cannot area-downsample {h}x{w} px images to {size} px (not an integer factor)")
    return images.reshape(n, size, h // size, size, w // size, c).mean(axis=(2, 4)).astype(np.float32)


@dataclass
class Generated:
    images: np.ndarray            # [N, H, W, 3] float32 in [0, 1] (decoded VQ output)
    tokens: np.ndarray            # [N, h, w] int64
    sample_seconds: float         # wall time of the sampling loops
    decode_seconds: float         # wall time of VQ decoding
    cpu_seconds: float = 0.0      # CPU time of this process for both (robust to other jobs on the machine)
    passes: np.ndarray | None = None  # [N] model passes each image needed (a rule may finish before the last step)


class PassCounter:
    """Per-step callback that counts, per image, the model passes it needed: a pass counts while the image
    still had masked tokens when it started (a batch keeps running while any image has some)."""

    def __init__(self, batch: int) -> None:
        self.open = torch.ones(batch, dtype=torch.bool)
        self.passes = torch.zeros(batch, dtype=torch.int64)

    def __call__(self, report) -> None:
        self.passes += self.open.long()
        self.open = self.open & report.masked.reshape(report.masked.shape[0], -1).any(dim=-1).cpu()


@torch.inference_mode()
def generate_images(pipe: Pipeline, encoded: EncodedCaptions, rule: Rule, sampling: Sampling, seed: int, *,
                    batch_size: int = 100, size: int = 64) -> Generated:
    """Generate one image per encoded caption with ``rule``; deterministic given ``seed``. ``sampling`` is
    resolved against the model folder (steps and cfg as given; the rest the model's or the reference's)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {batch_size}")
    sampling = pipe.resolve(sampling).sampling
    if sampling.cfg != 1.0 and encoded.negative_hidden_states is None:
        raise ValueError("cfg != 1 needs the negative prompt encoded (encode_captions(negative=True))")
    images, tokens, passes = [], [], []
    sample_s = decode_s = 0.0
    cpu_start = time.process_time()
    for start in range(0, len(encoded), batch_size):
        stop = min(start + batch_size, len(encoded))
        cond = encoded.condition(start, stop, size, size)
        counter = PassCounter(stop - start)
        job = Job(condition=cond, sampling=sampling, rule=rule, start=TextToImage(size, size),
                  seed=[image_seed(seed, i) for i in range(start, stop)], callback=counter)
        t0 = time.perf_counter()
        out = run(pipe.transformer, job, pipe.vq_factor)
        t1 = time.perf_counter()
        decoded = decode_tokens(pipe.vq, out).float().cpu().numpy()
        decode_s += time.perf_counter() - t1
        sample_s += t1 - t0
        images.append(decoded)
        tokens.append(out.cpu().numpy().astype(np.int64))
        passes.append(counter.passes.numpy())
    return Generated(np.concatenate(images), np.concatenate(tokens), sample_s, decode_s,
                     time.process_time() - cpu_start, np.concatenate(passes))

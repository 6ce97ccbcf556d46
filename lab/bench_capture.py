"""Per-step cost of attention capture (FAS) on full-width generators with random weights.

Times one sampling-loop forward (the CFG batch ``[negative; positive]``, ``guided_logits``) with and without
``step_capture`` of what the FAS rule asks for (self-attention, conditional rows, the first 2/3 of the
layers), interleaved, and prints the medians and the overhead. Also checks the logits are bit-identical.

    .venv/bin/python lab/bench_capture.py --family amused --size 256            # aMUSEd-256 (22 layers)
    .venv/bin/python lab/bench_capture.py --family meissonic --size 512          # Meissonic width, 42 layers
    .venv/bin/python lab/bench_capture.py --family amused --kinds self cross --layers all
    .venv/bin/python lab/bench_capture.py --device cuda --dtype bf16 ...

Random weights cost the same as real ones; the text condition is random too (77 x text width).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tcts.attention import AttentionRequest, step_capture  # noqa: E402
from tcts.models.meissonic import MEISSONIC_RELEASED_CONFIG, MeissonicTransformer  # noqa: E402
from tcts.models.uvit import UVit2DTransformer  # noqa: E402
from tcts.sampling.step import Conditioning, guided_logits  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(family: str, size: int, layers: int | None, device: str, dtype: torch.dtype):
    if family == "amused":
        cfg = {"downsample": size >= 512, "upsample": size >= 512, "sample_size": size // 16}
        if layers:
            cfg["num_hidden_layers"] = layers
        model = UVit2DTransformer(cfg)
    else:
        cfg = dict(MEISSONIC_RELEASED_CONFIG)
        if layers:  # keep the released 1:2 ratio of dual to single blocks
            cfg["num_layers"], cfg["num_single_layers"] = max(1, layers // 3), layers - max(1, layers // 3)
        model = MeissonicTransformer(cfg)
    return model.to(device=device, dtype=dtype).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=("amused", "meissonic"), default="amused")
    p.add_argument("--size", type=int, default=256, help="image size in px (tokens = size / 16)")
    p.add_argument("--layers", type=int, default=None, help="transformer layers (default: the released count)")
    p.add_argument("--kinds", nargs="+", default=["self"], choices=("self", "cross"))
    p.add_argument("--capture-layers", default=None, help="layer spec to capture (default: FAS default / all)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    dtype = DTYPES[a.dtype]
    model = build(a.family, a.size, a.layers, a.device, dtype)
    grid = (a.size // 16, a.size // 16)
    text, pooled = model.text_hidden_size, model.pooled_size
    cond = Conditioning(torch.randn(1, 77, text), torch.randn(1, pooled),
                        torch.tensor([[a.size, a.size, 0, 0, 6.0]]), torch.randn(1, 77, text), torch.randn(1, pooled))
    tokens = torch.randint(0, model.codebook_size, (1, *grid), device=a.device)
    tokens[:, ::2] = model.vocab_size - 1
    request = AttentionRequest(kinds=tuple(a.kinds), layers=a.capture_layers)

    def step(capture: bool) -> tuple[float, torch.Tensor]:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode(), step_capture(model, request if capture else None, batch=1) as acc:
            logits = guided_logits(model, tokens, cond, 10.0, 3)
            if acc is not None:
                acc.result()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, logits

    _, plain = step(False)
    _, captured = step(True)
    identical = torch.equal(plain, captured)
    off, on = [], []
    for _ in range(a.repeats):
        off.append(step(False)[0])
        on.append(step(True)[0])
    m_off, m_on = statistics.median(off), statistics.median(on)
    isolated = observer_seconds(model, tokens, cond, request, a.repeats * 3, a.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"{a.family} {a.size}px ({grid[0]}x{grid[1]} tokens), {params / 1e6:.0f}M params, {a.dtype} on {a.device}, "
          f"capture {'+'.join(a.kinds)} layers={a.capture_layers or 'default'}, {a.repeats} interleaved repeats")
    print(f"step off {m_off * 1000:.1f} ms  on {m_on * 1000:.1f} ms  overhead {100 * (m_on - m_off) / m_off:+.2f} %  "
          f"(min: off {min(off) * 1000:.1f}, on {min(on) * 1000:.1f}, {100 * (min(on) - min(off)) / min(off):+.2f} %)  "
          f"logits bit-identical: {identical}")
    print(f"observer work alone (recorded q/k replayed, min of {a.repeats * 3}): {isolated * 1000:.1f} ms = "
          f"{100 * isolated / min(off):.2f} % of the fastest plain step")
    return 0 if identical else 1


def observer_seconds(model, tokens, cond, request, repeats: int, device: str) -> float:
    """The capture's own work per step, measured without the forward: record every captured layer's (q, k)
    once, then time replaying them through a fresh accumulator (min over ``repeats``)."""
    from tcts.attention import capture_attention

    with torch.inference_mode(), capture_attention(model, layers=request.layers, kinds=request.kinds,
                                                   batch=1) as acc:
        calls = []
        for module in model.modules():
            observer = getattr(module, "observer", None)
            if observer is not None:
                module.observer = lambda q, k, observer=observer: calls.append((observer, q.clone(), k.clone()))
        guided_logits(model, tokens, cond, 10.0, 3)
        best = float("inf")
        for _ in range(repeats):
            acc.sums.clear()
            acc.counts = {k: 0 for k in acc.counts}
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for observer, q, k in calls:
                observer(q, k)
            acc.result()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best


if __name__ == "__main__":
    raise SystemExit(main())

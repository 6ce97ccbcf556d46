"""Time per sampling step: TCTS (learned selector) vs Purity, on a mid-size random aMUSEd generator.

    python lab/selector_step.py [--device cpu|cuda] [--steps 12] [--repeats 2] [--ratio 0.25]
                                       [--out lab/results/selector_step.md]

The generator is a randomly initialised ``UVit2DTransformer`` (default: width 256, 4 layers, codebook 1024,
CLIP-L text width 768, 16x16 tokens = 256 px); the selector is sized to ``--ratio`` (default ¼) of the
generator's parameters. Each sampler runs the whole loop (CFG batch of 2 per step) on random text states;
the time per step is the loop's wall time / steps (best of ``--repeats`` interleaved runs after a short
warm-up; the median is in the JSON). The generator's CFG forward and the selector's forward are also
timed alone.
TCTS costs one selector pass per step (two with selector guidance w != 1) on top of the generator's
CFG pass. Prints a markdown table and writes it (plus the raw JSON) to ``--out``.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tcts.engine import Job, micro_conditions, run  # noqa: E402
from tcts.models.uvit import UVit2DTransformer  # noqa: E402
from tcts.sampling.registry import RuleOptions, make_rule  # noqa: E402
from tcts.sampling.step import Conditioning  # noqa: E402
from tcts.selector import SelectorConfig, TokenSelector, parameter_count  # noqa: E402
from tcts.selector.rule import SelectorOptions  # noqa: E402
from tcts.settings import REFERENCE  # noqa: E402
from tcts.starts import TextToImage  # noqa: E402

MID_AMUSED = {"hidden_size": 256, "use_bias": False, "cond_embed_dim": 768, "micro_cond_encode_dim": 256,
              "micro_cond_embed_dim": 1280, "encoder_hidden_size": 768, "vocab_size": 1032, "codebook_size": 1024,
              "in_channels": 128, "block_out_channels": 128, "num_res_blocks": 2, "downsample": False,
              "upsample": False, "block_num_heads": 2, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 768, "layer_norm_eps": 1e-6, "ln_elementwise_affine": True, "sample_size": 16}


def selector_for(generator: torch.nn.Module, ratio: float, grid: tuple[int, int]) -> TokenSelector:
    """The selector whose parameter count is closest to ``ratio`` × the generator's: width a multiple of 64
    (64-dim heads), depth between half and all of the generator's layers (at least 2)."""
    target = ratio * parameter_count(generator)
    depth = int(generator.config["num_hidden_layers"])

    def config(width: int, layers: int) -> SelectorConfig:
        return SelectorConfig(codebook_size=generator.codebook_size, text_hidden_size=generator.text_hidden_size,
                              hidden_size=width, num_layers=layers, num_heads=width // 64, max_grid=grid)

    best = None
    for width in range(64, 1025, 64):
        with torch.device("meta"):   # size(L) = size(0) + L * size of one block
            base = parameter_count(TokenSelector(config(width, 0)))
            block = parameter_count(TokenSelector(config(width, 1))) - base
        for layers in range(max(2, depth // 2), max(2, depth) + 1):
            size = base + layers * block
            if best is None or abs(size - target) < abs(best[0] - target):
                best = (size, config(width, layers))
    torch.manual_seed(1)
    return TokenSelector(best[1]).eval()


def time_once(generator, cond, sampler, options, steps, device) -> float:
    """Seconds per step of one whole sampling loop."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    side = MID_AMUSED["sample_size"] * 16
    job = Job(condition=cond, sampling=replace(REFERENCE, steps=steps), rule=make_rule(sampler, options),
              start=TextToImage(side, side))
    run(generator, job, 16)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.25, help="selector size / generator size (parameters)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--out", type=Path, default=ROOT / "lab" / "results" / "selector_step.md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    generator = UVit2DTransformer(MID_AMUSED).to(device, dtype).eval().requires_grad_(False)
    grid = (MID_AMUSED["sample_size"],) * 2
    selector = selector_for(generator, args.ratio, grid).to(device, dtype).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    text = torch.randn(2, 77, 768, generator=g)
    pooled = torch.randn(2, 768, generator=g)
    cond = Conditioning(text[:1], pooled[:1], micro_conditions(256, 256, 1), text[1:], pooled[1:])
    def with_selector(options: SelectorOptions) -> RuleOptions:
        return RuleOptions(selector=options, selector_model=selector)

    runs = [("purity", "purity", RuleOptions(), 0),
            ("tcts (topk)", "tcts", with_selector(SelectorOptions()), 1),
            ("tcts (multinomial, noise 1)", "tcts", with_selector(SelectorOptions(choice="multinomial", noise=1.0)), 1),
            ("tcts (selector guidance w=3)", "tcts", with_selector(SelectorOptions(guidance=3.0)), 2)]
    times: dict[str, list[float]] = {label: [] for label, *_ in runs}
    with torch.inference_mode():
        for label, sampler, options, _ in runs:   # warm-up (2 steps each)
            time_once(generator, cond, sampler, options, 2, device)
        for _ in range(args.repeats):             # interleaved, so load changes hit every sampler alike
            for label, sampler, options, _ in runs:
                times[label].append(time_once(generator, cond, sampler, options, args.steps, device))
    results = [{"sampler": label, "selector_passes": passes, "ms_per_step": min(times[label]) * 1000,
                "ms_per_step_median": statistics.median(times[label]) * 1000}
               for label, _, _, passes in runs]
    with torch.inference_mode():   # the two forwards alone (min of 5): what a step of each costs at most
        x = torch.randint(0, generator.codebook_size, (1, *grid), generator=g).to(device)
        from tcts.sampling.step import guided_logits
        parts = {"generator CFG forward (batch 2)": lambda: guided_logits(generator, x, cond, 10.0, 0),
                 "selector forward (batch 1)": lambda: selector(x, cond.hidden_states.to(device), 0.5)}
        components = {}
        for name, fn in parts.items():
            fn()
            samples = []
            for _ in range(5):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                samples.append(time.perf_counter() - start)
            components[name] = min(samples) * 1000
    base = results[0]["ms_per_step"]
    gen_params, sel_params = parameter_count(generator), parameter_count(selector)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"Selector step benchmark — {device_name}, {args.dtype}, torch {torch.__version__}",
             "",
             f"generator: random aMUSEd UVit (width {MID_AMUSED['hidden_size']}, {MID_AMUSED['num_hidden_layers']} "
             f"layers, codebook {MID_AMUSED['codebook_size']}, 16x16 tokens), {gen_params / 1e6:.1f} M parameters; "
             f"selector: width {selector.config.hidden_size}, {selector.config.num_layers} layers, "
             f"{sel_params / 1e6:.1f} M parameters ({sel_params / gen_params:.2f} x generator); "
             f"{args.steps} steps, CFG batch 2, best of {args.repeats} interleaved runs",
             "",
             "| sampler | selector passes / step | ms / step | × purity |",
             "|---|---|---|---|"]
    for r in results:
        r["ratio"] = r["ms_per_step"] / base
        lines.append(f"| {r['sampler']} | {r['selector_passes']} | {r['ms_per_step']:.1f} | {r['ratio']:.2f} |")
    lines += ["", "| forward alone | ms |", "|---|---|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in components.items()]
    sel_ms, gen_ms = components["selector forward (batch 1)"], components["generator CFG forward (batch 2)"]
    lines += ["", f"selector / generator-CFG forward time: {sel_ms / gen_ms:.2f} (expected TCTS step ratio about "
                  f"{1 + sel_ms / gen_ms:.2f}, {1 + 2 * sel_ms / gen_ms:.2f} with selector guidance)"]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"device": device_name, "dtype": args.dtype, "generator_parameters": gen_params,
         "selector_parameters": sel_params, "selector_config": selector.config.to_json(), "steps": args.steps,
         "results": results, "forward_ms": components}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

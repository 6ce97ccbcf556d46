"""A tiny random-weight upscale model (×2 by default, any factor) that ComfyUI's ``UpscaleModelLoader`` accepts.

ComfyUI loads upscale models with spandrel (``comfy_extras/nodes_upscale_model.py``:
``ModelLoader().load_from_state_dict(sd)``, which must give an ``ImageModelDescriptor``). The
smallest architecture spandrel detects is **RealESRGAN Compact** (``SRVGGNetCompact``, spandrel
``architectures/Compact``): detection needs the keys ``body.0.weight`` and ``body.1.weight``; the
loader then reads

* ``in_nc``/``num_feat`` from ``body.0.weight`` (``[num_feat, in_nc, 3, 3]``),
* ``num_conv = (highest_body_index - 2) // 2``,
* the scale from the last conv's bias: ``out_nc * scale**2`` channels (pixel shuffle).

The body is ``conv(in->feat), PReLU, [conv(feat->feat), PReLU] * num_conv, conv(feat->out*s*s)``
and the network adds the nearest-upsampled input, so with small weights the output stays close to a
nearest ×2 upscale (values clamped to 0..1 by ComfyUI). Weights are drawn from a seeded CPU
``torch.Generator``: the same seed gives the same bytes.

Usage::

    from tests.support.tiny_upscaler import write_tiny_upscaler
    write_tiny_upscaler(models / "upscale_models" / "RealESRGAN_x4plus.safetensors", seed=0, scale=4)

or ``python -m tests.support.tiny_upscaler OUT.safetensors [--seed N]``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

SCALE = 2


def tiny_upscaler_state_dict(seed: int = 0, *, scale: int = SCALE, num_feat: int = 8, num_conv: int = 2,
                             channels: int = 3, std: float = 0.05) -> dict[str, torch.Tensor]:
    """The state dict of an ``SRVGGNetCompact`` (PReLU activations) with small random weights."""
    if scale < 1 or num_feat < 1 or num_conv < 0:
        raise ValueError("scale, num_feat must be >= 1 and num_conv >= 0")
    g = torch.Generator().manual_seed(int(seed))

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).contiguous()

    sd: dict[str, torch.Tensor] = {}
    index = 0

    def conv(cin: int, cout: int) -> None:
        nonlocal index
        sd[f"body.{index}.weight"] = rand(cout, cin, 3, 3)
        sd[f"body.{index}.bias"] = rand(cout)
        index += 1

    def prelu() -> None:
        nonlocal index
        sd[f"body.{index}.weight"] = torch.full((num_feat,), 0.25) + rand(num_feat)
        index += 1

    conv(channels, num_feat)
    prelu()
    for _ in range(num_conv):
        conv(num_feat, num_feat)
        prelu()
    conv(num_feat, channels * scale * scale)
    return sd


def write_tiny_upscaler(path: str | os.PathLike, seed: int = 0, **kwargs) -> Path:
    """Write the model as ``.safetensors`` (atomically); returns the path. See :func:`tiny_upscaler_state_dict`."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the file name must end in .safetensors (ComfyUI picks the loader by extension)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tiny_upscaler_state_dict(seed, **kwargs), str(tmp),
                  metadata={"purpose": "tcts test fixture: random-weight RealESRGAN-Compact (SRVGGNetCompact)",
                            "seed": str(seed)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.tiny_upscaler", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="output .safetensors")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=SCALE)
    a = p.parse_args(argv)
    print(write_tiny_upscaler(a.out, a.seed, scale=a.scale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

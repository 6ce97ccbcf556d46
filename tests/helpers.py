"""Shared test helpers: fixture paths and small loaders."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
AMUSED = FIXTURES / "amused-tiny"
MEISSONIC = FIXTURES / "meissonic-tiny"
KEYS = FIXTURES / "keys"


def load_case(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def read_keys(name: str) -> dict[str, tuple[int, ...]]:
    """``keys/<name>`` lines ``key\\t(shape)`` -> {key: shape}."""
    out = {}
    for line in (KEYS / name).read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            out[key] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return out


def config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())

"""Resumable training state without pickle: safetensors for tensors, json for everything else.

A checkpoint is a folder ``<root>/<name>/`` holding ``model.safetensors`` (named module weights),
``optimizer.safetensors`` (per-parameter Adam moments, keyed by parameter name) and ``state.json``
(step counters, configs, optimizer scalars, log-worthy numbers). Folders are written to a temporary
name and renamed, so an interrupted save never leaves a half-written checkpoint; ``latest`` is a
one-line text file naming the newest folder.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

DEFAULT_ROOT = Path(os.environ.get("TCTS_TRAIN_DIR", "/root/.cache/tcts-train"))


def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def optimizer_tensors(opt: torch.optim.Optimizer, names: Mapping[int, str]) -> tuple[dict, dict]:
    """Adam/AdamW state -> ({"<param>::exp_avg": t, ...}, {"<param>": step}) by parameter name."""
    tensors, steps = {}, {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            name = names[id(p)]
            for key, value in st.items():
                if key == "step":
                    steps[name] = float(value)
                elif isinstance(value, torch.Tensor):
                    tensors[f"{name}::{key}"] = value
    return tensors, steps


def load_optimizer_tensors(opt: torch.optim.Optimizer, names: Mapping[int, str], tensors: Mapping[str, torch.Tensor],
                           steps: Mapping[str, float]) -> None:
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            if name not in steps:
                continue
            state = {"step": torch.tensor(steps[name])}
            for key in ("exp_avg", "exp_avg_sq"):
                if f"{name}::{key}" in tensors:
                    state[key] = tensors[f"{name}::{key}"].to(p.device, p.dtype)
            opt.state[p] = state


def param_names(modules: Mapping[str, nn.Module]) -> dict[int, str]:
    return {id(p): f"{prefix}.{n}" for prefix, m in modules.items() for n, p in m.named_parameters()}


def save_checkpoint(folder: Path, modules: Mapping[str, nn.Module], state: Mapping[str, Any],
                    opt: torch.optim.Optimizer | None = None, extra_tensors: Mapping[str, torch.Tensor] | None = None,
                    keep: int = 2) -> Path:
    """Write ``folder/step-XXXXXXX`` atomically and point ``folder/latest`` at it; keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{int(state['step']):07d}"
    tmp = folder / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    weights = {f"{prefix}.{k}": v for prefix, m in modules.items() for k, v in m.state_dict().items()}
    save_file(_contiguous(weights), str(tmp / "model.safetensors"))
    meta = dict(state)
    if opt is not None:
        tensors, steps = optimizer_tensors(opt, param_names(modules))
        save_file(_contiguous(tensors), str(tmp / "optimizer.safetensors"))
        meta["optimizer_steps"] = steps
        meta["optimizer_lr"] = [g["lr"] for g in opt.param_groups]
    if extra_tensors:
        save_file(_contiguous(extra_tensors), str(tmp / "extra.safetensors"))
    meta["saved_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (tmp / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    final = folder / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    (folder / "latest.tmp").write_text(name + "\n")
    (folder / "latest.tmp").rename(folder / "latest")
    olds = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in olds[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_checkpoint(path: Path, modules: Mapping[str, nn.Module], opt: torch.optim.Optimizer | None = None
                    ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Load weights (strict) and optimizer moments; returns (state dict, extra tensors)."""
    state = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "model.safetensors"))
    for prefix, m in modules.items():
        own = {k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")}
        m.load_state_dict(own, strict=True)
    if opt is not None and (path / "optimizer.safetensors").is_file():
        load_optimizer_tensors(opt, param_names(modules), load_file(str(path / "optimizer.safetensors")),
                               state.get("optimizer_steps", {}))
    extra = load_file(str(path / "extra.safetensors")) if (path / "extra.safetensors").is_file() else {}
    return state, extra


class Logger:
    """Append lines to a log file (and stdout), flushing every line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def json(self, kind: str, record: Mapping[str, Any]) -> None:
        self(f"{kind} {json.dumps(record, sort_keys=True)}")

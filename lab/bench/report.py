"""Markdown tables and atomic file writes of the shapes sampler benchmark (``python -m tcts bench``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tcts.atomic import atomic_write
from ..shapes.world import BACKGROUNDS

MAIN_COLUMNS = (("passes", "passes"), ("whole", "whole ↑"), ("object_recall", "obj. recall"), ("shape", "shape"), ("size", "size"),
                ("relation", "relation"), ("background", "background"), ("no_extra", "no extra"),
                ("fd", "FD ↓"), ("precision", "precision"), ("recall", "recall"), ("hf_ratio", "bg HF ratio"),
                ("seconds_per_image", "s/img"), ("cpu_seconds_per_image", "CPU s/img"))


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:
            return "—"
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main_table(rows: Sequence[dict], references: Sequence[dict] = ()) -> str:
    """One row per sampler x steps (+ reference rows): alignment, quality, background detail, time."""
    head = ["sampler", "steps"] + [title for _, title in MAIN_COLUMNS]
    lines = [_row(head), _row(["---"] * len(head))]
    for r in rows:
        digits = {"passes": 1}
        lines.append(_row([r["sampler"], str(r["steps"])] + [fmt(r.get(k), 4 if "seconds" in k else digits.get(k, 3))
                                                             for k, _ in MAIN_COLUMNS]))
    for r in references:
        lines.append(_row([f"*{r['name']}*", "—"] + [fmt(r.get(k)) for k, _ in MAIN_COLUMNS]))
    return "\n".join(lines)


def hf_table(rows: Sequence[dict], references: Sequence[dict] = ()) -> str:
    """Background HF energy ratio generated / real per background kind (— where real has no HF energy)."""
    head = ["sampler", "steps"] + list(BACKGROUNDS)
    lines = [_row(head), _row(["---"] * len(head))]
    for r in list(rows) + list(references):
        by_kind = r.get("hf_by_kind") or {}
        name, steps = (r["sampler"], str(r["steps"])) if "sampler" in r else (f"*{r['name']}*", "—")
        lines.append(_row([name, steps] + [fmt((by_kind.get(k) or {}).get("ratio")) for k in BACKGROUNDS]))
    return "\n".join(lines)


def bootstrap_table(differences: Sequence[dict]) -> str:
    head = ["steps", "difference", "Δ whole-caption acc.", "95 % CI", "pairs"]
    lines = [_row(head), _row(["---"] * len(head))]
    for d in differences:
        lines.append(_row([str(d["steps"]), f"{d['a']} − {d['b']}", f"{d['mean']:+.4f}",
                           f"[{d['low']:+.4f}, {d['high']:+.4f}]", str(d["n"])]))
    return "\n".join(lines)


def write_text_atomic(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""The benchmark's trade-off plot, drawn with PIL only: alignment (y) against image-quality distance (x).

One polyline per sampler through its step counts (points labelled with the step count), optional reference
points (e.g. real renders of other scenes; one far outside the samplers' range is listed in the legend with its
values instead), a legend, axis ticks and titles; the axes fit the data. Written atomically as PNG.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from tcts.atomic import atomic_write

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
Point = tuple[float, float, int]        # (x, y, steps)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                   # Pillow without FreeType sizes
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k spacing)."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def tradeoff_plot(series: dict[str, Sequence[Point]], path: str | Path, *,
                  references: Sequence[tuple[str, float, float]] = (),
                  x_label: str = "Frechet distance (shapes features), lower is better",
                  y_label: str = "whole-caption accuracy", title: str = "",
                  size: tuple[int, int] = (960, 640)) -> Path:
    """Draw ``series`` (name -> points (x, y, steps)) and ``references`` (name, x, y); write a PNG to ``path``."""
    width, height = size
    left, right, top, bottom = 90, 220, 50 if title else 25, 70
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(12)
    points = [(x, y) for pts in series.values() for x, y, _ in pts if _finite(x, y)]
    shown, off_axes = split_references(references, points)
    points += [(x, y) for _, x, y in shown]
    xs, ys = [p[0] for p in points] or [0.0, 1.0], [p[1] for p in points] or [0.0, 1.0]
    x_ticks = nice_ticks(min(0.0, min(xs)), max(xs) * 1.05 if max(xs) > 0 else 1.0)
    y_lo = max(0.0, min(ys) - 0.1 * (max(ys) - min(ys) or 1.0)) if min(ys) >= 0 else min(ys)
    y_ticks = nice_ticks(y_lo, max(ys) if max(ys) > y_lo else y_lo + 0.1)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    pw, ph = width - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * pw, top + ph - (y - y0) / (y1 - y0) * ph

    for t in x_ticks:
        px, _ = at(t, y0)
        draw.line([(px, top), (px, top + ph)], fill=(232, 232, 232))
        draw.text((px, top + ph + 6), _label(t), fill="black", font=small, anchor="ma")
    for t in y_ticks:
        _, py = at(x0, t)
        draw.line([(left, py), (left + pw, py)], fill=(232, 232, 232))
        draw.text((left - 8, py), _label(t), fill="black", font=small, anchor="rm")
    draw.rectangle([left, top, left + pw, top + ph], outline="black")
    draw.text((left + pw / 2, height - 22), x_label, fill="black", font=font, anchor="mm")
    label_img = Image.new("RGBA", (ph, 24), (255, 255, 255, 0))
    ImageDraw.Draw(label_img).text((ph / 2, 12), y_label, fill="black", font=font, anchor="mm")
    img.paste(label_img.rotate(90, expand=True), (12, top), label_img.rotate(90, expand=True))
    if title:
        draw.text((left + pw / 2, 20), title, fill="black", font=font, anchor="mm")
    legend: list[tuple[str, tuple[int, int, int], str]] = []
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(at(x, y), s) for x, y, s in pts if _finite(x, y)]
        if len(xy) > 1:
            draw.line([p for p, _ in xy], fill=colour, width=3)
        for (px, py), steps in xy:
            draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=colour, outline="black")
            draw.text((px + 7, py - 7), str(steps), fill=colour, font=small, anchor="lb")
        legend.append((name, colour, "line"))
    for name, x, y in shown:
        px, py = at(x, y)
        draw.rectangle([px - 5, py - 5, px + 5, py + 5], fill="black")
        legend.append((name, (0, 0, 0), "square"))
    for name, x, y in off_axes:
        legend.append((name, (160, 160, 160), "square"))
        legend.append((f"at ({_label(x)}, {_label(y)}), off the axes", (90, 90, 90), "note"))
    lx, ly = left + pw + 15, top + 5
    for name, colour, kind in legend:
        if kind == "line":
            draw.line([(lx, ly + 8), (lx + 24, ly + 8)], fill=colour, width=3)
            draw.ellipse([lx + 8, ly + 4, lx + 16, ly + 12], fill=colour, outline="black")
        elif kind == "square":
            draw.rectangle([lx + 8, ly + 4, lx + 16, ly + 12], fill=colour)
        draw.text((lx + 32, ly + 8), name, fill="black" if kind != "note" else colour, font=small, anchor="lm")
        ly += 22
    draw.text((lx, ly + 8), "labels: steps", fill=(90, 90, 90), font=small, anchor="lm")
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def split_references(references: Sequence[tuple[str, float, float]], points: Sequence[tuple[float, float]]
                     ) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """References near the samplers' points (drawn) and those whose x lies beyond twice the samplers' largest x
    (listed in the legend with their values instead: drawing them would squeeze every sampler into a corner,
    as real renders of other scenes do for FD at a few hundred images)."""
    finite = [(n, x, y) for n, x, y in references if _finite(x, y)]
    if not points:
        return finite, []
    limit = 2 * max(abs(x) for x, _ in points)
    return [r for r in finite if abs(r[1]) <= limit], [r for r in finite if abs(r[1]) > limit]


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)

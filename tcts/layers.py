"""Layer selections of attention capture, written as users type them ("0-14,20", "all", "")."""
from __future__ import annotations

import re
from typing import Sequence


def parse_layers(spec: str | Sequence[int] | None) -> list[int] | str | None:
    """``None``/``""``/``"default"`` -> None (the default); ``"all"`` -> ``"all"``; ``"0-14,20,-1"`` ->
    ``[0..14, 20, -1]`` (``a-b`` inclusive, negative numbers count from the end)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return [int(i) for i in spec]
    text = spec.strip().lower()
    if text in ("", "default"):
        return None
    if text == "all":
        return "all"
    out: list[int] = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", item)
        try:
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(item))
        except ValueError:
            raise ValueError(f"layers {spec!r}: expected comma-separated indices or ranges like '0-14,20' "
                             f"(negative = from the end), 'all' or '' for the default") from None
    if not out:
        raise ValueError(f"layers {spec!r} selects no layer")
    return out

"""The one place the pack imports ComfyUI's V3 node API.

ComfyUI's maintainers recommend a versioned module over ``comfy_api.latest`` for custom nodes
(``v0_0_2`` is meant to stay backward compatible; ``latest`` is where the API changes). ``v0_0_2``
exists in every core the pack supports (0.3.47 and later); ``latest`` is the fallback for a core that
one day drops it.
"""
try:
    from comfy_api.v0_0_2 import ComfyExtension, io, ui
except ImportError:  # pragma: no cover - a core without the versioned module
    from comfy_api.latest import ComfyExtension, io, ui

__all__ = ["ComfyExtension", "io", "ui"]

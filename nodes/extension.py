"""The pack's ComfyUI extension: registers model folders and lists every node."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import conditioning, loaders, samplers, selector, tokens
from . import attention, editing, fas  # FAS sampler, attention maps, mask-free edit


class TCTSExtension(ComfyExtension):
    async def on_load(self) -> None:
        loaders.register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*loaders.NODES, *conditioning.NODES, *samplers.NODES, *tokens.NODES, *selector.NODES,
                *fas.NODES, *attention.NODES, *editing.NODES]

"""The pack's ComfyUI extension: registers model folders, provides the example inputs, lists every node."""
from __future__ import annotations

from .api import ComfyExtension, io

from . import conditioning, loaders, samplers, selector, tokens
from . import attention, editing, fas, rules  # FAS sampler, attention maps, mask-free edit, rule nodes
from .examples import provide_example_inputs
from .folders import register_model_folders

# At import, the one moment every core with the V3 API shares (older cores never await on_load()).
register_model_folders()
provide_example_inputs()


class TCTSExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*loaders.NODES, *conditioning.NODES, *samplers.NODES, *tokens.NODES, *selector.NODES,
                *fas.NODES, *rules.NODES, *attention.NODES, *editing.NODES]

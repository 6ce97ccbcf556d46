"""tcts as a ComfyUI custom node pack (V3 API). Outside ComfyUI this file does nothing, so the engine
(``tcts/``) and its CLI work anywhere."""
try:
    import comfy_api  # noqa: F401
except ImportError:  # not running inside ComfyUI
    pass
else:
    from .nodes.extension import TCTSExtension

    async def comfy_entrypoint() -> TCTSExtension:
        return TCTSExtension()

WEB_DIRECTORY = "./web"

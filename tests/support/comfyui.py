"""In-process ComfyUI for fast node tests: the real node registry and executor of the tree that
:mod:`tests.support.comfyui_tree` sets up, without a server.

* :func:`get_comfyui` -> :class:`InProcessComfyUI`: boots ComfyUI's node registry once per
  process (per pytest session), then validates and executes API-format prompts with
  ``execution.PromptExecutor``; returns :class:`RunResult` (history outputs, raw node output
  tensors, events) or raises :class:`PromptValidationError` / :class:`PromptExecutionError`.
* :func:`workflow_to_prompt`: converts a UI workflow (format 0.4, what the frontend saves) into
  an API prompt, using the node registry's input specs (``object_info``).

These are a side door for unit tests.  What users do -- the pack in ``custom_nodes/``, ``main.py``,
a browser -- is driven by :mod:`tests.support.journey`.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.support.comfyui_tree import ComfyUIError, apply_torchvision_shim, ensure_comfyui

# --------------------------------------------------------------------------------------------
# results and errors
# --------------------------------------------------------------------------------------------


def format_node_errors(node_errors: Mapping[str, Any], prompt: Mapping[str, Any] | None = None) -> str:
    lines = []
    for node_id, info in (node_errors or {}).items():
        cls = info.get("class_type") or (prompt or {}).get(node_id, {}).get("class_type", "?")
        for err in info.get("errors", []):
            extra = err.get("extra_info") or {}
            name = extra.get("input_name")
            where = f" input '{name}'" if name else ""
            lines.append(f"node {node_id} ({cls}){where}: [{err.get('type')}] {err.get('message')}: {err.get('details')}")
    return "\n".join(lines)


class PromptValidationError(ComfyUIError):
    """The prompt failed ComfyUI's validation (``execution.validate_prompt`` or HTTP 400)."""

    def __init__(self, error: Mapping[str, Any] | None, node_errors: Mapping[str, Any] | None,
                 prompt: Mapping[str, Any] | None = None):
        self.error = dict(error or {})
        self.node_errors = dict(node_errors or {})
        self.prompt = prompt
        head = f"[{self.error.get('type')}] {self.error.get('message')}"
        if self.error.get("details"):
            head += f": {self.error['details']}"
        body = format_node_errors(self.node_errors, prompt)
        super().__init__(head + ("\n" + body if body else ""))

    @property
    def error_types(self) -> set[str]:
        """The ``type`` of the top-level error and of every node error."""
        types = {self.error.get("type")} if self.error.get("type") else set()
        for info in self.node_errors.values():
            types.update(e.get("type") for e in info.get("errors", []))
        return types


class PromptExecutionError(ComfyUIError):
    """A node raised (``execution_error``) or the run was interrupted."""

    def __init__(self, details: Mapping[str, Any] | None, event: str = "execution_error",
                 result: "RunResult | None" = None):
        self.details = dict(details or {})
        self.event = event
        self.result = result
        d = self.details
        if event == "execution_interrupted":
            msg = f"execution interrupted at node {d.get('node_id')} ({d.get('node_type')})"
        else:
            msg = (f"node {d.get('node_id')} ({d.get('node_type')}) raised "
                   f"{d.get('exception_type')}: {str(d.get('exception_message')).strip()}")
            tb = d.get("traceback")
            if tb:
                msg += "\n" + ("".join(tb) if isinstance(tb, list) else str(tb))
        super().__init__(msg)

    @property
    def node_id(self) -> str | None:
        return self.details.get("node_id")

    @property
    def exception_message(self) -> str | None:
        """The exception text (ComfyUI appends "\n<tips>"; stripped here)."""
        m = self.details.get("exception_message")
        return m.strip() if isinstance(m, str) else m


@dataclasses.dataclass
class ValidationResult:
    ok: bool
    error: dict | None
    outputs: list[str]
    node_errors: dict

    def __bool__(self) -> bool:
        return self.ok

    @property
    def error_types(self) -> set[str]:
        return PromptValidationError(self.error, self.node_errors).error_types

    def format(self) -> str:
        return "ok" if self.ok and not self.node_errors else str(PromptValidationError(self.error, self.node_errors))

    def raise_for_errors(self, prompt: Mapping | None = None, strict: bool = True) -> None:
        if not self.ok or (strict and self.node_errors):
            raise PromptValidationError(self.error or {"type": "prompt_outputs_failed_validation",
                                                       "message": "Some prompt outputs failed validation",
                                                       "details": ""}, self.node_errors, prompt)


def _image_refs(outputs: Mapping[str, Any], node_id: str | None = None) -> list[dict]:
    refs = []
    for nid, ui in outputs.items():
        if node_id is not None and str(nid) != str(node_id):
            continue
        for ref in (ui or {}).get("images", []) or []:
            if isinstance(ref, dict) and "filename" in ref:
                refs.append(ref)
    return refs


@dataclasses.dataclass
class RunResult:
    """The outcome of one in-process execution."""

    prompt_id: str
    prompt: dict
    success: bool
    #: history outputs: node id -> ui dict (e.g. ``{"images": [{"filename", "subfolder", "type"}]}``)
    outputs: dict
    meta: dict
    #: ``(event, data)`` as recorded by ``PromptExecutor.add_message`` (execution_start, ..., execution_success)
    messages: list
    #: every ``send_sync`` the executor made (executing, executed, progress, progress_state, ...)
    events: list
    #: node id -> raw outputs from the output cache: one list per output slot, each a list of values
    node_outputs: dict
    directories: dict
    seconds: float

    def output(self, node_id: str | int, slot: int = 0) -> Any:
        """The raw value of output ``slot`` of ``node_id`` (unwrapped when not a list output)."""
        outs = self.node_outputs.get(str(node_id))
        if outs is None:
            raise KeyError(f"no cached outputs for node {node_id} (have {sorted(self.node_outputs)})")
        value = outs[slot]
        return value[0] if isinstance(value, list) and len(value) == 1 else value

    def image_refs(self, node_id: str | int | None = None) -> list[dict]:
        return _image_refs(self.outputs, None if node_id is None else str(node_id))

    def images(self, node_id: str | int | None = None) -> list[Path]:
        """Paths of the image files the output nodes wrote (SaveImage, PreviewImage, ...)."""
        paths = []
        for ref in self.image_refs(node_id):
            base = self.directories.get(ref.get("type", "output"))
            if base is None:
                raise KeyError(f"unknown image type {ref.get('type')!r}")
            paths.append(Path(base) / ref.get("subfolder", "") / ref["filename"])
        return paths

    @property
    def status_str(self) -> str:
        return "success" if self.success else "error"

    def error_details(self) -> dict | None:
        for event, data in self.messages:
            if event in ("execution_error", "execution_interrupted"):
                return data
        return None


# --------------------------------------------------------------------------------------------
# in-process ComfyUI
# --------------------------------------------------------------------------------------------


class _StubServer:
    """What ``execution.py`` and ``comfy_execution/progress.py`` touch on ``PromptServer``."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.events: list = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))

    def send_progress_text(self, text, node_id, sid=None):
        self.events.append(("progress_text", {"text": text, "node": node_id}))

    def queue_updated(self):
        pass


class _LogCollector(logging.Handler):
    def __init__(self, level=logging.WARNING):
        super().__init__(level)
        self.records: list[str] = []

    def emit(self, record):
        try:
            self.records.append(record.getMessage())
        except Exception:  # pragma: no cover
            pass


_TOP_LEVEL_MODULES = ("nodes", "execution", "server", "folder_paths", "comfy", "comfy_execution",
                      "comfy_api", "comfy_extras", "node_helpers", "latent_preview")


def _run_coro(coro):
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        coro.close()
        raise ComfyUIError("called from a running event loop: use the *_async variant")
    return asyncio.run(coro)


class InProcessComfyUI:
    """ComfyUI's node registry and executor inside this Python process.

    Create it through :func:`get_comfyui` (one instance per process: ComfyUI's registry, caches
    and ``folder_paths`` are module globals).  Directories: ``base_dir`` holds ``output/``,
    ``input/``, ``temp/``, ``user/`` and ``models/`` (empty; point model folders anywhere with
    :meth:`load_extra_model_paths` or :meth:`add_model_folder`).
    """

    def __init__(self, root: Path, base_dir: Path, *, builtin_extras: bool = True):
        self.root = Path(root).resolve()
        self.base_dir = Path(base_dir).resolve()
        self.output_dir = self.base_dir / "output"
        self.input_dir = self.base_dir / "input"
        self.temp_dir = self.base_dir / "temp"
        self.user_dir = self.base_dir / "user"
        self.models_dir = self.base_dir / "models"
        for d in (self.output_dir, self.input_dir, self.temp_dir, self.user_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.builtin_extras = builtin_extras
        self.failed_extras: list[str] = []
        self._loaded_packs: dict[str, list[str]] = {}
        self._server = _StubServer()
        self._executor = None
        t0 = time.monotonic()
        self._boot()
        self.boot_seconds = time.monotonic() - t0

    # ---- boot ---------------------------------------------------------------------------

    def _boot(self) -> None:
        root = str(self.root)
        for name in _TOP_LEVEL_MODULES:
            mod = sys.modules.get(name)
            if mod is None:
                continue
            f = getattr(mod, "__file__", None) or "".join(list(getattr(mod, "__path__", []))[:1]) or "?"
            if not os.path.realpath(f).startswith(os.path.realpath(root) + os.sep):
                raise ComfyUIError(f"module {name!r} is already imported from {f}, not from the ComfyUI "
                                   f"tree {root}: a name clash (our pack must not be importable as {name!r})")
        apply_torchvision_shim()
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)  # must win over e.g. the repo's own `nodes/` folder

        import comfy.options  # noqa: F401  (arg parsing stays off: defaults)
        from comfy.cli_args import args
        args.cpu = True  # before comfy.model_management is imported
        args.disable_api_nodes = True
        import folder_paths
        import utils.extra_config  # noqa: F401  MUST precede `import nodes` (nodes.py puts comfy/ first on sys.path)
        import execution
        import nodes
        import comfy.model_management
        import comfy.utils

        self.args = args
        self.folder_paths = folder_paths
        self.execution = execution
        self.nodes = nodes
        self.model_management = comfy.model_management
        folder_paths.set_output_directory(str(self.output_dir))
        folder_paths.set_input_directory(str(self.input_dir))
        folder_paths.set_temp_directory(str(self.temp_dir))
        if hasattr(folder_paths, "set_user_directory"):
            folder_paths.set_user_directory(str(self.user_dir))

        async def _init():
            await nodes.init_public_apis()
            if self.builtin_extras:
                return await nodes.init_builtin_extra_nodes()
            return []

        self.failed_extras = list(_run_coro(_init()) or [])
        self._base_node_names = set(nodes.NODE_CLASS_MAPPINGS)
        comfy.utils.set_progress_bar_global_hook(self._progress_hook)

    def _progress_hook(self, value, total, preview_image, prompt_id=None, node_id=None):
        # as main.py's hijack_progress: every ProgressBar update is an interruption point
        try:
            from comfy_execution.utils import get_executing_context
            ctx = get_executing_context()
        except Exception:  # pragma: no cover - older trees
            ctx = None
        if prompt_id is None and ctx is not None:
            prompt_id = ctx.prompt_id
        if node_id is None and ctx is not None:
            node_id = ctx.node_id
        self.model_management.throw_exception_if_processing_interrupted()
        try:
            from comfy_execution.progress import get_progress_state
            get_progress_state().update_progress(node_id, value, total, preview_image)
        except Exception:  # pragma: no cover
            pass
        self._server.send_sync("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id})

    # ---- directories / models / packs ----------------------------------------------------

    @property
    def directories(self) -> dict[str, str]:
        fp = self.folder_paths
        return {"output": fp.get_output_directory(), "input": fp.get_input_directory(), "temp": fp.get_temp_directory()}

    def add_model_folder(self, folder_name: str, path: str | os.PathLike, *, is_default: bool = True) -> None:
        """Register ``path`` for ``folder_name`` (e.g. ``"checkpoints"`` or a pack's own key)."""
        self.folder_paths.add_model_folder_path(folder_name, str(Path(path).resolve()), is_default)
        self.folder_paths.filename_list_cache.clear()

    def load_extra_model_paths(self, config: str | os.PathLike | Mapping[str, Any]) -> list[str]:
        """Apply an ``extra_model_paths.yaml`` (a path, or its content as a dict).

        Model-folder keys become search paths; ``custom_nodes`` folders are loaded as by the
        server (every pack inside).  Returns the node ids newly registered.
        """
        if isinstance(config, Mapping):
            import yaml
            path = self.base_dir / f"extra_model_paths_{uuid.uuid4().hex[:8]}.yaml"
            path.write_text(yaml.safe_dump(_stringify_paths(config), sort_keys=False))
        else:
            path = Path(config)
        import utils.extra_config
        before = list(self.folder_paths.get_folder_paths("custom_nodes"))
        utils.extra_config.load_extra_path_config(str(path))
        self.folder_paths.filename_list_cache.clear()
        new_ids: list[str] = []
        for folder in self.folder_paths.get_folder_paths("custom_nodes"):
            if folder not in before:
                new_ids += self.load_custom_nodes_dir(folder)
        return new_ids

    def load_custom_nodes_dir(self, folder: str | os.PathLike) -> list[str]:
        """Load every pack (sub-folder or ``.py``) inside a ``custom_nodes`` folder."""
        folder = Path(folder)
        ids: list[str] = []
        for entry in sorted(os.listdir(os.path.realpath(folder))):
            p = folder / entry
            if entry == "__pycache__" or entry.endswith(".disabled"):
                continue
            if p.is_file() and p.suffix != ".py":
                continue
            ids += self.load_custom_nodes(p)
        return ids

    def load_custom_nodes(self, path: str | os.PathLike, *, module_parent: str = "custom_nodes") -> list[str]:
        """Load one custom node pack (a folder with ``__init__.py``, or a ``.py``) from anywhere.

        Runs its ``prestartup_script.py`` first (as main.py does), then ComfyUI's own
        ``nodes.load_custom_node``, so V1 (``NODE_CLASS_MAPPINGS``) and V3 (``comfy_entrypoint``)
        packs load exactly as in the server.  Returns the node ids it registered; raises
        :class:`ComfyUIError` with ComfyUI's log lines if the import failed.  Loading the same
        path twice is a no-op.
        """
        path = Path(path).absolute()
        key = str(path)
        if key in self._loaded_packs:
            return list(self._loaded_packs[key])
        nodes = self.nodes
        pre = path / "prestartup_script.py"
        if path.is_dir() and pre.is_file():
            spec = importlib.util.spec_from_file_location(os.path.splitext(str(pre))[0], str(pre))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        before = dict(nodes.NODE_CLASS_MAPPINGS)
        collector = _LogCollector()
        root_logger = logging.getLogger()
        root_logger.addHandler(collector)
        try:
            ok = _run_coro(nodes.load_custom_node(key, ignore=set(self._base_node_names), module_parent=module_parent))
        finally:
            root_logger.removeHandler(collector)
        if not ok:
            raise ComfyUIError(f"ComfyUI could not load custom nodes from {path}:\n" + "\n".join(collector.records))
        new = [k for k, v in nodes.NODE_CLASS_MAPPINGS.items() if before.get(k) is not v]
        self._loaded_packs[key] = new
        return list(new)

    # ---- registry ------------------------------------------------------------------------

    def node_class(self, class_type: str):
        try:
            return self.nodes.NODE_CLASS_MAPPINGS[class_type]
        except KeyError:
            raise KeyError(f"node {class_type!r} is not registered") from None

    def node_info(self, class_type: str) -> dict | None:
        """``GET /object_info/<class_type>`` for one node, computed in-process (None if unknown)."""
        cls = self.nodes.NODE_CLASS_MAPPINGS.get(class_type)
        if cls is None:
            return None
        with self.folder_paths.cache_helper:
            if hasattr(cls, "GET_NODE_INFO_V1"):
                return cls.GET_NODE_INFO_V1()
            input_types = cls.INPUT_TYPES()
            info = {
                "input": input_types,
                "input_order": {k: list(v.keys()) for k, v in input_types.items()},
                "output": cls.RETURN_TYPES,
                "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
                "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
                "name": class_type,
                "display_name": self.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type),
                "description": getattr(cls, "DESCRIPTION", ""),
                "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
                "category": getattr(cls, "CATEGORY", "sd"),
                "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
            }
            return info

    def object_info(self, class_types: Iterable[str] | None = None) -> dict[str, dict]:
        names = list(class_types) if class_types is not None else list(self.nodes.NODE_CLASS_MAPPINGS)
        return {n: self.node_info(n) for n in names if n in self.nodes.NODE_CLASS_MAPPINGS}

    # ---- validation / execution ------------------------------------------------------------

    async def validate_async(self, prompt: Mapping[str, Any], *, prompt_id: str | None = None,
                             partial_execution_list: list[str] | None = None) -> ValidationResult:
        prompt = normalize_prompt(prompt)
        fn = self.execution.validate_prompt
        n_params = len(inspect.signature(fn).parameters)
        pid = prompt_id or str(uuid.uuid4())
        if n_params >= 3:
            res = fn(pid, prompt, partial_execution_list)
        elif n_params == 2:  # pragma: no cover - older trees
            res = fn(pid, prompt)
        else:  # pragma: no cover
            res = fn(prompt)
        if inspect.isawaitable(res):
            res = await res
        ok, error, outputs, node_errors = res
        return ValidationResult(bool(ok), error, list(outputs), dict(node_errors))

    def validate(self, prompt: Mapping[str, Any], **kw) -> ValidationResult:
        """``execution.validate_prompt``: (ok, error, good output ids, node_errors)."""
        return _run_coro(self.validate_async(prompt, **kw))

    def _make_executor(self):
        ex = self.execution
        params = inspect.signature(ex.PromptExecutor.__init__).parameters
        kwargs: dict[str, Any] = {"cache_type": ex.CacheType.CLASSIC}
        if "cache_args" in params:  # 0.3.75+
            kwargs["cache_args"] = {"lru": 0, "ram": 0}
        elif "cache_size" in params:  # 0.3.64
            kwargs["cache_size"] = None
        return ex.PromptExecutor(self._server, **kwargs)

    async def run_async(self, prompt: Mapping[str, Any], *, extra_data: Mapping[str, Any] | None = None,
                        prompt_id: str | None = None, check: bool = True, strict: bool = True,
                        fresh_cache: bool = True) -> RunResult:
        prompt = normalize_prompt(prompt)
        pid = prompt_id or str(uuid.uuid4())
        v = await self.validate_async(prompt, prompt_id=pid)
        if check or not v.ok:  # an invalid prompt can never be executed
            v.raise_for_errors(prompt, strict=strict and check)
        if self._executor is None or fresh_cache:
            self._executor = self._make_executor()
        executor = self._executor
        self._server.events = []
        self._server.last_prompt_id = pid
        t0 = time.monotonic()
        extra = dict(extra_data or {})
        extra.setdefault("client_id", "tcts-harness")  # as a websocket client: executing/executed events too
        await executor.execute_async(prompt, pid, extra, v.outputs)
        seconds = time.monotonic() - t0
        history = getattr(executor, "history_result", None) or {}
        node_outputs = {}
        for node_id in prompt:
            entry = executor.caches.outputs.get(node_id)
            if entry is None:
                continue
            node_outputs[node_id] = entry.outputs if hasattr(entry, "outputs") else entry
        result = RunResult(
            prompt_id=pid, prompt=prompt, success=bool(executor.success),
            outputs=dict(history.get("outputs", {})), meta=dict(history.get("meta", {})),
            messages=list(executor.status_messages), events=list(self._server.events),
            node_outputs=node_outputs, directories=self.directories, seconds=seconds,
        )
        if check and not result.success:
            details = result.error_details()
            event = next((e for e, _ in result.messages if e in ("execution_error", "execution_interrupted")),
                         "execution_error")
            raise PromptExecutionError(details, event, result)
        return result

    def run(self, prompt: Mapping[str, Any], **kw) -> RunResult:
        """Validate, then execute an API-format prompt like the server's prompt worker.

        ``check`` (default True): raise :class:`PromptValidationError` / :class:`PromptExecutionError`
        instead of returning a failed result.  ``strict`` (default True): also refuse a prompt
        where only *some* outputs failed validation (the server would run the rest).
        ``fresh_cache`` (default True): a new executor, i.e. nothing cached from earlier runs;
        False keeps the executor (like the server) so unchanged nodes come from the cache.
        ``extra_data``: e.g. ``{"extra_pnginfo": {"workflow": ui_json}}``.
        """
        return _run_coro(self.run_async(prompt, **kw))

    def workflow_to_prompt(self, workflow: Mapping[str, Any]) -> dict:
        """Convert a UI workflow with this registry's input specs."""
        return workflow_to_prompt(workflow, self.node_info)

    def run_workflow(self, workflow: Mapping[str, Any], **kw) -> RunResult:
        """Convert a UI workflow, then :meth:`run` it (the workflow goes into the PNG metadata)."""
        prompt = self.workflow_to_prompt(workflow)
        extra = dict(kw.pop("extra_data", None) or {})
        extra.setdefault("extra_pnginfo", {"workflow": workflow})
        return self.run(prompt, extra_data=extra, **kw)

    def interrupt(self) -> None:
        self.nodes.interrupt_processing(True)


_INPROCESS: InProcessComfyUI | None = None


def get_comfyui(root: str | os.PathLike | None = None, *, base_dir: str | os.PathLike | None = None,
                builtin_extras: bool = True) -> InProcessComfyUI:
    """The process-wide in-process ComfyUI (booted on first call; later calls return it).

    ``root``: default :func:`ensure_comfyui`.  ``base_dir``: where output/input/temp/user/models
    go (default: a fresh temporary folder removed at exit).  ``builtin_extras``: also load
    ``comfy_extras`` (~80 core modules: ImageBlend, primitives, mask nodes...).
    """
    global _INPROCESS
    if _INPROCESS is not None:
        if root is not None and Path(root).resolve() != _INPROCESS.root:
            raise ComfyUIError(f"ComfyUI already booted from {_INPROCESS.root}, cannot switch to {root}")
        return _INPROCESS
    root = Path(root) if root is not None else ensure_comfyui()
    if base_dir is None:
        base_dir = Path(tempfile.mkdtemp(prefix="tcts-comfyui-inproc-"))
        if not os.environ.get("TCTS_KEEP_COMFYUI_TMP"):
            atexit.register(shutil.rmtree, base_dir, True)
    _INPROCESS = InProcessComfyUI(root, Path(base_dir), builtin_extras=builtin_extras)
    return _INPROCESS


def normalize_prompt(prompt: Mapping[str, Any]) -> dict:
    """Deep copy with string node ids, in links too (``[1, 0]`` -> ``["1", 0]``)."""
    if "prompt" in prompt and isinstance(prompt.get("prompt"), Mapping) and "class_type" not in prompt:
        prompt = prompt["prompt"]  # an HTTP body {"prompt": {...}, "client_id": ...}
    out = {}
    ids = {str(k) for k in prompt}
    for k, node in prompt.items():
        node = copy.deepcopy(dict(node))
        inputs = node.get("inputs") or {}
        for name, val in list(inputs.items()):
            if (isinstance(val, (list, tuple)) and len(val) == 2 and isinstance(val[0], int)
                    and not isinstance(val[0], bool) and isinstance(val[1], int) and str(val[0]) in ids):
                inputs[name] = [str(val[0]), val[1]]
        node["inputs"] = inputs
        out[str(k)] = node
    return out


def _stringify_paths(obj):
    if isinstance(obj, Mapping):
        return {str(k): _stringify_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return "\n".join(str(x) for x in obj)
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


# --------------------------------------------------------------------------------------------
# UI workflow (format 0.4) -> API prompt
# --------------------------------------------------------------------------------------------

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "file_upload", "upload")
#: frontend-only nodes: never sent to the backend
VIRTUAL_NODES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowConversionError(ComfyUIError):
    pass


def _spec_parts(spec) -> tuple[Any, dict]:
    if isinstance(spec, (list, tuple)):
        typ = spec[0] if spec else None
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
        return typ, dict(opts)
    return spec, {}


def _is_widget(typ, opts) -> bool:
    if isinstance(typ, (list, tuple)):
        return True
    return isinstance(typ, str) and typ in WIDGET_TYPES


def _widget_inputs(info: Mapping[str, Any]) -> list[tuple[str, Any, dict, bool]]:
    """[(name, type, options, force_input)] of required+optional inputs that are widgets, in order."""
    inputs = info.get("input", info)  # object_info entry or a bare INPUT_TYPES() dict
    order = info.get("input_order") or {}
    result = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        names = [n for n in order.get(section, []) if n in specs] or list(specs)
        for name in names:
            typ, opts = _spec_parts(specs[name])
            if _is_widget(typ, opts):
                result.append((name, typ, opts, bool(opts.get("forceInput"))))
    return result


def _has_control(name: str, typ, opts: Mapping) -> bool:
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return typ == "INT" and name in ("seed", "noise_seed")


def _is_combo(typ) -> bool:
    return isinstance(typ, (list, tuple)) or typ == "COMBO"


def _map_widget_values(class_type: str, widgets: list, values) -> dict[str, Any]:
    """Map a node's ``widgets_values`` onto its widget inputs (names)."""
    if isinstance(values, Mapping):  # some packs save {name: value}
        return {name: values[name] for name, *_ in widgets if name in values}
    values = list(values or [])
    plain = [w for w in widgets if not w[3]]
    # workflows saved before frontend 1.16 carry a dummy value for forceInput inputs
    with_force = sum(2 if _has_control(n, t, o) else 1 for n, t, o, _ in widgets)
    if any(w[3] for w in widgets) and len(values) == with_force:
        pairs, i = [], 0
        for name, typ, opts, force in widgets:
            if not force:
                pairs.append((name, values[i]))
            i += 2 if _has_control(name, typ, opts) else 1
        return dict(pairs)
    surplus = len(values) - len(plain)
    out: dict[str, Any] = {}
    i = 0
    for name, typ, opts, _ in plain:
        if i >= len(values):
            if "default" in opts:
                out[name] = opts["default"]
            continue
        out[name] = values[i]
        i += 1
        # a seed's control value ("fixed", ...) is never a number: skip it even when the workflow was saved
        # before widgets were appended to the node (fewer values than widgets; the frontend fills those in)
        control = surplus > 0 or typ == "INT"
        if control and _has_control(name, typ, opts) and i < len(values) and values[i] in CONTROL_VALUES:
            i += 1
            surplus -= 1
            # a combo with a control also serializes its (string) filter-list widget
            if _is_combo(typ) and surplus > 0 and i < len(values) and isinstance(values[i], str):
                i += 1
                surplus -= 1
        elif surplus > 0 and any(opts.get(k) for k in UPLOAD_KEYS) and i < len(values) and isinstance(values[i], str):
            i += 1  # the upload button's value ("image"), never part of the prompt
            surplus -= 1
    return out


def workflow_to_prompt(workflow: Mapping[str, Any],
                       object_info: Mapping[str, Any] | Callable[[str], Mapping[str, Any] | None]) -> dict:
    """Convert a UI workflow (format 0.4 as saved by the frontend) into an API-format prompt.

    ``object_info``: ``GET /object_info`` JSON (all nodes) or a callable ``class_type -> entry``
    (e.g. :meth:`InProcessComfyUI.node_info`).  Handles, like the frontend's ``graphToPrompt``:
    ``widgets_values`` positional over widget inputs only (required then optional); the extra
    ``control_after_generate`` value after a seed (INT named seed/noise_seed or declared), plus a
    combo's filter value; the upload button's value; pre-1.16 dummy values for ``forceInput``
    inputs; widgets converted to inputs (the link wins over the stored value); ``Reroute`` and
    ``PrimitiveNode`` (its value is inlined); ``Note``/``MarkdownNote``; muted (mode 2) nodes are
    dropped with their links; bypassed (mode 4) nodes are dropped and their consumers wired to
    the bypassed node's input of the same type.  Not handled: subgraphs / group nodes.
    """
    if isinstance(object_info, Mapping):
        info_map = object_info
        lookup = lambda ct: info_map.get(ct)  # noqa: E731
    else:
        lookup = object_info
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowConversionError("workflows with subgraphs are not supported by this converter")
    if "nodes" not in workflow:
        raise WorkflowConversionError("not a UI workflow (no 'nodes'); API prompts need no conversion")

    nodes_by_id = {str(n["id"]): n for n in workflow["nodes"]}
    links: dict[int, tuple[str, int, str, int, Any]] = {}
    for l in workflow.get("links") or []:
        if isinstance(l, Mapping):
            links[l["id"]] = (str(l["origin_id"]), int(l["origin_slot"]), str(l["target_id"]), int(l["target_slot"]), l.get("type"))
        else:
            links[l[0]] = (str(l[1]), int(l[2]), str(l[3]), int(l[4]), l[5] if len(l) > 5 else None)

    def link_of(node, input_index):
        ins = node.get("inputs") or []
        if input_index >= len(ins):
            return None
        lid = ins[input_index].get("link")
        return links.get(lid) if lid is not None else None

    def resolve(node_id: str, slot: int, depth: int = 0):
        """-> ("link", [id, slot]) | ("value", v) | None for the output ``slot`` of ``node_id``."""
        if depth > 64:
            raise WorkflowConversionError("reroute/bypass chain too deep (cycle?)")
        node = nodes_by_id.get(node_id)
        if node is None:
            return None
        ntype = node.get("type")
        if ntype == "Reroute":
            l = link_of(node, 0)
            return resolve(l[0], l[1], depth + 1) if l else None
        if ntype == "PrimitiveNode":
            vals = node.get("widgets_values") or []
            return ("value", vals[0]) if vals else None
        mode = node.get("mode", 0)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            outs = node.get("outputs") or []
            out_type = outs[slot].get("type") if slot < len(outs) else None
            ins = node.get("inputs") or []
            order = ([slot] if slot < len(ins) else []) + [i for i in range(len(ins)) if i != slot]
            for i in order:
                if ins[i].get("type") in (out_type, "*") and ins[i].get("link") is not None:
                    l = link_of(node, i)
                    if l:
                        return resolve(l[0], l[1], depth + 1)
            return None
        return ("link", [node_id, slot])

    prompt: dict[str, Any] = {}
    unknown = []
    for node_id, node in sorted(nodes_by_id.items(), key=lambda kv: (kv[1].get("order", 0), kv[0])):
        ntype = node.get("type")
        if ntype in VIRTUAL_NODES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        info = lookup(ntype)
        if info is None:
            unknown.append(f"{ntype} (node {node_id})")
            continue
        inputs = _map_widget_values(ntype, _widget_inputs(info), node.get("widgets_values"))
        for idx, slot in enumerate(node.get("inputs") or []):
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            if slot.get("link") is None:
                continue
            l = link_of(node, idx)
            if l is None:
                continue
            res = resolve(l[0], l[1])
            if res is None:  # source muted / bypassed without a match: the frontend drops the link
                if not slot.get("widget"):
                    inputs.pop(name, None)
                continue
            kind, val = res
            inputs[name] = val
        entry = {"inputs": inputs, "class_type": ntype}
        entry["_meta"] = {"title": node.get("title") or (info.get("display_name") if isinstance(info, Mapping) else None) or ntype}
        prompt[node_id] = entry
    if unknown:
        raise WorkflowConversionError("unknown node types (not registered): " + ", ".join(unknown))
    return prompt

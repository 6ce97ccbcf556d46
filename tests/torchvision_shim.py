"""Test-environment workaround: PyPI's Linux torchvision wheels are CUDA builds whose op registration
fails beside the CPU torch used here (``operator torchvision::nms does not exist``). ComfyUI and
transformers import torchvision, so before that happens we define the op schemas torchvision registers
fake kernels for. Users with a matching torch/torchvision pair never need this.
``python -m tests.support.comfyui_tree setup`` copies this module into the test venv with a ``.pth`` import
hook, only when torchvision fails to import on its own, so every process (pytest, the CLI, the ComfyUI
server) gets it.
"""
import importlib.abc
import sys


def apply() -> None:
    """Define the torchvision op schemas once (keeps the Library object alive on ``sys``)."""
    if hasattr(sys, "_tv_cpu_shim_lib"):
        return
    import torch

    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        sys._tv_cpu_shim_lib = lib
    except Exception as exc:  # a working torchvision already defined them
        sys._tv_cpu_shim_lib = None
        print("torchvision shim not applied:", exc, file=sys.stderr)


class _ApplyBeforeTorchvision(importlib.abc.MetaPathFinder):
    """Applies the shim the first time ``torchvision`` is imported, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            apply()
        return None


def install_import_hook() -> None:
    if not any(isinstance(f, _ApplyBeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _ApplyBeforeTorchvision())



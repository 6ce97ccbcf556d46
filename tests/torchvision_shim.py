"""Test-only workaround: PyPI's Linux torchvision wheels are CUDA builds whose op registration fails
beside the CPU torch used here (``operator torchvision::nms does not exist``). ComfyUI and transformers
import torchvision, so before that happens we define the op schemas torchvision registers fake kernels
for. Users with a matching torch/torchvision pair never need this. (shared docs: comfyui.md §1.3)
"""
import sys

import torch


def apply() -> None:
    if hasattr(sys, "_tv_cpu_shim_lib"):
        return
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        sys._tv_cpu_shim_lib = lib  # keep the Library alive, or the definitions vanish
    except Exception as exc:  # already defined by a working torchvision
        print("torchvision shim not applied:", exc, file=sys.stderr)

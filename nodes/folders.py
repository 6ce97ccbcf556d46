"""Our model folders in ComfyUI's ``folder_paths``: registration and listing of folder-shaped models.

Registration happens when the pack is imported (``nodes/extension.py``), because that is the one moment
every ComfyUI with the V3 API shares: older cores never call ``ComfyExtension.on_load``. ComfyUI applies
``extra_model_paths.yaml`` before it imports custom nodes, so the user's paths for our keys are already
there and stay first; ours are appended once (``folder_paths.add_model_folder_path`` is idempotent).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import folder_paths

#: ``ComfyUI/models/tcts``: diffusers-layout model folders (``model_index.json`` + component folders)
MODELS_FOLDER = "tcts"
#: ``ComfyUI/models/tcts_selectors``: TCTS token selector folders (``config.json`` + ``model.safetensors``)
SELECTORS_FOLDER = "tcts_selectors"
#: the pack's bundled ``models/`` (the demo model and its selector ship there)
PACK_MODELS = Path(__file__).resolve().parent.parent / "models"


def register_model_folder(key: str, *extra: Path) -> None:
    """``models/<key>`` plus ``extra`` paths, after any paths ``extra_model_paths.yaml`` gave the key."""
    for path in (Path(folder_paths.models_dir) / key, *extra):
        folder_paths.add_model_folder_path(key, str(path))


def register_model_folders() -> None:
    """Both of the pack's keys, each with ``models/<key>`` and the pack's bundled ``models/``."""
    register_model_folder(MODELS_FOLDER, PACK_MODELS)
    register_model_folder(SELECTORS_FOLDER, PACK_MODELS)


def named_folders(keys: Iterable[str], wanted: Callable[[Path], bool]) -> dict[str, Path]:
    """Name -> path of every sub-folder ``wanted`` accepts under the model paths of ``keys`` (first wins)."""
    found: dict[str, Path] = {}
    for key in keys:
        if key not in folder_paths.folder_names_and_paths:
            continue
        for base in folder_paths.get_folder_paths(key):
            base_path = Path(base)
            if base_path.is_dir():
                for child in sorted(base_path.iterdir()):
                    if child.is_dir() and wanted(child):
                        found.setdefault(child.name, child)
    return found

"""Our model folders in ComfyUI's ``folder_paths``: registration and listing of folder-shaped models."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import folder_paths


def register_model_folder(key: str, *extra: Path) -> None:
    """Register ``models/<key>`` (plus ``extra`` paths), keeping paths that ``extra_model_paths.yaml``
    already added (the folder_names_and_paths idiom, shared docs comfyui.md §5.4)."""
    paths = list(folder_paths.folder_names_and_paths.get(key, ([], set()))[0])
    for path in (str(Path(folder_paths.models_dir) / key), *map(str, extra)):
        if path not in paths:
            paths.append(path)
    folder_paths.folder_names_and_paths[key] = (paths, set(folder_paths.supported_pt_extensions))


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

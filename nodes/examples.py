"""The example inputs of the shipped workflows, provided to ComfyUI's *Load Image*.

The img2img, inpaint and mask-free edit workflows load ``tcts_example.png`` / ``tcts_example_inpaint.png``.
When the pack is imported they are copied from ``workflows/inputs/`` into ComfyUI's input folder, but
only where no file of that name exists: a user's own file of the same name is never replaced.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import folder_paths

EXAMPLE_INPUTS = Path(__file__).resolve().parent.parent / "workflows" / "inputs"


def provide_example_inputs() -> list[Path]:
    """Copy the missing example images into the input folder; returns the files written."""
    written = []
    try:
        target = Path(folder_paths.get_input_directory())
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(EXAMPLE_INPUTS.glob("*.png")):
            destination = target / source.name
            if not destination.exists():
                shutil.copyfile(source, destination)
                written.append(destination)
    except OSError as exc:  # a read-only input folder must not stop the pack from loading
        logging.warning("tcts: could not copy the example inputs into ComfyUI's input folder: %s", exc)
    return written

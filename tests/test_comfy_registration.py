"""What the pack sets up in ComfyUI when it is imported (nodes/folders.py, nodes/examples.py): its model
folders, with the user's paths kept first, and the example inputs, without replacing a user's file."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.comfyui


def test_model_folders_are_registered_at_import_after_the_users_paths(comfyui, pack, tmp_path):
    folders = pack("nodes.folders")
    fp = comfyui.folder_paths
    for key in (folders.MODELS_FOLDER, folders.SELECTORS_FOLDER):
        paths = fp.get_folder_paths(key)
        assert str(folders.PACK_MODELS) in paths, (key, paths)
    saved = {k: (list(v[0]), v[1]) for k, v in fp.folder_names_and_paths.items()}
    try:
        fp.folder_names_and_paths.pop(folders.MODELS_FOLDER, None)
        fp.add_model_folder_path(folders.MODELS_FOLDER, str(tmp_path / "from-yaml"), is_default=True)
        folders.register_model_folders()
        folders.register_model_folders()  # idempotent
        paths = fp.get_folder_paths(folders.MODELS_FOLDER)
        assert paths[0] == str(tmp_path / "from-yaml")
        assert len(paths) == len(set(paths)) == 3
    finally:
        fp.folder_names_and_paths.clear()
        fp.folder_names_and_paths.update(saved)


def test_the_selector_list_holds_selector_folders_only(comfyui, pack):
    names = pack("nodes.selector").selector_folders()
    assert "shapes-demo-selector" in names and "shapes-features" not in names and "shapes-demo" not in names


def test_example_inputs_are_copied_once_and_a_users_file_is_kept(comfyui, pack, tmp_path):
    examples = pack("nodes.examples")
    fp = comfyui.folder_paths
    before = fp.get_input_directory()
    fp.set_input_directory(str(tmp_path))
    try:
        (tmp_path / "tcts_example.png").write_bytes(b"the user's own picture")
        written = examples.provide_example_inputs()
        assert [p.name for p in written] == ["tcts_example_inpaint.png"]
        assert (tmp_path / "tcts_example.png").read_bytes() == b"the user's own picture"
        assert examples.provide_example_inputs() == []
    finally:
        fp.set_input_directory(before)

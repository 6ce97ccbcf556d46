"""Workflows saved with an earlier version of the pack keep working: the per-strategy sampler nodes keep their
ids and inputs, and a workflow file as it was shipped gives the tokens it gave then.

``tests/fixtures/workflows-v1/`` holds the shipped workflows as they were before the rules became plug-ins
(the composable samplers), their example inputs, and ``tokens.npz``: each pack node's output tokens from
running them then (``<file>#<node id>``). Regenerate only on purpose:
``.venv/bin/python -m tests.test_workflow_compatibility --write``. Re-recorded on purpose once: the Mask-free
edit workflow's tokens when the node's default region became the prompt contrast (docs/method.md, Mask-free
editing); every other workflow's tokens stayed the same.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.comfyui

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "workflows-v1"
FILES = sorted(FIXTURE.glob("*.json"))
TOKENS = FIXTURE / "tokens.npz"
PACK_NODES_WITH_TOKENS = ("TCTSPersistentSampler", "TCTSRevocableSampler", "TCTSFASSampler", "TCTSSelectorSampler",
                          "TCTSMaskFreeEdit")


def run_all(comfy) -> dict[str, np.ndarray]:
    """Run every fixture workflow's pack part in-process; ``<file>#<node>`` -> output tokens."""
    sys.path.insert(0, str(FIXTURE.parents[2] / "scripts"))
    from make_workflows import ancestors

    for image in FIXTURE.glob("*.png"):
        shutil.copy(image, Path(comfy.folder_paths.get_input_directory()) / image.name)
    paths = comfy.folder_paths.folder_names_and_paths
    saved = {key: (list(paths[key][0]), paths[key][1]) for key in ("tcts", "tcts_selectors")}
    try:  # the workflows name the bundled demo model: only the pack's own models/ may answer
        for key in saved:
            paths[key] = ([str(FIXTURE.parents[2] / "models")], saved[key][1])
        return run_workflows(comfy, ancestors)
    finally:
        paths.update(saved)


def run_workflows(comfy, ancestors) -> dict[str, np.ndarray]:
    out = {}
    for path in FILES:
        prompt = comfy.workflow_to_prompt(json.loads(path.read_text(encoding="utf-8")))
        runnable = {}  # every picture branch that needs no upscale model (the tests have none)
        for node_id, node in prompt.items():
            if node["class_type"] in ("SaveImage", "PreviewImage"):
                branch = ancestors(prompt, node_id)
                if not any(n["class_type"] == "UpscaleModelLoader" for n in branch.values()):
                    runnable.update(branch)
        result = comfy.run(runnable)
        for node_id, node in runnable.items():
            if node["class_type"] in PACK_NODES_WITH_TOKENS:
                out[f"{path.name}#{node_id}"] = result.output(node_id, 0).tokens.cpu().numpy()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_a_workflow_saved_before_gives_the_same_tokens(path, comfyui, pack):
    expected = np.load(TOKENS)
    keys = [k for k in expected.files if k.startswith(f"{path.name}#")]
    assert keys, f"no reference tokens for {path.name}"
    got = {k: v for k, v in run_all_cached(comfyui).items() if k.startswith(f"{path.name}#")}
    assert sorted(got) == sorted(keys)
    for key in keys:
        assert np.array_equal(got[key], expected[key]), key


_CACHE: dict[str, np.ndarray] = {}


def run_all_cached(comfy) -> dict[str, np.ndarray]:
    if not _CACHE:
        _CACHE.update(run_all(comfy))
    return _CACHE


if __name__ == "__main__":  # --write: record the reference tokens with the code as it is now
    import tempfile

    from tests.support import comfyui as harness

    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python -m tests.test_workflow_compatibility --write")
    comfy = harness.get_comfyui(base_dir=tempfile.mkdtemp(prefix="tcts-compat-"))
    comfy.load_custom_nodes(FIXTURE.parents[2])
    tokens = run_all(comfy)
    np.savez_compressed(TOKENS, **tokens)
    print(f"wrote {len(tokens)} token grids to {TOKENS}")

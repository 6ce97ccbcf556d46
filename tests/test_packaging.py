"""The registry archive (what ``comfy node pack`` zips; ``scripts/pack_listing.py``) holds the product only:
the pack's entry, the engine, the nodes, the workflows and their example inputs, the node help and icon, the
bundled demo model and selector, the user docs and the requirements — no lab, tests or developer scripts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_TOP = {"__init__.py", "nodes", "tcts", "workflows", "web", "models", "docs", "README.md", "LICENSE",
               "requirements.txt", "pyproject.toml"}


def listing() -> list[str]:
    spec = importlib.util.spec_from_file_location("pack_listing", ROOT / "scripts" / "pack_listing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.archive_files(ROOT)


def test_the_archive_holds_only_product_files():
    files = listing()
    tops = {f.split("/")[0] for f in files}
    assert tops <= PRODUCT_TOP, sorted(tops - PRODUCT_TOP)
    assert not [f for f in files if f.startswith("models/") and not f.startswith(("models/shapes-demo/",
                                                                                  "models/shapes-demo-selector/"))]


def test_the_archive_has_everything_the_pack_needs():
    files = set(listing())
    assert {"__init__.py", "nodes/extension.py", "tcts/engine.py", "requirements.txt", "LICENSE", "README.md",
            "web/icon.png", "models/shapes-demo/model_index.json", "models/shapes-demo/tcts_settings.json",
            "models/shapes-demo-selector/model.safetensors", "workflows/inputs/tcts_example.png"} <= files
    assert {p.name for p in (ROOT / "workflows").glob("*.json")} <= {Path(f).name for f in files}
    assert {f"web/docs/{p.name}" for p in (ROOT / "web" / "docs").glob("*.md")} <= files


def test_the_engine_and_the_nodes_never_import_the_lab():
    for folder in ("tcts", "nodes"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "import lab" not in text and "from lab" not in text, path

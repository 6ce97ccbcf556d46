"""The house rules of the code layout, checked on the source."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server",
                 "execution"}


def imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


def test_the_engine_never_imports_comfyui():
    for path in (ROOT / "tcts").rglob("*.py"):
        for level, name in imports(path):
            assert not (level == 0 and name.split(".")[0] in COMFY_MODULES), f"{path}: imports {name}"


def test_node_modules_import_the_engine_relatively():
    """ComfyUI loads the pack under its folder path as package name, so ``import tcts`` would fail (or
    find another package); the engine must be reached as ``..tcts``."""
    for path in (ROOT / "nodes").rglob("*.py"):
        for level, name in imports(path):
            assert not (level == 0 and name.split(".")[0] == "tcts"), f"{path}: absolute import of {name}"


def test_the_pack_entry_imports_without_comfyui():
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('pack', "
            f"{str(ROOT / '__init__.py')!r}, submodule_search_locations=[{str(ROOT)!r}]); "
            "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m); "
            "print(hasattr(m, 'comfy_entrypoint'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def call_names(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                yield func.id
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                yield f"{func.value.id}.{func.attr}"


def test_no_pickle_loading_network_or_eval_in_product_code():
    forbidden = {"eval", "exec", "torch.load", "pickle.load", "pickle.loads", "urllib.request", "hf_hub_download",
                 "snapshot_download", "requests.get", "socket.socket"}
    for folder in ("tcts", "nodes"):
        for path in (ROOT / folder).rglob("*.py"):
            for level, name in imports(path):
                assert name.split(".")[0] not in {"pickle", "requests", "urllib", "huggingface_hub"}, f"{path}: {name}"
            for name in call_names(path):
                assert name not in forbidden, f"{path}: calls {name}"

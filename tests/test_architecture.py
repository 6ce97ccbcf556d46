"""The shape of the code, checked: no import cycles, short parameter lists, one way into the engine.

* The import graph of the engine (``tcts/``), the nodes (``nodes/``) and the lab code (``lab/``,
  the whole ``lab/``) has no cycle, counting imports inside functions too.
* No function there takes more than 8 parameters, and none passes settings through ``**kwargs``; a node's
  ``execute`` (its parameters are its inputs) is the exception.
* The nodes start a generation only through the engine's entry (``tcts.engine.run``, or
  ``tcts.editing.mask_free_edit``, which builds its job and calls it): they never prepare a start or run the
  loop themselves.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tcts", "nodes")
LAB = ("lab",)
MAX_PARAMETERS = 8
#: what only the engine may touch: preparing starts and running the loop
ENGINE_INTERNALS = ("prepare", "img2img_start", "noise_for_img2img", "masked_start", "token_mask", "run_loop",
                    "LoopStart", "Draws", "model_step")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += [p for lab in LAB for p in (ROOT / lab).rglob("*.py")]
    return sorted(files)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports, anywhere in the file (also inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    files = python_files()
    known = {module_name(p) for p in files}
    graph = {module_name(p): imports_of(p, known) for p in files}
    assert sum(len(v) for v in graph.values()) > 100  # the graph was read
    assert cycles(graph) == []


def parameter_problems(path: Path) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name == "execute" and path.is_relative_to(ROOT / "nodes"):
            continue
        a = node.args
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
        count = len(names) + (1 if a.vararg else 0)
        where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
        if count > MAX_PARAMETERS:
            problems.append(f"{where} takes {count} parameters")
        if a.kwarg is not None:
            problems.append(f"{where} passes **{a.kwarg.arg} through")
    return problems


def test_no_function_takes_more_than_eight_parameters_or_passes_kwargs_through():
    problems = [p for path in python_files() for p in parameter_problems(path)]
    assert problems == []


@pytest.mark.parametrize("path", sorted((ROOT / "nodes").glob("*.py")), ids=lambda p: p.name)
def test_nodes_reach_the_engine_through_its_entry_only(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
           {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | \
           {alias.asname or alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for alias in n.names}
    assert not used & set(ENGINE_INTERNALS), f"{path.name} uses {sorted(used & set(ENGINE_INTERNALS))}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("sampling.loop"):
            assert {alias.name for alias in node.names} <= {"StepReport"}, f"{path.name} imports the loop"

"""The repository is self-contained: nothing a user gets refers to a file the user does not have.

Comments, docstrings, ``--help`` texts and documents may cite files of this repository (by path, and a
document's sections by heading) and public sources (by name or URL). They must not cite notes that only
the developers had: a markdown file that is not in the repository, its numbered sections, or the notes'
folder itself.

What is read: README.md, BENCHMARKS.md, docs/*.md, web/docs/*.md, tests/fixtures/README.md, the root
``__init__.py``, every ``*.py`` under tcts/, nodes/, scripts/, tests/ and lab/, and the ``--help``
of every ``python -m tcts`` command. What counts as a reference:

* any markdown file named: it must exist relative to the repository root, to the citing file's folder or
  to docs/;
* any path-like token that starts with a top-level folder of the repository (``docs/``, ``scripts/``,
  ``tests/``, ``tcts/``, ``nodes/``, ``workflows/``, ``models/``, ``web/``, ``lab/``): it must exist
  (a glob must match something; a template such as ``models/<key>`` must have an existing fixed part);
* a section of a document, cited by heading (``docs/method.md, FAS``), by number (with a section sign or
  the word "section": ``tests/fixtures/README.md section 3.3``) or by a markdown link's anchor: the
  document must have that heading;
* the phrases that named the developers' notes must not occur at all.

Tokens that look like repository paths but name something else are accepted by the explicit rules in
:func:`accepted_elsewhere`, each with its reason.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TOP_LEVEL = ("docs", "scripts", "tests", "tcts", "nodes", "workflows", "models", "web", "lab")

#: markdown files the code *writes* (reports), named in its help and docstrings; not documents it cites
WRITTEN_MARKDOWN = {
    "results.md": "written by `python -m tcts bench` into its --out folder",
    "speed.md": "written by `python -m tcts bench-speed` into its --out folder",
    "perf.md": "written by `python -m lab.bench.perf` into its --out folder",
    "selector_step.md": "written by lab/selector_step.py (--out)",
    "first_contact.md": "written by lab/scripts/first_contact.py into its --out folder",
}

#: ComfyUI's own model folders (``ComfyUI/models/<name>``) that the pack's loaders and docs name
COMFYUI_MODEL_FOLDERS = {"tcts", "tcts_selectors", "diffusers", "diffusion_models", "vae", "text_encoders", "clip",
                         "upscale_models", "checkpoints"}

#: exact tokens that look like repository paths but are not, with the reason
NOT_PATHS = {
    "tcts/workflows/{graph.slug}": "the uuid5 name a workflow's id is derived from (scripts/make_workflows.py)",
    "tcts/testing": "the node-library category of the test-only nodes",
}

#: phrases that named the developers' notes (written so that this file does not contain them itself)
NOTES_PHRASES = re.compile(r"shared\s*/\s*docs|shared\s+(?:docs|notes)|shapes[-]feasibility", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------------
# what is read


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "__init__.py", ROOT / "tests" / "fixtures" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "web" / "docs").glob("*.md"))
    for folder in ("tcts", "nodes", "scripts", "tests", "lab"):
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return [f for f in files if f.is_file()]


def help_texts(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``--help`` of ``python -m tcts`` and of every subcommand, unwrapped (a very wide terminal)."""
    monkeypatch.setenv("COLUMNS", "10000")
    from lab.bench import speed
    from tcts.cli import build_parser

    parser = build_parser()
    texts = {"python -m tcts --help": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                texts[f"python -m tcts {name} --help"] = sub.format_help()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        speed.main(["--help"])
    texts["python -m tcts bench-speed --help"] = out.getvalue()
    return texts


# ---------------------------------------------------------------------------------------------------------
# finding references


@dataclass(frozen=True)
class Problem:
    where: str
    line: int
    reference: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.reference!r} ({self.why})"


URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s)>\]`'\"]+", re.IGNORECASE)
MARKDOWN_NAME = re.compile(r"(?<![\w./-])([\w][\w./-]*\.md)(?![\w])")
REPO_PATH = re.compile(r"(?<![\w./~$-])((?:" + "|".join(TOP_LEVEL) + r")/[^\s`'\"()\[\],;|]*)")
SECTION_CITATION = re.compile(
    r"(?<![\w./-])(?P<doc>[\w][\w./-]*\.md)`?(?:\s*§\s*(?P<number>[\w.-]+)|\s+section\s+(?P<numbered>\d[\w.-]*)"
    r"|,\s+(?P<title>[^);]{1,80}?)\s*[);])")
SECTION_SIGN = re.compile(r"(?P<doc>[\w][\w./-]*\.md)\W{0,3}§|§\s*[\w.-]+\s+(?:of|in)\s+(?P<after>[\w][\w./-]*\.md)")
MARKDOWN_LINK = re.compile(r"\]\((?P<target>[^)\s]*)\)")


def without_urls(text: str) -> str:
    """URLs are public sources, not repository paths (same length, so positions stay)."""
    return URL.sub(lambda m: " " * len(m.group(0)), text)


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def resolve_markdown(name: str, folder: Path) -> Path | None:
    for base in (ROOT, folder, ROOT / "docs"):
        candidate = base / name
        if candidate.is_file():
            return candidate
    return None


def code_span_at(text: str, start: int) -> str | None:
    """The whole inline-code span that starts at ``start`` (``path with spaces.json`` in backticks)."""
    if start == 0 or text[start - 1] != "`":
        return None
    end = text.find("`", start)
    newline = text.find("\n", start)
    if end == -1 or (newline != -1 and newline < end):
        return None
    return text[start:end]


def path_exists(token: str) -> bool:
    """A repository path (file or folder), a glob that matches one, or a template whose fixed part exists."""
    token = token.replace("\\", "").split("#")[0].rstrip(".:!?")
    if not token:
        return True
    if any(c in token for c in "<{"):
        fixed = re.split(r"[<{]", token)[0]
        return (ROOT / fixed[: fixed.rfind("/") + 1]).is_dir()
    if any(c in token for c in "*?["):
        return any(ROOT.glob(token))
    candidates = [ROOT / token.rstrip("/"), ROOT / "tcts" / token.rstrip("/")]
    stem = token
    while "." in stem.rsplit("/", 1)[-1]:        # a module attribute: tests/torchvision_shim.apply
        stem = stem.rsplit(".", 1)[0]
        candidates.append(ROOT / f"{stem}.py")
    return any(c.exists() for c in candidates)


def node_categories() -> set[str]:
    """The node-library categories (``tcts/samplers``, …) as ``nodes/types.py`` defines them."""
    source = (ROOT / "nodes" / "types.py").read_text()
    values = dict(re.findall(r'^(\w+_CATEGORY)\s*=\s*"([^"]+)"', source, re.M))
    for name, parent, rest in re.findall(r'^(\w+_CATEGORY)\s*=\s*f"\{(\w+)\}/([^"]+)"', source, re.M):
        if parent in values:  # defined in order, each from one above it
            values[name] = f"{values[parent]}/{rest}"
    return {v for v in values.values() if "/" in v}


def accepted_elsewhere(token: str, text: str) -> str | None:
    """Why a path-like token that is not in the repository is still fine (None: it is not)."""
    clean = token.rstrip(".:!?/")
    if clean in NOT_PATHS:
        return NOT_PATHS[clean]
    if clean in node_categories():
        return "a node-library category of the pack"
    parts = clean.split("/")
    if parts[0] == "models" and len(parts) > 1 and parts[1] in COMFYUI_MODEL_FOLDERS:
        return "a folder of ComfyUI's own models directory"
    if parts[0] == "models" and clean.endswith(".py") and "diffusers" in text:
        return "a source file of diffusers' src/diffusers/models/ tree, cited by a file that names diffusers"
    return None


def headings(doc: Path) -> list[str]:
    return [re.sub(r"\s+", " ", m.group(1)).strip()
            for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", doc.read_text(), re.MULTILINE)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def names_heading(title: str, doc: Path) -> bool:
    """``title`` is a heading of ``doc``, or the start of one (whole words)."""
    title = re.sub(r"\s+", " ", title).strip().rstrip(".:").strip("\"'“”`").casefold()
    for heading in headings(doc):
        h = heading.replace("`", "").casefold()
        if h.startswith(title) and (len(h) == len(title) or not h[len(title)].isalnum()):
            return True
    return False


def problems_in(text: str, where: str, folder: Path) -> list[Problem]:
    """Every reference in ``text`` that does not resolve (``folder``: where relative names start)."""
    found: dict[tuple[int, str], str] = {}
    for m in NOTES_PHRASES.finditer(text):
        found[(line_of(text, m.start()), m.group(0))] = "names the developers' notes, which are not in the repository"
    plain = without_urls(text)
    for m in MARKDOWN_NAME.finditer(plain):
        name = m.group(1)
        if resolve_markdown(name, folder) is None and name.rsplit("/", 1)[-1] not in WRITTEN_MARKDOWN:
            found[(line_of(text, m.start()), name)] = "no such markdown file in the repository"
    for m in SECTION_SIGN.finditer(plain):
        name = m.group("doc") or m.group("after")
        if resolve_markdown(name, folder) is None:
            found[(line_of(text, m.start()), m.group(0))] = "a section of a markdown file that is not in the repository"
    for m in SECTION_CITATION.finditer(plain):
        doc = resolve_markdown(m.group("doc"), folder)
        section = m.group("number") or m.group("numbered") or m.group("title")
        if doc is None or section is None:
            continue
        first_word = section.split()[0] if section.split() else ""
        if m.group("title") is not None and not any(c.isupper() for c in first_word):
            continue                                     # prose ("…, which is …"), not a heading
        if not names_heading(section, doc):
            found[(line_of(text, m.start()), m.group(0).rstrip(");").strip())] = \
                f"{doc.relative_to(ROOT)} has no heading {section.strip()!r}"
    for m in REPO_PATH.finditer(plain):
        token = m.group(1)
        span = code_span_at(plain, m.start())
        if path_exists(token) or (span is not None and path_exists(span)) or accepted_elsewhere(token, text):
            continue
        found[(line_of(text, m.start()), token)] = "no such file or folder in the repository"
    if where.endswith(".md"):
        for m in MARKDOWN_LINK.finditer(plain):
            target = m.group("target")
            if not target or URL.match(target):
                continue
            path, _, anchor = target.partition("#")
            doc = (folder / path) if path else ROOT / where
            if path and not doc.exists():
                found[(line_of(text, m.start()), target)] = "a link to a file that is not in the repository"
            elif anchor and doc.suffix == ".md" and anchor not in {slug(h) for h in headings(doc)}:
                found[(line_of(text, m.start()), target)] = f"{doc.relative_to(ROOT)} has no heading with anchor #{anchor}"
    return [Problem(where, line, ref, why) for (line, ref), why in sorted(found.items())]


def report(problems: list[Problem]) -> str:
    return "references to files or sections that are not in the repository:\n" + "\n".join(map(str, problems))


# ---------------------------------------------------------------------------------------------------------
# the specification


def test_the_scan_covers_the_documents_and_the_code():
    files = {str(p.relative_to(ROOT)) for p in scanned_files()}
    assert {"README.md", "BENCHMARKS.md", "__init__.py", "docs/method.md", "docs/models.md",
            "tcts/sampling/fas.py", "nodes/clip.py", "tests/test_self_contained.py"} <= files
    assert not any(f.startswith(("tests/fixtures/amused-tiny", "tests/fixtures/meissonic-tiny")) for f in files)


def test_the_checker_finds_missing_files_sections_and_notes():
    md, here = ".md", ROOT / "tcts"
    bad = {
        f"see nowhere{md} for details": "nowhere",
        f"the budget (nowhere{md} §2.7)": "nowhere",
        "weights in ``tcts/" + "no_such_module.py``": "no_such_module",
        f"the FAS options (docs/method{md}, No such heading)": "No such heading",
        f"the key lists in ``/docs/keys`` of the {'shared'} {'notes'}": "notes",
    }
    for text, needle in bad.items():
        problems = problems_in(text, "example.py", here)
        assert problems and any(needle in p.reference or needle in p.why for p in problems), text
    good = [
        f"docs/method{md}, FAS (frequency adaptive sampling)",
        f"(docs/method{md}, TCTS: the token selector)",
        f"tests/fixtures/README{md} section 3.3",
        "diffusers' ``models/unets/uvit_2d.py`` and ``tcts/models/uvit.py``",
        "ComfyUI's ``models/text_encoders`` folder; ``workflows/*.json``; ``models/<key>``",
        "https://example.org/docs/nowhere.md",
    ]
    for text in good:
        assert problems_in(text, "example.py", here) == [], text


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reference_in_the_repository_resolves(path: Path):
    problems = problems_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)), path.parent)
    assert not problems, report(problems)


def test_every_help_text_refers_only_to_files_in_the_repository(monkeypatch: pytest.MonkeyPatch):
    texts = help_texts(monkeypatch)
    assert {"python -m tcts generate --help", "python -m tcts edit --help", "python -m tcts train-selector --help",
            "python -m tcts bench --help", "python -m tcts bench-speed --help"} <= set(texts)
    problems = [p for name, text in texts.items() for p in problems_in(text, name, ROOT)]
    assert not problems, report(problems)


def test_the_method_and_models_documents_have_the_sections_the_code_cites():
    method = set(headings(ROOT / "docs" / "method.md"))
    assert {"The masked sampling loop", "Samplers (Purity, Uniform, Random Revoke)", "TCTS: the token selector",
            "FAS (frequency adaptive sampling)", "Mask-free editing", "Attention capture",
            "Confirmed from the paper / reconstructed by this project", "Samplers added after the paper"} <= method
    models = set(headings(ROOT / "docs" / "models.md"))
    assert {"Model families", "Token size and image sizes", "Folder layout", "Checkpoint keys"} <= models

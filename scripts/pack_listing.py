"""The files of the ComfyUI registry archive, listed the way ``comfy node pack`` (comfy-cli) chooses them.

The archive holds the git-tracked files, minus those matching ``.comfyignore`` (gitwildmatch patterns), plus
the folders ``[tool.comfy] includes`` names. ``tests/test_packaging.py`` checks that only product files are in it.

    python scripts/pack_listing.py          # one path per line
"""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parent.parent


def tracked_files(root: Path = ROOT) -> list[str]:
    out = subprocess.run(["git", "-C", str(root), "ls-files"], check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def archive_files(root: Path = ROOT) -> list[str]:
    ignore = root / ".comfyignore"
    patterns = [line.strip() for line in ignore.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")] if ignore.is_file() else []
    spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    includes = [i.strip("/") for i in config.get("tool", {}).get("comfy", {}).get("includes", [])]

    def forced(path: str) -> bool:
        return any(path == i or path.startswith(i + "/") for i in includes)

    return sorted(p for p in tracked_files(root) if forced(p) or not spec.match_file(p))


if __name__ == "__main__":
    sys.stdout.write("\n".join(archive_files()) + "\n")

"""Every relative link of the project's markdown (README, docs/ and its result reports,
boards/, tests/, bench/, ...) names a file or folder that exists, so moving a report or a
document cannot leave the front door pointing at nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness.cbuild import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_files() -> list[Path]:
    """Every markdown file git tracks (a fresh clone's); outside a checkout, every one below
    the root except the venv and build trees."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "*.md"], cwd=ROOT, capture_output=True, check=False
    )
    if proc.returncode == 0 and proc.stdout:
        return sorted(ROOT / rel for rel in proc.stdout.decode().split("\0") if rel)
    skip = {".venv", "build", ".git", "node_modules"}
    return sorted(p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts))


def test_relative_links_resolve() -> None:
    files = _markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "RESULTS.md" in files, files
    broken = []
    for md in files:
        for target in LINK.findall(md.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            if not (md.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert not broken, broken

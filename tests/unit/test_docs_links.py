"""Every relative link of the project's markdown (README, docs/, result reports, boards/,
tests/, bench/) names a file or folder that exists, so moving a report or a document cannot
leave the front door pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

from harness.cbuild import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]
    for folder in ("boards", "tests", "bench"):
        files += (ROOT / folder).glob("*.md")
    return sorted(files)


def test_relative_links_resolve() -> None:
    files = _markdown_files()
    assert len(files) > 10, files
    broken = []
    for md in files:
        for target in LINK.findall(md.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            if not (md.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
    assert not broken, broken

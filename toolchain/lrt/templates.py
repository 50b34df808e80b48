"""Rendering of firmware_templates/ (jinja2, StrictUndefined, no logic in the .j2) and
writes that leave unchanged files alone (so make rebuilds only what changed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import jinja2

from lrt import resources

TEMPLATES = resources.templates_dir()


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **values: object) -> str:
    """Render a template under firmware_templates/ (StrictUndefined, no logic in the .j2)."""
    return _env().get_template(template).render(**values)


def write_if_changed(path: Path, text: str) -> None:
    # Unchanged files keep their mtime, so make does not rebuild everything every time.
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def copy_if_changed(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)

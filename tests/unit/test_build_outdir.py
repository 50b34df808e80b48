"""lrt-build replaces the C sources of DIR/src: it must refuse a directory holding a user's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrt import codegen, pipeline
from lrt.errors import UserError


def test_foreign_sources_are_the_files_no_build_writes(tmp_path: Path) -> None:
    for name in ("lrt_kernels.c", "lrt_old_module.h", "main.c", "my_driver.c", "board.h"):
        (tmp_path / name).write_text("int x;\n")
    (tmp_path / "notes.txt").write_text("not C\n")
    assert codegen.foreign_sources(tmp_path) == ["board.h", "my_driver.c"]
    assert codegen.foreign_sources(tmp_path / "missing") == []


def test_build_refuses_an_out_dir_with_user_sources_before_training(tmp_path: Path) -> None:
    src = tmp_path / "proj" / "src"
    src.mkdir(parents=True)
    mine = src / "my_driver.c"
    mine.write_text("int my_driver;\n")
    with pytest.raises(UserError, match=r"my_driver\.c"):
        pipeline.build("host", tmp_path / "proj", progress=False)
    assert mine.read_text() == "int my_driver;\n"
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["src"]

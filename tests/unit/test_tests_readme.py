"""tests/README.md's map "source -> tests" stays true: it lists every module of
toolchain/lrt, every file of the C library and every test file, and names only files that
exist."""

from __future__ import annotations

import re

from harness.cbuild import LIB_DIR, ROOT

TESTS = ROOT / "tests"
TOOLCHAIN = ROOT / "toolchain"
ROW = re.compile(r"^\| `([^`]+)` \| (.*) \|$")


def _map() -> dict[str, str]:
    rows = {}
    for line in (TESTS / "README.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_module_and_library_file_has_a_row() -> None:
    rows = _map()
    modules = {
        str(p.relative_to(TOOLCHAIN))
        for p in (TOOLCHAIN / "lrt").rglob("*.py")
        if p != TOOLCHAIN / "lrt" / "__init__.py"  # the version string only
    }
    lib = {p.name for p in LIB_DIR.glob("*.c")}
    lib |= {p.name for p in LIB_DIR.glob("*.h") if not p.with_suffix(".c").exists()}
    assert modules - rows.keys() == set()
    assert lib - rows.keys() == set()
    assert len(modules) > 40 and len(lib) > 20  # the globs found the trees


def test_every_test_file_is_mapped_and_every_named_file_exists() -> None:
    text = (TESTS / "README.md").read_text()
    named = set(re.findall(r"`((?:unit|c|emu|golden|helpers)/[\w/]+\.py)`", text))
    for rel in named:
        assert (TESTS / rel).is_file(), rel
    test_files = {str(p.relative_to(TESTS)) for p in TESTS.glob("*/test_*.py")}
    assert test_files - named == set()
    for src in _map():
        if src.startswith("lrt/"):
            assert (TOOLCHAIN / src).is_file(), src
        elif src.startswith("lrt_"):
            assert (LIB_DIR / src).is_file(), src

"""lrt_isqrt64 (lrt_fixmath.c, Newton from a tangent guess + one Karatsuba step): exact
floor square root, exhaustively on ranges, around every tested perfect square, at the edges
of the 64-bit range, and on random values against Python's math.isqrt. lrt_udiv64_32 against
the compiler's 64-bit division."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.cbuild import LIB_DIR, compile_c


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("isqrt") / "isqrt_driver"
    # -O2 without sanitizers for the sweeps' speed; the stdin mode runs under ASan/UBSan.
    # LRT_UDIV64_PORTABLE: the 32-bit cores' division (64-bit hosts divide natively)
    compile_c([Path(__file__).with_name("isqrt_driver.c"), LIB_DIR / "lrt_fixmath.c",
               LIB_DIR / "lrt_common.c"], out, extra=["-O2", "-DLRT_UDIV64_PORTABLE=1"],
              sanitize=False)
    return out


def _sweep(driver: Path, *args: str) -> None:
    proc = subprocess.run([str(driver), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("bad 0"), proc.stdout


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (0, 1 << 25),  # every value up to 2^25: all small normalisations
        ((1 << 32) - (1 << 22), (1 << 32) + (1 << 22)),  # the 32/64-bit switch
        ((1 << 64) - (1 << 22), 0),  # the top of the range, up to 2^64 - 1 (wraps to 0)
        ((1 << 62) - (1 << 20), (1 << 62) + (1 << 20)),
    ],
)
def test_exhaustive_ranges(driver: Path, lo: int, hi: int) -> None:
    _sweep(driver, "sweep", str(lo), str(hi))


def test_around_perfect_squares(driver: Path) -> None:
    _sweep(driver, "squares", "997")


def test_udiv64_32_against_the_compiler(driver: Path) -> None:
    """lrt_udiv64_32 (the SVD's and lrt_ufx_div's 64 / 32-bit division) equals n / d."""
    _sweep(driver, "div", "3000000")


def test_random_against_python(tmp_path: Path) -> None:
    exe = compile_c([Path(__file__).with_name("isqrt_driver.c"), LIB_DIR / "lrt_fixmath.c",
                     LIB_DIR / "lrt_common.c"], tmp_path / "isqrt_san")
    rng = np.random.default_rng(3)
    bits = rng.integers(1, 65, size=20000)
    xs = [int(rng.integers(0, 1 << 62, dtype=np.uint64)) << 2 | int(rng.integers(0, 4))
          for _ in range(20000)]
    xs = [x >> (64 - int(b)) for x, b in zip(xs, bits, strict=True)]
    xs += [0, 1, 2, 3, 4, (1 << 64) - 1, (1 << 32) - 1, 1 << 32, (1 << 32) + 1]
    data = b"".join(x.to_bytes(8, "little") for x in xs)
    out = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout
    got = np.frombuffer(out, dtype="<u4")
    assert [int(g) for g in got] == [math.isqrt(x) for x in xs]

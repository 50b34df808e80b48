"""The C generator and share rounding of lrt_util.h against their Python twins (lrt.rng,
lrt.policy), under ASan/UBSan: seeded streams, raw states including the zero state, and
shares of cells at the edges of the Q16 range."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cbuild import compile_c
from lrt.policy import Policy
from lrt.rng import XorShift32, xorshift32, xorshift32_seed


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rng") / "rng_driver"
    return compile_c([Path(__file__).with_name("rng_driver.c")], out)


def run(driver: Path, *args: int | str) -> list[int]:
    out = subprocess.run(
        [str(driver), *map(str, args)], capture_output=True, text=True, check=True
    ).stdout
    return [int(v) for v in out.split()]


@pytest.mark.parametrize("seed", [0, 1, 987654321, 0xFFFFFFFF, 0x61C88647])
def test_seeded_stream_matches_python(driver: Path, seed: int) -> None:
    c = run(driver, "seed", seed, 200)
    gen = XorShift32(seed)
    assert c[0] == xorshift32_seed(seed) != 0
    assert c[1:] == [gen() for _ in range(200)]


@pytest.mark.parametrize("state", [0, 1, 0x9E3779B9, 0x80000000, 0xFFFFFFFF])
def test_raw_state_stream_matches_python(driver: Path, state: int) -> None:
    words, s = [], state
    for _ in range(100):
        s = xorshift32(s)
        words.append(s)
    assert run(driver, "state", state, 100) == words
    assert 0 not in words


def test_zero_state_is_the_fixed_replacement(driver: Path) -> None:
    assert run(driver, "state", 0, 3) == run(driver, "state", 0x9E3779B9, 3)


@pytest.mark.parametrize(
    ("q16", "cells"),
    [(0, 10), (1, 1), (655, 1152), (655, 100), (65535, 7), (65536, 7), (70000, 7),
     (32768, 0xFFFFF), (1, 0)],
)
def test_share_cells_matches_policy(driver: Path, q16: int, cells: int) -> None:
    assert run(driver, "share", q16, cells) == [Policy().min_cells(cells, q16)]

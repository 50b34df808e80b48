"""lrt_nvm under chained power cuts and over a full-size weight set.

* Power cuts chained over reboots (nvm_powerchain.c): every boot cycle is cut once at a random
  op, recovery commits included, with tears that leave nothing, a prefix, random bits,
  garbage or zeros; >= 10^5 cut states, nothing torn, nothing lost.
* Every single-bit flip of one full-size slot of the mcu preset's weight set on the
  STM32F446RE's sectors (header, wear table, 21,616-byte blob) is detected (nvm_bitflip.c).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cbuild import LIB_DIR, compile_c
from lrt import nvm

HERE = Path(__file__).resolve().parent
LIB_SRC = [LIB_DIR / n for n in (
    "lrt_nvm.c", "lrt_nvm_budget.c", "lrt_nvm_drift.c", "lrt_nvm_host.c", "lrt_crc32.c",
    "lrt_common.c",
)]
CUTS_PER_GEOMETRY = 34_000  # x 3 geometries: > 10^5 cut states

GEOMETRIES = {
    "flash": ["tech=flash", "prog=4", "page=64", "pages=24", "blob=300"],
    "flash-zero-erased": ["tech=flash", "prog=8", "page=128", "pages=16", "blob=200",
                          "slots=4", "erase=0"],
    "rram": ["tech=rram", "prog=4", "page=64", "pages=40", "blob=300", "unit=16", "erase=0"],
}


def result(stdout: str) -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


@pytest.fixture(scope="module")
def exe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("faults")
    return {
        "chain": compile_c([HERE / "nvm_powerchain.c", *LIB_SRC], out / "chain"),
        # optimised, no sanitizers: 173,000 remounts of a 21 KB set (the sanitized drivers
        # cover the same code on small sets)
        "bitflip": compile_c([HERE / "nvm_bitflip.c", *LIB_SRC], out / "bitflip",
                             extra=["-O2"], sanitize=False),
    }


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_chained_power_cuts_lose_nothing(exe: dict[str, Path], name: str) -> None:
    proc = subprocess.run([exe["chain"], f"cuts={CUTS_PER_GEOMETRY}", "seed=11",
                           *GEOMETRIES[name]], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    print(proc.stdout.strip())
    r = result(proc.stdout)
    assert r["cuts"] >= CUTS_PER_GEOMETRY and r["torn"] == 0 and r["lost"] == 0
    assert r["recovery_cuts"] > 100 and r["chained_cuts"] > CUTS_PER_GEOMETRY // 2
    assert r["wipes"] > 100


def test_every_bit_flip_of_a_full_mcu_slot_detected(exe: dict[str, Path]) -> None:
    geo = ["tech=flash", "prog=4", "page=131072", "pages=3", "blob=21616", "chunk=1024"]
    proc = subprocess.run([exe["bitflip"], "flipslot=1", *geo], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout.strip())
    r = result(proc.stdout)
    lay = nvm.NvmGeometry(tech=nvm.TECH_FLASH, prog_size=4, page_size=131072, page_count=3,
                          blob_size=21616).layout()
    assert r["flips"] == 8 * (nvm.HEADER_SIZE + lay.table_len + 21616)
    assert r["detected"] == r["flips"] == r["fell_back"]

"""Register-level NVM drivers (lrt_nvm_stm32f4.c, lrt_nvm_nrf52.c): built for their boards with
arm-none-eabi-gcc, linked into the boards' firmware, and run on the host against models of the
FLASH controller / NVMC (tests/c/*_sim.c) under the NVM power-loss enumeration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cbuild import LIB_DIR, compile_c
from lrt.boards import load_board

HERE = Path(__file__).resolve().parent
LIB_SRC = [LIB_DIR / n for n in (
    "lrt_nvm.c", "lrt_nvm_budget.c", "lrt_nvm_drift.c", "lrt_nvm_host.c", "lrt_crc32.c",
    "lrt_common.c",
)]
DRIVERS = {"nucleo-f446re": "lrt_nvm_stm32f4.c", "nrf52840-dk": "lrt_nvm_nrf52.c"}
SIM = {"stm32f4": ["stm32f4_sim.c", "stm32f4_sim_driver.c"],
       "nrf52": ["nrf52_sim.c", "nrf52_sim_driver.c"]}
ARM = shutil.which("arm-none-eabi-gcc") is not None


def result(stdout: str, tag: str) -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith(tag + " "))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


@pytest.mark.skipif(not ARM, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("board", sorted(DRIVERS))
def test_driver_builds_for_its_board_without_float(tmp_path: Path, board: str) -> None:
    flags = load_board(board).cpu.cflags
    obj = tmp_path / "drv.o"
    subprocess.run(
        ["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
         *flags, f"-I{LIB_DIR}", "-c", str(LIB_DIR / DRIVERS[board]), "-o", str(obj)],
        check=True, capture_output=True, text=True)
    syms = subprocess.run(["arm-none-eabi-nm", str(obj)], check=True, capture_output=True,
                          text=True).stdout.split()
    assert "lrt_nvm_stm32f4_init" in syms or "lrt_nvm_nrf52_init" in syms
    assert not [s for s in syms if s.startswith(("__aeabi_f", "__aeabi_d"))]
    # the peripheral's address (gcc may load a base below it and use offsets) and the keys
    dump = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], check=True,
                          capture_output=True, text=True).stdout
    if board == "nucleo-f446re":
        assert ".word\t0x40023" in dump and "0x45670123" in dump and "0xcdef89ab" in dump
    else:
        assert ".word\t0x4001e000" in dump


def test_stm32f4_registers_on_the_model(tmp_path: Path) -> None:
    exe = compile_c([HERE / "nvm_stm32f4_regs.c", *(HERE / f for f in SIM["stm32f4"]),
                     *LIB_SRC], tmp_path / "regs", include_dirs=[HERE])
    proc = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for want in ("OK sector map", "OK init checks", "OK program, erase, lock after each",
                 "OK WRPERR -> LRT_ERR_IO", "OK commit over the driver"):
        assert want in proc.stdout


@pytest.mark.parametrize(
    ("sim", "geo"),
    [
        # the nucleo's sectors 5-7 (128 KiB each) and the mcu preset's 21.6 KB weight set
        ("stm32f4", "base=0x08020000 page=131072 pages=3 blob=21616 chunk=1024 commits=15"),
        # sectors 0-3 (16 KiB): slots of two sectors, so sectors are skipped or rewritten
        ("stm32f4", "base=0x08000000 page=16384 pages=4 blob=20000 chunk=512 commits=30"),
        # the nRF52840-DK's top 128 KiB, 4 KiB pages, a page-sized window (any write order)
        ("nrf52", "base=0xE0000 page=4096 pages=32 blob=21616 chunk=4096 commits=30"),
    ],
    ids=["stm32f4-128k", "stm32f4-16k", "nrf52"],
)
def test_power_loss_over_driver_model(tmp_path: Path, sim: str, geo: str) -> None:
    exe = compile_c([HERE / "nvm_powerloss.c", *(HERE / f for f in SIM[sim]), *LIB_SRC],
                    tmp_path / "pl", include_dirs=[HERE], extra=[f"-DNVM_SIM_{sim.upper()}"])
    plans = ["plans=2"] if "chunk=4096" not in geo else []
    proc = subprocess.run([exe, "seed=9", "tech=flash", "prog=4", *geo.split(), *plans],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    print(proc.stdout.strip())
    r, s = result(proc.stdout, "RESULT"), result(proc.stdout, "SIM")
    assert r["torn"] == 0 and r["lost"] == 0
    assert r["trials"] == 3 * (r["cut_points"] - r["commits"]) + r["commits"]
    assert s["protocol_errors"] == 0 and s["erases"] > 0 and s["programs"] > 0
    assert s["polls"] > s["programs"]  # BSY / READY was waited for


@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.skipif(not ARM, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("board", sorted(DRIVERS))
def test_firmware_links_the_boards_driver(board: str) -> None:
    """lrt-build for the real boards: main.c mounts through the board's flash driver, with a
    work buffer of lrt_nvm_work_size bytes (a 1 KiB window on the nucleo, not a sector)."""
    from helpers.e2e_support import built
    from lrt import codegen, nvm, pipeline

    build = built("lrt-maxnorm", board)
    rep = pipeline.load_build(build)[0]
    brd = load_board(board)
    elf = build / rep["firmware"]
    syms = {}
    for line in subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], check=True,
                               capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        syms[parts[-1]] = int(parts[1], 16) if len(parts) == 4 else 0
    init = "lrt_nvm_stm32f4_init" if board == "nucleo-f446re" else "lrt_nvm_nrf52_init"
    assert init in syms and "lrt_nvm_mem_init" not in syms
    geo = codegen.nvm_geometry(brd, rep["blob_size"])
    chunk = codegen.nvm_chunk_size(brd)
    assert chunk == (1024 if board == "nucleo-f446re" else 0)
    assert syms["nvm_work"] == (nvm.work_size(geo, chunk) + 3) // 4 * 4
    assert syms["nvm_work"] < brd.nvm.page_size or board != "nucleo-f446re"
    assert rep["footprint"]["ram"] <= brd.ram_budget
    print(board, "RAM", rep["footprint"]["ram"], "NVM work", syms["nvm_work"],
          "slots", geo.layout().n_slots)

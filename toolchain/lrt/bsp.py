"""Board support of a firmware build: which BSP files a board and I/O channel use, the
rendered lrt_board.h (the board's defines) and, on ARM, the linker script from its memory map."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from lrt.boards import Board
from lrt.cflags import semihosted
from lrt.errors import UserError
from lrt.templates import TEMPLATES, copy_if_changed, render, write_if_changed

BSP = TEMPLATES / "bsp"
NVM_TECH_CODES = {"flash": 1, "rram": 2, "mram": 3, "fram": 4}
UART_SOURCES = {
    "cmsdk": "cmsdk/lrt_platform_cmsdk.c",
    "stm32-usart": "stm32/lrt_platform_stm32f4.c",
    "nrf-uart": "nrf52/lrt_platform_nrf52.c",
}
NVM_SECTION = '__attribute__((section(".lrt_nvm"), aligned(4)))'


@functools.cache  # the header ships with the package: read it once
def platform_line(macro: str) -> str:
    """A text line the firmware prints on a serial channel (a string macro of
    bsp/lrt_platform.h: LRT_PLATFORM_READY, LRT_PLATFORM_BOOT_FAILED)."""
    text = (BSP / "lrt_platform.h").read_text()
    m = re.search(rf'#define\s+{macro}\s+"([^"\\]*)"', text)
    if m is None:
        raise UserError(f"{macro} not found in bsp/lrt_platform.h")
    return m.group(1)


@dataclass(frozen=True)
class Define:
    name: str
    value: str
    comment: str = ""


def resolve_io(board: Board, io: str | None) -> str:
    channel = io or board.io
    if channel == board.io:
        return channel
    if channel == "uart" and board.uart is not None:
        return channel
    if channel == "semihosting" and semihosted(board):
        return channel
    raise UserError(
        f"board '{board.name}' cannot use I/O channel '{channel}' (its channel: '{board.io}'"
        + (", or 'uart'" if board.uart is not None and board.io != "uart" else "")
        + ")"
    )


def bsp_sources(board: Board, io: str) -> list[str]:
    """BSP files (relative to firmware_templates/bsp) a build for this board compiles."""
    if board.is_host:
        return ["host/lrt_platform_host.c"]
    files = ["cortexm/startup.c", "cortexm/lrt_cycles.c"]
    if io == "semihosting":
        files.append("semihost/lrt_platform_semihost.c")
    else:
        assert board.uart is not None
        files.append(UART_SOURCES[board.uart.driver])
    return files


def board_defines(board: Board, io: str) -> list[Define]:
    """The macros of the generated lrt_board.h (documented in boards/README.md)."""
    nvm = board.nvm
    d = [
        Define("LRT_BOARD_NAME", f'"{board.name}"'),
        Define("LRT_BOARD_CPU_HZ", f"{board.cpu.clock_hz}u"),
        Define(
            "LRT_PLATFORM_CYCLES_HZ",
            f"{board.cpu.clock_hz}u",
            "lrt_platform_cycles() ticks per second",
        ),
        Define("LRT_SEMIHOSTING", "1" if semihosted(board) else "0",
               "linked with newlib rdimon (QEMU boards)"),
        Define(f"LRT_BOARD_IO_{io.upper()}", "1", f"I/O channel: {io}"),
        Define("LRT_BOARD_NVM_TECH_FLASH", "1", "NVM technologies"),
        Define("LRT_BOARD_NVM_TECH_RRAM", "2"),
        Define("LRT_BOARD_NVM_TECH_MRAM", "3"),
        Define("LRT_BOARD_NVM_TECH_FRAM", "4"),
        Define("LRT_BOARD_NVM_TECH", str(NVM_TECH_CODES[nvm.technology]), nvm.technology),
        Define("LRT_BOARD_NVM_ERASE_BEFORE_WRITE", "1" if nvm.erase_before_write else "0"),
        Define("LRT_BOARD_NVM_SIZE", f"{nvm.size:#x}u"),
        Define("LRT_BOARD_NVM_PAGE_SIZE", f"{nvm.page_size}u", "erase unit / row"),
        Define("LRT_BOARD_NVM_PROG_SIZE", f"{nvm.prog_size}u", "smallest program unit"),
        Define("LRT_BOARD_NVM_ERASE_VALUE", f"{nvm.erase_value:#04x}u"),
        Define("LRT_BOARD_NVM_ENDURANCE", f"{nvm.endurance}ul",
               "write/erase cycles per cell (flash: per page)"),
        Define(f"LRT_BOARD_NVM_DRIVER_{nvm.driver.upper().replace('-', '_')}", "1",
               f"NVM driver: {nvm.driver}"),
    ]
    if nvm.origin is None:
        d += [
            Define("LRT_BOARD_NVM_BASE", "0u", "host: the NVM is a host backend"),
            Define("LRT_BOARD_NVM_SECTION", "", "host: initial weights are ordinary data"),
        ]
    else:
        d += [
            Define("LRT_BOARD_NVM_BASE", f"{nvm.origin:#010x}u",
                   f"NVM region in {board.nvm_memory} (linker symbols __lrt_nvm_start__/end__)"),
            Define("LRT_BOARD_NVM_SECTION", NVM_SECTION,
                   "put the initial weight set into the NVM region"),
        ]
    if board.uart is not None:
        u = board.uart
        d += [
            Define("LRT_BOARD_UART_BASE", f"{u.base:#010x}u", f"UART ({u.driver})"),
            Define("LRT_BOARD_UART_BAUD", f"{u.baud}u"),
            Define("LRT_BOARD_UART_CLOCK_HZ", f"{u.clock_hz}u"),
        ]
        if u.tx_pin is not None:
            d.append(Define("LRT_BOARD_UART_TX_PIN", str(u.tx_pin)))
        if u.rx_pin is not None:
            d.append(Define("LRT_BOARD_UART_RX_PIN", str(u.rx_pin)))
    return d


def linker_values(board: Board) -> dict[str, object]:
    """Numbers for cortexm/link.ld.j2 (all layout arithmetic is here, not in the template)."""
    assert board.memory is not None and board.nvm.origin is not None
    code, data = board.code_region, board.data_region
    return {
        "board_name": board.name,
        "board_file": board.path.name,
        "code_origin": f"{code.origin:#010x}",
        "code_size": f"{code.size:#x}",
        "ram_origin": f"{data.origin:#010x}",
        "ram_size": f"{data.size:#x}",
        "nvm_origin": f"{board.nvm.origin:#010x}",
        "nvm_size": f"{board.nvm.size:#x}",
        "stack_size": f"{board.memory.stack_size:#x}",
        "heap_size": f"{board.memory.heap_size:#x}",
        **_nvm_fill(board),
    }


def _nvm_fill(board: Board) -> dict[str, str]:
    # An emulator's NVM region is RAM that starts as zeros; a fresh part reads as its erase
    # value. Emulated boards therefore carry the whole region, padded with that value, in
    # the image. Real flash is erased by the programmer, so their images stay small.
    if board.nvm.driver != "ram":
        return {"nvm_pad": "", "nvm_fill": "",
                "nvm_fill_comment": "Real NVM: the rest of the region is left to the part."}
    value = f"{board.nvm.erase_value:#04x}"
    return {
        "nvm_pad": ". = ORIGIN(NVM) + LENGTH(NVM);",
        "nvm_fill": f" ={value}",
        "nvm_fill_comment": f"Emulated NVM (RAM): the image fills the whole region with {value}.",
    }


def write_bsp(bsp_dir: Path, board: Board, io: str) -> list[Path]:
    """Copy the BSP for a board into bsp_dir, render lrt_board.h (+ link.ld on ARM).

    Returns the C files to compile."""
    sources = bsp_sources(board, io)
    for rel in ["lrt_platform.h", *sources]:
        copy_if_changed(BSP / rel, bsp_dir / Path(rel).name)
    # The platform code returns lrt_err codes; -Isrc comes first, so the copy codegen put
    # into src/ wins, and this one only serves firmware built without the library.
    copy_if_changed(TEMPLATES / "lib" / "lrt_common.h", bsp_dir / "lrt_common.h")
    header = render(
        "bsp/lrt_board.h.j2",
        board_name=board.name,
        board_file=board.path.name,
        defines=board_defines(board, io),
    )
    write_if_changed(bsp_dir / "lrt_board.h", header)
    if not board.is_host:
        write_if_changed(bsp_dir / "link.ld", render("bsp/cortexm/link.ld.j2",
                                                      **linker_values(board)))
    return [bsp_dir / Path(rel).name for rel in sources]

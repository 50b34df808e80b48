"""Compiler and linker flags of a board's firmware build: the host cc (optionally sanitized)
or arm-none-eabi-gcc for its Cortex-M core, the SIMD kernels where the core has DSP."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from lrt.boards import Board
from lrt.errors import UserError

ARM_PREFIX = "arm-none-eabi-"
WARN_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
SANITIZE_FLAGS = (
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
)


@functools.lru_cache(maxsize=8)
def _is_gcc(cc: str) -> bool:
    """True for gcc (clang also defines __GNUC__, and refuses gcc's -fvect-cost-model)."""
    require_tool(cc)
    proc = subprocess.run([cc, "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                          text=True)  # fmt: skip
    return proc.returncode == 0 and "__clang__" not in proc.stdout and "__GNUC__" in proc.stdout


def host_cflags(
    board: Board, *, sanitize: bool = False, opt: str = "-O2", cc: str = "cc"
) -> list[str]:
    """Compiler flags for the host board (without include paths); its `cpu.cflags` last."""
    flags = [*WARN_FLAGS, opt]
    if _is_gcc(cc):
        # gcc's -O2 vectorizes only loops whose trip count is a known multiple of the vector
        # width; the dynamic cost model lets it vectorize the kernels' dot products and
        # scatters (the host emulator's hot path) for the baseline ISA: same integers
        flags.append("-fvect-cost-model=dynamic")
    if sanitize:
        flags += ["-g", *SANITIZE_FLAGS]
    return [*flags, *board.cpu.cflags]


def arm_cflags(board: Board, *, opt: str = "-O2") -> list[str]:
    """Compiler flags for a Cortex-M board (without include paths)."""
    _require_arm(board)
    return [
        *WARN_FLAGS,
        opt,
        "-g",
        "-ffunction-sections",
        "-fdata-sections",
        *board.cpu.cflags,
        *simd_flags(board),
    ]


def simd_flags(board: Board) -> list[str]:
    """The SIMD kernels (lrt_kernels.h) on cores with the DSP extension."""
    return ["-DLRT_KERNELS_SIMD=1"] if board.cpu.simd else []


def semihosted(board: Board) -> bool:
    """QEMU boards link newlib's rdimon: semihosting I/O and exit status reach the host."""
    return not board.is_host and board.emulator.qemu is not None


def arm_ldflags(board: Board, ldscript: str, mapfile: str) -> list[str]:
    specs = ["--specs=rdimon.specs"] if semihosted(board) else [
        "--specs=nano.specs", "--specs=nosys.specs"
    ]
    return [
        *board.cpu.cflags,
        *board.cpu.ldflags,
        "-nostartfiles",
        *specs,
        f"-T{ldscript}",
        "-Wl,--gc-sections",
        f"-Wl,-Map={mapfile}",
    ]


def _require_arm(board: Board) -> None:
    if board.is_host:
        raise UserError(f"board '{board.name}' is the host, not an ARM target")


# the Debian package that brings a tool (the others come with the host compiler's)
_TOOL_PACKAGES = (
    (ARM_PREFIX, "gcc-arm-none-eabi libnewlib-arm-none-eabi"),
    ("qemu-system-arm", "qemu-system-arm"),
    ("clang", "clang"),
)


def require_tool(name: str) -> str:
    """name, after checking it is on PATH (UserError naming its Debian package otherwise)."""
    if shutil.which(name) is None:
        tool = Path(name).name  # (a path to a tool names its package too)
        package = next((pkg for prefix, pkg in _TOOL_PACKAGES if tool.startswith(prefix)),
                       "build-essential")  # fmt: skip
        raise UserError(
            f"'{name}' not found on PATH: install it (Debian: apt install {package}; "
            "a source checkout's scripts/setup.sh installs every system package)"
        )
    return name

"""The linked firmware's footprint: bytes of flash and RAM from the ELF's sections, checked
against the board's budget (an overshoot names the biggest symbols)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lrt.boards import Board
from lrt.cflags import ARM_PREFIX, require_tool
from lrt.errors import UserError


@dataclass(frozen=True)
class Footprint:
    """Bytes per kind of memory, from the ELF's section headers (``size -A``)."""

    text: int  # vectors, code, constants (flash)
    data: int  # initialised data: a copy in flash and the live one in RAM
    bss: int
    heap: int
    stack: int
    nvm: int  # the initial weight set in the NVM region

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss + self.heap + self.stack

    def to_dict(self) -> dict[str, int]:
        """JSON-ready numbers, totals included."""
        return {**asdict(self), "flash": self.flash, "ram": self.ram}


_FLASH_SECTIONS = (".isr_vector", ".text", ".ARM.extab", ".ARM.exidx", ".rodata")


def section_sizes(elf: Path) -> dict[str, tuple[int, int]]:
    """{section: (size, address)} of an ELF's allocated sections (``size -A``)."""
    out = subprocess.run(
        [require_tool(ARM_PREFIX + "size"), "-A", "-d", str(elf)],
        capture_output=True, text=True, check=True,
    ).stdout
    sections: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            size, addr = int(parts[1]), int(parts[2])
            # Non-allocated sections (.comment, .debug_*) sit at address 0, and so does the
            # vector table on boards whose code starts at 0.
            if addr or parts[0] in _FLASH_SECTIONS:
                sections[parts[0]] = (size, addr)
    return sections


def elf_footprint(elf: Path) -> Footprint:
    sec = section_sizes(elf)
    get = lambda name: sec.get(name, (0, 0))[0]  # noqa: E731
    text = sum(get(s) for s in _FLASH_SECTIONS)
    return Footprint(
        text=text,
        data=get(".data"),
        bss=get(".bss"),
        heap=get(".heap"),
        stack=get(".stack"),
        nvm=get(".lrt_nvm"),
    )


def biggest_symbols(files: Sequence[Path], *, ram: bool, flash: bool, count: int = 8) -> str:
    """'name (N B), ...' of the biggest symbols in ELF/object files (``nm --size-sort``)."""
    if not files:
        return "(no object files)"
    types = set()
    if flash:
        types |= set("TtRr")
    if ram:
        types |= set("BbCc")
    types |= set("Dd")
    out = subprocess.run(
        [require_tool(ARM_PREFIX + "nm"), "--size-sort", "-S", "-r", *map(str, files)],
        capture_output=True, text=True,
    ).stdout
    syms: list[tuple[int, str]] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in types:
            syms.append((int(parts[1], 16), parts[3]))
    syms.sort(reverse=True)
    return ", ".join(f"{name} ({size} B)" for size, name in syms[:count]) or "(none)"


def check_footprint(board: Board, fp: Footprint, elf: Path) -> None:
    """UserError if the image needs more flash or RAM than the board's budget allows."""
    problems = []
    if fp.flash > board.flash_budget:
        problems.append(
            f"flash: needs {fp.flash} B (text {fp.text} + data {fp.data}), budget "
            f"{board.flash_budget} B, over by {fp.flash - board.flash_budget} B"
        )
    if fp.ram > board.ram_budget:
        problems.append(
            f"RAM: needs {fp.ram} B (data {fp.data} + bss {fp.bss} + heap {fp.heap} + stack "
            f"{fp.stack}), budget {board.ram_budget} B, over by {fp.ram - board.ram_budget} B"
        )
    if fp.nvm > board.nvm.size:
        problems.append(f"NVM: needs {fp.nvm} B, region {board.nvm.size} B")
    if problems:
        biggest = biggest_symbols(
            [elf], ram=fp.ram > board.ram_budget, flash=fp.flash > board.flash_budget
        )
        raise UserError(
            f"firmware does not fit board '{board.name}': {'; '.join(problems)}. "
            f"Biggest symbols: {biggest}"
        )

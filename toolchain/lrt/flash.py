"""Flash a built firmware onto a real board: OpenOCD, pyOCD or PlatformIO's upload.

``flash_command`` only builds the command line; ``flash`` checks that the tool is on PATH
and (pyOCD, OpenOCD) that a debug probe is attached before it writes anything, so a
missing probe is a one-line UserError (exit status 2), not a tool's stack trace.

The console script lrt-flash (cli.py) parses ``--board``, ``--build``, ``--method`` and
``--dry-run`` and calls ``flash``.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

from lrt.boards import Board
from lrt.errors import DeviceError, UserError

INSTALL = {
    "openocd": "apt install openocd",
    "pyocd": "pip install pyocd",
    "pio": "pip install 'lrt[pio]'",
}
PROBE_TIMEOUT = 30.0


def _methods(board: Board) -> tuple[str, ...]:
    if board.flash is None:
        why = "it runs in an emulator" if board.is_host or board.emulator.qemu else "no [flash]"
        raise UserError(f"board '{board.name}' cannot be flashed ({why}); "
                        "boards with a flash method: " + ", ".join(_flashable()))
    return board.flash.methods


def _flashable() -> list[str]:
    from lrt.boards import list_boards

    return [b.name for b in list_boards() if b.flash is not None]


def resolve_method(board: Board, method: str | None) -> str:
    methods = _methods(board)
    assert board.flash is not None
    chosen = method or board.flash.method
    if chosen not in methods:
        raise UserError(f"board '{board.name}' flashes with {', '.join(methods)}, not '{chosen}'")
    return chosen


ELF32_HEADER = struct.Struct("<16sHHIIIIIHHHHHH")
ELF32_PHDR = struct.Struct("<IIIIIIII")
PT_LOAD = 1


def _elf(path: Path, board: Board) -> Path:
    """path, if it is an ARM ELF whose loaded bytes all lie in the board's code region (a
    flasher given anything else writes garbage, or another board's layout)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    # 32-bit little-endian ARM executable (e_ident, e_machine = EM_ARM)
    if len(data) < 52 or data[:6] != b"\x7fELF\x01\x01" or data[18:20] != b"\x28\x00":
        raise UserError(f"{path} is not a 32-bit ARM ELF firmware image")
    fields = ELF32_HEADER.unpack_from(data)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if phentsize < ELF32_PHDR.size or phoff + phnum * phentsize > len(data):
        raise UserError(f"{path}: truncated ELF (program headers past its end)")
    code = board.code_region
    loads = [
        (paddr, filesz)
        for p_type, _, _, paddr, filesz, _, _, _ in (
            ELF32_PHDR.unpack_from(data, phoff + i * phentsize) for i in range(phnum)
        )
        if p_type == PT_LOAD and filesz
    ]
    if not loads:
        raise UserError(f"{path} has no loadable segment: not a firmware image")
    for paddr, filesz in loads:
        if not code.origin <= paddr <= code.end - filesz:
            raise UserError(
                f"{path} loads {filesz:,d} B at 0x{paddr:08x}, outside {board.name}'s code "
                f"region 0x{code.origin:08x}-0x{code.end:08x}: built for another board?"
            )
    return path


def find_firmware(board: Board, build_dir: Path) -> Path:
    """The ELF to flash: an ELF path, an lrt-build directory (report.json), or a directory
    build.build_firmware wrote into (out/<board>/fw.elf)."""
    build_dir = Path(build_dir)
    if build_dir.is_file():
        return _elf(build_dir, board)
    report = build_dir / "report.json"
    candidates = []
    if report.is_file():
        from lrt.pipeline import read_report

        data = read_report(report, config=False)
        if data.get("board") not in (None, board.name):
            raise UserError(
                f"{build_dir} was built for board '{data['board']}', not '{board.name}'"
            )
        if "firmware" in data:
            candidates.append(build_dir / data["firmware"])
    candidates += [build_dir / "out" / board.name / "fw.elf", build_dir / "fw.elf"]
    for path in candidates:
        if path.is_file():
            return _elf(path, board)
    raise UserError(f"no firmware for board '{board.name}' in {build_dir} (run lrt-build "
                    f"--board {board.name} first)")


def pio_project_dir(board: Board, build_dir: Path, write: bool = True) -> Path:
    """The PlatformIO project of a build (written next to its sources if missing and
    `write`)."""
    from lrt.pio_project import write_pio_project

    project = Path(build_dir) / "pio"
    if write and not (project / "platformio.ini").is_file():
        write_pio_project(Path(build_dir), board, project)
    return project


def flash_command(
    board: Board, build_dir: Path, method: str | None = None, write: bool = True
) -> list[str]:
    """The command that writes the firmware of build_dir to the board (`write`: create the
    PlatformIO project it needs; a dry run does not)."""
    chosen = resolve_method(board, method)
    assert board.flash is not None
    # an lrt build of this board (or its ELF), whatever the method: never another's layout
    elf = find_firmware(board, build_dir)
    if chosen == "pio":
        if Path(build_dir).is_file() or not (Path(build_dir) / "report.json").is_file():
            raise UserError(
                f"--method pio uploads an lrt-build directory's PlatformIO project; {build_dir} "
                "is not one (give the directory lrt-build wrote, or --method "
                + " / ".join(m for m in board.flash.methods if m != "pio") + " for an ELF)"
            )
        project = pio_project_dir(board, build_dir, write)
        return [_pio(), "run", "-d", str(project), "-e", board.name, "-t", "upload"]
    if chosen == "openocd":
        assert board.flash.openocd_config is not None
        return ["openocd", "-f", board.flash.openocd_config,
                "-c", f"program {elf} verify reset exit"]
    assert board.flash.pyocd_target is not None
    return ["pyocd", "flash", "-t", board.flash.pyocd_target, str(elf)]


def _pio() -> str:
    from lrt.pio_standin import pio_executable

    return pio_executable(required=False)


def _require_tool(tool: str, board: Board) -> str:
    path = shutil.which(_pio() if tool == "pio" else tool)
    if path is None:
        others = [m for m in _methods(board) if m != tool]
        raise UserError(f"'{tool}' is not on PATH ({INSTALL[tool]})"
                        + (f"; or use --method {' / '.join(others)}" if others else ""))
    return path


def check_probe(board: Board, method: str) -> None:
    """UserError unless a debug probe for this method is attached (pyOCD, OpenOCD)."""
    assert board.flash is not None
    if method == "pyocd":
        tool = _require_tool("pyocd", board)
        proc = subprocess.run([tool, "list"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 or "No available debug probes" in text or not any(
            line.strip().startswith("0") for line in proc.stdout.splitlines()
        ):
            raise UserError(f"no debug probe found by `pyocd list` (connect the "
                            f"{board.name}'s USB debug port): {text.strip()[-300:]}")
    elif method == "openocd":
        tool = _require_tool("openocd", board)
        assert board.flash.openocd_config is not None
        try:
            proc = subprocess.run([tool, "-f", board.flash.openocd_config, "-c", "init; exit"],
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise UserError("openocd did not answer within "
                            f"{PROBE_TIMEOUT:.0f} s probing for the debug adapter") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise UserError(f"openocd found no debug probe for {board.name} "
                            f"({board.flash.openocd_config}): connect the board's USB debug "
                            "port (lsusb lists it) and allow your user to open it (the "
                            f"adapter's udev rules, or run as root):\n{tail}")
    elif method == "pio":
        _require_tool("pio", board)


def flash(
    board: Board, build_dir: Path, dry_run: bool = False, method: str | None = None
) -> list[str]:
    """Flash (or with dry_run only compute) the command; returns it. UserError for what the
    user can mend (no tool, no probe), DeviceError when the flashing itself fails."""
    cmd = flash_command(board, Path(build_dir), method, write=not dry_run)
    if dry_run:
        return cmd
    chosen = resolve_method(board, method)
    check_probe(board, chosen)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        # the probe answered: the board or the transfer failed, not the user's input
        raise DeviceError(f"flashing {board.name} with {chosen} failed "
                          f"(exit {proc.returncode}): {tail}")
    return cmd

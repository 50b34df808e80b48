"""Run built firmware and talk to it: one wire protocol (protocol.py), one client
(base.Device), one runner per target (host.py, qemu.py, renode.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from lrt.boards import EMULATORS
from lrt.emulate import protocol as P
from lrt.emulate.base import (
    DEFAULT_TIMEOUT,
    DEFAULT_WINDOW,
    EXIT_FOREIGN,
    Device,
    DeviceTimeout,
    LinkError,
    PipeTransport,
    Runner,
    Transport,
)
from lrt.emulate.host import HostRunner
from lrt.emulate.protocol import FrameError, Info, LayerStats, ProtocolError, Stats
from lrt.errors import UserError

__all__ = [
    "EXIT_FOREIGN",
    "Device",
    "DeviceTimeout",
    "FrameError",
    "HostRunner",
    "Info",
    "LayerStats",
    "LinkError",
    "PipeTransport",
    "ProtocolError",
    "Runner",
    "Stats",
    "Transport",
    "open_device",
]


# what lrt-build writes into its directory (the generated PlatformIO project included)
BUILD_FILES = frozenset(
    {"report.json", "model.tflite", "ir", "src", "out", "pio", "platformio.ini", "link.ld",
     "lrt_pio_extra.py"}
)  # fmt: skip


def refuse_build_file(build_dir: Path | str, flag: str, path: Path) -> None:
    """UserError where an output ``path`` is one of the files lrt-build wrote into
    ``build_dir`` (writing it would break the build)."""
    try:
        rel = path.resolve().relative_to(Path(build_dir).resolve())
    except ValueError:
        return
    if rel.parts and rel.parts[0] in BUILD_FILES:
        raise UserError(
            f"{flag} {path} is part of the build in {build_dir} (lrt-build wrote "
            f"{rel.parts[0]}); writing it would break the build: name a file elsewhere"
        )


def expected_payload(report: dict[str, Any]) -> int:
    """The max payload of the build's firmware, from its model's input size (report.json)."""
    model = report.get("model")
    layers = model.get("layers") if isinstance(model, dict) else None
    if not layers:
        return P.APP_MIN_PAYLOAD
    return P.device_payload(int(np.prod(layers[0]["in"])))


def open_device(
    build_dir: Path | str,
    report: dict[str, Any] | None = None,
    emulator: str = "auto",
    nvm_path: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    window: int = DEFAULT_WINDOW,
    format_store: bool = False,
    port: str | None = None,
    baud: int | None = None,
) -> Device:
    """Start the firmware of an lrt-build directory on its emulator, or (``port``) reach the
    board that runs it on a serial port (``baud``: the board's); a connected Device
    (HELLO answered: ``dev.info`` holds the model and the weight store's state), checked to
    run the model and scheme of the build's report.json (UserError otherwise: a firmware
    file replaced after the build would report another network's figures under its names).

    ``auto`` picks the host executable for the host board and QEMU for boards with a QEMU
    machine. ``nvm_path`` (host only) is checked first (lrt.store): an image of another
    model or build is refused unless ``format_store``. Use as a context manager: leaving it
    says BYE and waits for the exit."""
    build_dir = Path(build_dir)
    if report is None:
        path = build_dir / "report.json"
        if build_dir.is_file():
            raise UserError(f"{build_dir} is a file; --build names the directory lrt-build wrote")
        if not path.is_file():
            raise UserError(f"{build_dir} is not an lrt build directory (no report.json)")
        from lrt.pipeline import read_report

        report = read_report(path, config=False)  # board and firmware suffice
    if baud is not None and port is None:
        raise UserError("--baud sets the rate of --port TTY, which is not given")
    if format_store and nvm_path is None and port is None:
        raise UserError("--format re-initialises the --nvm image; no --nvm IMAGE is given")
    if nvm_path is not None:
        refuse_build_file(build_dir, "--nvm", Path(nvm_path))
    if port is not None:
        # the firmware is the board's, flashed earlier: the device check below is the one
        dev = _connect(report, port, baud, emulator, nvm_path, format_store, timeout)
    else:
        _check_firmware_file(build_dir, report)  # before the firmware touches an NVM image
        dev = _start(build_dir, report, emulator, nvm_path, timeout, window, format_store)
        dev.expected_payload = expected_payload(report)  # (open_serial sets it for a board)
    # an emulator runs the build's file; a board runs what was flashed on it
    remedy = ("flash the board with this build (lrt-flash) or give the build it runs"
              if port is not None else "rebuild it with lrt-build")  # fmt: skip
    try:
        _check_firmware(dev, report, build_dir, remedy)
    except BaseException:
        dev.close(bye=False)
        raise
    return dev


def _check_firmware_file(build_dir: Path, report: dict[str, Any]) -> None:
    """The firmware file is the one lrt-build made (its sha256 in report.json, where the
    build recorded it)."""
    want = report.get("firmware_sha256")
    firmware = build_dir / str(report.get("firmware"))
    if not isinstance(want, str) or not firmware.is_file():
        return  # an older build's report, or no file: the device check below still runs
    if hashlib.sha256(firmware.read_bytes()).hexdigest() != want:
        raise UserError(
            f"{firmware} is not the firmware lrt-build made for {build_dir} (its sha256 "
            "differs from report.json's): rebuild it with lrt-build"
        )


def _check_firmware(dev: Device, report: dict[str, Any], build_dir: Path, remedy: str) -> None:
    """The running firmware is the one of the report: its model's fingerprint, its scheme."""
    info = dev.info if dev.info is not None else dev.hello()
    model = report.get("model")
    fingerprint = model.get("fingerprint") if isinstance(model, dict) else None
    try:
        same_model = not isinstance(fingerprint, str) or info.matches_fingerprint(fingerprint)
    except ValueError:
        raise UserError(
            f"{build_dir}/report.json: model fingerprint {fingerprint!r} is not hex"
        ) from None
    if not same_model:
        raise UserError(
            f"the firmware of {build_dir} runs another model than its report.json "
            f"(fingerprint {info.fingerprint.hex()}..., the build's {str(fingerprint)[:8]}...): "
            f"{remedy}"
        )
    config = report.get("config")
    scheme = config.get("scheme") if isinstance(config, dict) else None
    # max-norm is a setting of its own (max_norm=on/off), not part of the scheme compared
    if isinstance(scheme, str) and (
        scheme.removesuffix("-maxnorm") != info.scheme_name.removesuffix("-maxnorm")
    ):
        raise UserError(
            f"the firmware of {build_dir} runs scheme {info.scheme_name!r}, its report.json "
            f"says {scheme!r}: {remedy}"
        )


def _connect(
    report: dict[str, Any],
    port: str,
    baud: int | None,
    emulator: str,
    nvm_path: Path | str | None,
    format_store: bool,
    timeout: float,
) -> Device:
    from lrt import boards
    from lrt.emulate.serial_link import open_serial

    if emulator != "auto":
        raise UserError(f"--port reaches a board on a serial port; --emulator {emulator} "
                        "starts one: give one of them")  # fmt: skip
    if nvm_path is not None or format_store:
        raise UserError("--port: the board keeps its weights in its own NVM; --nvm and "
                        "--format apply to a host emulator's image file")  # fmt: skip
    board = boards.load_build_board(report)
    if board.uart is None:
        raise UserError(f"--port: board {board.name!r} has no UART to reach its firmware on")
    if baud is None:
        baud = board.uart.baud
    elif baud < 1:
        raise UserError(f"--baud {baud}: expected a positive rate")
    return open_serial(port, baud, f"{board.name} on {port}", timeout, expected_payload(report))


def _start(
    build_dir: Path,
    report: dict[str, Any],
    emulator: str,
    nvm_path: Path | str | None,
    timeout: float,
    window: int,
    format_store: bool,
) -> Device:
    if emulator not in EMULATORS:
        raise UserError(f"emulator {emulator!r}: expected one of {', '.join(EMULATORS)}")
    from lrt import boards

    board = boards.load_build_board(report)
    firmware = build_dir / report["firmware"]
    if emulator == "auto":
        if board.is_host:
            emulator = "host"
        elif board.emulator.qemu:
            emulator = "qemu"
        elif board.emulator.renode:
            emulator = "renode"
        else:
            raise UserError(f"board {board.name!r} has no emulator; flash it with lrt-flash")
    if emulator == "host":
        if not board.is_host:
            other = ("--emulator qemu" if board.emulator.qemu
                     else "--emulator renode" if board.emulator.renode
                     else "--port TTY on the flashed board (lrt-flash)")  # fmt: skip
            raise UserError(
                f"--emulator host runs host builds; this build is for board {board.name!r}: "
                f"use {other}, or build with --board host"
            )
        fmt = False
        if nvm_path is not None:
            from lrt import store
            from lrt.pipeline import load_build

            _, model = load_build(build_dir)
            geometry = store.build_geometry(report, model)
            fmt = store.prepare_device_image(Path(nvm_path), geometry, format_store)
        dev = HostRunner(firmware, nvm_path=nvm_path, format_store=fmt).start(
            timeout=timeout, window=window
        )
        try:
            dev.hello()
        except LinkError:
            status = dev.close(bye=False)
            if status == EXIT_FOREIGN:
                raise UserError(
                    f"NVM image {nvm_path} refused by the firmware: it holds another model's "
                    "weights; --format re-initialises it (its weight sets are lost)"
                ) from None
            raise
        return dev
    if format_store:
        raise UserError("--format applies to an --nvm image of the host emulator")
    if nvm_path is not None:
        raise UserError("--nvm (a file-backed weight store) needs the host emulator")
    if emulator == "qemu":
        from lrt.emulate.qemu import QemuRunner, qemu_machine

        if not board.emulator.qemu and board.nvm.driver != "ram":
            # a stand-in machine (netduinoplus2 for the STM32F446) maps the part's flash as ROM
            # and leaves its flash controller unimplemented: the weight store cannot be
            # written, so the firmware stops at boot, silently on a UART
            raise UserError(
                f"board {board.name!r}: QEMU's stand-in {qemu_machine(board)!r} cannot run "
                f"the lrt firmware (its NVM driver {board.nvm.driver!r} needs writable on-chip "
                "flash, which QEMU maps as ROM); flash the board (lrt-flash) or build for a "
                "QEMU board such as mps2-an386"
            )
        qemu = QemuRunner(board, firmware)
        transport = PipeTransport(qemu.spawn(), name=f"QEMU {qemu_machine(board)}")
        return Device(transport, timeout=timeout, window=window, name=f"qemu:{board.name}")
    if emulator == "renode":
        import shutil
        import tempfile

        from lrt.emulate.renode import RenodeRunner, renode_platform, require_renode

        renode_platform(board)  # the board names a Renode machine
        require_renode()
        # the runner writes its .resc/.robot and Renode's log there (removed after a clean
        # session). A serial link drops bytes while the firmware is busy: one frame in flight.
        work = Path(tempfile.mkdtemp(prefix=f"lrt-renode-{board.name}-"))
        try:
            uart = RenodeRunner(board, firmware, work, timeout=timeout).open()
        except UserError:
            if not (work / "session" / "renode.log").is_file():  # no log for the error to name
                shutil.rmtree(work, ignore_errors=True)
            raise
        return Device(uart, timeout=timeout, window=1, name=f"renode:{board.name}")
    raise UserError(f"emulator {emulator!r} cannot run board {board.name!r}")

"""A board reached on a serial port (`--port` of lrt-emulate, lrt-pull and lrt-push).

QEMU's mps2-an386 with its UART on a pseudo-terminal stands in for a board behind a USB-UART
bridge: its firmware is built for the UART channel with a real board's sessions that outlive
BYE (forced on: the image still links semihosting, as QEMU boards do), and the tools open the
pty with pyserial exactly as they would /dev/ttyACM0. A run over the port must give the host
emulator's figures and weights bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import PLAIN_ERROR_COUNT, built
from lrt import codegen, pipeline, roundtrip
from lrt.boards import load_board
from lrt.build import build_firmware
from lrt.emulate import open_device
from lrt.emulate.qemu import qemu_argv
from lrt.model import Model

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
BIN = Path(sys.executable).parent
GATE = {"gate_rate": PLAIN_ERROR_COUNT}  # writes within a short stream
SAMPLES = 300


def _pty_of(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """The pseudo-terminal QEMU names (on its stdout) for its -serial pty."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            found = re.search(rb"(/dev/pts/\d+)", seen)
            if found:
                return found.group(1).decode()
    raise AssertionError(f"QEMU named no pty: {seen.decode(errors='replace')}")


@pytest.fixture(scope="module")
def board_on_pty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(the mps2-an386 build, the pty its board answers on)."""
    build = built("lrt-maxnorm", "mps2-an386", **GATE)
    board = load_board("mps2-an386")
    gen = tmp_path_factory.mktemp("serial")
    shutil.copytree(build / "src", gen / "src")
    # a real board's firmware: on a semihosted QEMU board BYE would end the emulator
    res = build_firmware(gen, board, io="uart", extra_cflags=["-DLRT_SERIAL_SESSIONS=1"])
    argv = qemu_argv(board, res.executable, io="uart")
    argv[argv.index("stdio")] = "pty"
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    holder = None
    try:
        pty = _pty_of(proc)
        # QEMU drops the guest's output while no one holds the pty open and looks for a
        # reader about once a second: keep it held (never read here) for the whole module
        holder = os.open(pty, os.O_RDWR | os.O_NOCTTY)
        time.sleep(1.5)
        yield build, pty
    finally:
        if holder is not None:
            os.close(holder)
        proc.kill()
        proc.wait()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_a_board_on_a_serial_port_learns_reports_and_round_trips_like_the_host(
    board_on_pty: tuple[Path, str], tmp_path: Path
) -> None:
    build, pty = board_on_pty
    host = built("lrt-maxnorm", "host", **GATE)
    image = tmp_path / "host.img"

    # session 1: the stream, over the port, against the host emulator on a store file
    run = _cli("lrt-emulate", "--build", str(build), "--port", pty, "--samples", str(SAMPLES),
               "--stream", "shift", "--json", str(tmp_path / "board.json"), "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    board_run = json.loads((tmp_path / "board.json").read_text())
    host_run = pipeline.emulate(host, samples=SAMPLES, stream="shift", nvm_path=image).to_dict()
    for key in ("online_accuracy", "online_accuracy_ema", "flushes", "max_writes_per_cell",
                "layers"):  # fmt: skip
        assert board_run[key] == host_run[key], key
    assert board_run["flushes"] > 0 and board_run["instructions_per_sample"] is None

    # session 2: the weights it learned (and the biases its BYE committed) are the host's
    pulled = _cli("lrt-pull", "--build", str(build), "--port", pty, "--out",
                  str(tmp_path / "board_pull"), "--no-eval")  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    host_pull = roundtrip.pull(host, tmp_path / "host_pull", nvm_image=image, evaluate=False)
    pull = json.loads((tmp_path / "board_pull" / "pull.json").read_text())
    assert pull["source"].endswith(f"on {pty}")
    assert pull["layers"] == [d.__dict__ for d in host_pull.layers]
    assert any(layer["changed"] > 0 for layer in pull["layers"])
    learned = Model.load(tmp_path / "board_pull" / "ir")
    layout = codegen.blob_layout(learned)
    assert codegen.blob_bytes(learned, layout) == codegen.blob_bytes(
        Model.load(tmp_path / "host_pull" / "ir"), layout
    )

    # session 3: a session that only reads committed nothing at its end
    with open_device(build, port=pty) as dev:
        assert dev.info is not None and dev.info.generation == int(pull["generation"])

    # session 4: the built weights pushed back as a new generation
    pushed = _cli("lrt-push", "--build", str(build), "--port", pty, "--weights",
                  str(build / "model.tflite"))  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    generation = int(re.search(r"generation (\d+)", pushed.stdout).group(1))  # type: ignore[union-attr]
    assert generation > int(pull["generation"])

    # session 5: the board runs on them (the push session's end committed nothing either)
    built_model = Model.load(build / "ir")
    with open_device(build, port=pty) as dev:
        assert dev.info is not None and dev.info.generation == generation
        blob = dev.read_all_blob(layout.size)
    assert blob == codegen.blob_bytes(built_model, layout)


def test_port_refusals_are_one_line_errors(tmp_path: Path) -> None:
    host, board = built("lrt-maxnorm", "host", **GATE), built("lrt-maxnorm", "mps2-an386", **GATE)
    cases = [
        (("lrt-emulate", "--build", str(host), "--port", "/dev/null"), "has no UART"),
        (("lrt-pull", "--build", str(board), "--port", "/dev/null", "--nvm",
          str(tmp_path / "x.img"), "--out", str(tmp_path / "p")), "--nvm and --format"),
        (("lrt-emulate", "--build", str(board), "--port", "/dev/null", "--emulator", "qemu"),
         "--emulator qemu starts one"),
        (("lrt-push", "--build", str(board), "--port", str(tmp_path / "no-such-tty"),
          "--weights", str(board / "model.tflite")), "cannot open it as a serial port"),
        (("lrt-emulate", "--build", str(board), "--port", "/dev/null", "--baud", "0"),
         "--baud 0"),
        (("lrt-emulate", "--build", str(board), "--baud", "9600"), "--port TTY, which is not"),
        (("lrt-emulate", "--nvm-report", str(tmp_path / "x.img"), "--port", "/dev/null"),
         "--port reaches a board"),
        (("lrt-emulate", "--build", str(board), "--port", "/dev/null", "--stream", "analog"),
         "a board's own NVM drifts by itself"),
    ]  # fmt: skip
    for argv, message in cases:
        proc = _cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, (argv, proc.stderr)


def test_a_port_without_a_board_times_out_with_a_hint(board_on_pty: tuple[Path, str]) -> None:
    """A tty that never answers (here: the build's port held by no firmware, a second pty
    pair) is named with what to check, not a protocol trace."""
    build, _ = board_on_pty
    master, slave = os.openpty()
    try:
        proc = _cli("lrt-emulate", "--build", str(build), "--port", os.ttyname(slave),
                    "--samples", "1")  # fmt: skip
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 2, proc.stderr
    assert "no reply to HELLO" in proc.stderr and "baud" in proc.stderr, proc.stderr


def test_a_host_that_died_mid_push_and_mid_frame_does_not_wedge_the_board(
    board_on_pty: tuple[Path, str],
) -> None:
    """A host that stopped with a push open (which makes the board refuse TRAIN) and half-way
    through a frame (the board waits for the rest): the next session still learns."""
    from lrt.emulate import protocol as P
    from lrt.emulate.serial_link import SerialTransport

    build, pty = board_on_pty
    dead = SerialTransport(pty, 115200)
    frame = P.hello_request()
    blob_start = Model.load(build / "ir")  # rewrite the first bytes with what they are
    head = codegen.blob_bytes(blob_start, codegen.blob_layout(blob_start))[:16]
    dead.write(P.encode_frame(P.MsgType.WRITE, P.write_payload(0, head)))
    dead.write(frame[: len(frame) // 2] + b"\xa5\x5a\x01\xff\x07")  # a frame cut short
    time.sleep(0.5)
    dead.close()
    with open_device(build, port=pty) as dev:
        assert dev.info is not None and dev.info.n_classes == 10
        logits, pred = dev.train(np.zeros(dev.info.input_size, dtype=np.int8), 3)
        assert logits.shape == (10,) and 0 <= pred < 10

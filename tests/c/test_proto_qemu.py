"""The request server on the real BSPs, driven by the Python client through the runners:
host executable (ASan/UBSan), QEMU semihosting (Cortex-M4F, Cortex-M3) and the CMSDK UART.
Same dummy handlers and expected replies as test_proto_device.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.cbuild import LIB_DIR
from helpers.proto_dummy_model import BLOB_SIZE, CLASSES, blob_bytes, dummy_reply, random_inputs
from lrt.boards import load_board
from lrt.build import FirmwareBuild, build_firmware
from lrt.emulate import Device, PipeTransport, open_device
from lrt.emulate import protocol as P

HERE = Path(__file__).parent
LIB_FILES = ["lrt_app", "lrt_proto", "lrt_crc32", "lrt_common"]
READY = b"lrt: ready\n"

TARGETS = [
    pytest.param("host", None, id="host"),
    pytest.param("mps2-an386", None, id="mps2-an386", marks=pytest.mark.qemu),
    pytest.param("lm3s6965evb", None, id="lm3s6965evb", marks=pytest.mark.qemu),
    pytest.param("mps2-an386", "uart", id="mps2-an386-uart", marks=pytest.mark.qemu),
]


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = tmp_path_factory.mktemp("proto_fw")
    src = gen / "src"
    src.mkdir()
    shutil.copy(HERE / "proto_dummy_platform.c", src / "main.c")
    shutil.copy(HERE / "proto_dummy.h", src / "proto_dummy.h")
    for name in LIB_FILES:
        for ext in (".c", ".h"):
            shutil.copy(LIB_DIR / (name + ext), src / (name + ext))
    shutil.copy(LIB_DIR / "lrt_util.h", src / "lrt_util.h")  # header-only: byte order
    return gen


_builds: dict[tuple[str, str | None], FirmwareBuild] = {}


def build(gen_dir: Path, board: str, io: str | None) -> FirmwareBuild:
    key = (board, io)
    if key not in _builds:
        brd = load_board(board)
        _builds[key] = build_firmware(gen_dir, brd, io=io, sanitize=brd.is_host)
    return _builds[key]


def start(gen_dir: Path, board: str, io: str | None) -> Device:
    res = build(gen_dir, board, io)
    if io is None:
        # through open_device, as lrt-emulate does, with a minimal build report
        report = {"board": board, "firmware": str(res.executable.relative_to(gen_dir))}
        (gen_dir / "report.json").write_text(json.dumps(report))
        return open_device(gen_dir, timeout=60.0)
    from lrt.emulate.qemu import QemuRunner

    proc = QemuRunner(res.board, res.executable, io=io).spawn()
    return Device(PipeTransport(proc, name=f"QEMU {board} ({io})"), timeout=60.0)


@pytest.mark.parametrize(("board", "io"), TARGETS)
def test_protocol_on_target(gen_dir: Path, board: str, io: str | None) -> None:
    rng = np.random.default_rng(11)
    n = 300
    xs = random_inputs(rng, n)
    ys = rng.integers(0, CLASSES, size=n)
    dev = start(gen_dir, board, io)
    try:
        info = dev.hello()
        assert dev.banner == READY
        assert info.n_classes == CLASSES and info.samples == 0

        logits, preds = dev.train_many(xs, ys)
        want = [dummy_reply(x) for x in xs]
        assert np.array_equal(logits, np.stack([w[0] for w in want]))
        assert np.array_equal(preds, [w[1] for w in want])
        assert dev.stats().samples == n
        assert dev.read_all_blob(BLOB_SIZE) == blob_bytes(0, BLOB_SIZE)

        frame = bytearray(P.infer_request(xs[0].tobytes()))
        frame[-1] ^= 0xFF
        dev.send(bytes(frame))
        msg_type, payload = dev.read_reply()
        assert msg_type == P.MsgType.ERROR and P.ErrorReply.parse(payload).name == "LRT_ERR_CRC"
        assert np.array_equal(dev.infer(xs[1])[0], want[1][0])
    finally:
        status = dev.close()
    assert status == 0, dev.transport.diagnostics()

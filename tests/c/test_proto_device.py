"""The Python client (lrt.emulate) against a real C request server: proto_dummy_fw.c runs
lrt_app_serve over stdin/stdout with the dummy handlers documented in proto_dummy.h, built
with ASan/UBSan. Expected replies are re-derived here from that documentation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from harness.cbuild import LIB_DIR, compile_c
from helpers.proto_dummy_model import (
    BLOB_SIZE,
    CLASSES,
    IN_SHAPE,
    INPUT_SIZE,
    LAYERS,
    blob_bytes,
    dummy_reply,
    random_inputs,
)
from lrt.emulate import Device, DeviceTimeout, HostRunner, LinkError, PipeTransport, ProtocolError
from lrt.emulate import protocol as P

HERE = Path(__file__).parent
SOURCES = [
    HERE / "proto_dummy_fw.c",
    LIB_DIR / "lrt_app.c",
    LIB_DIR / "lrt_proto.c",
    LIB_DIR / "lrt_crc32.c",
]


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dummy_fw") / "dummy_fw"
    return compile_c(SOURCES, out, include_dirs=[HERE])


@pytest.fixture
def dev(firmware: Path) -> Device:
    device = HostRunner(firmware).start(timeout=20.0)
    yield device  # type: ignore[misc]
    status = device.close()
    assert status == 0, device.transport.diagnostics()


def test_hello(dev: Device) -> None:
    info = dev.hello()
    assert info.version == P.VERSION == 2
    assert info.scheme == P.Scheme.LRT and info.max_norm and info.scheme_name == "lrt-maxnorm"
    assert (info.n_layers, info.n_classes) == (LAYERS, CLASSES)
    assert info.input_shape == IN_SHAPE and info.input_size == INPUT_SIZE
    assert info.fingerprint == bytes.fromhex("deadbeef")
    assert info.matches_fingerprint("deadbeef0123abcd")
    assert not info.matches_fingerprint("deadbeee0123abcd")
    assert info.samples == 0
    assert info.max_payload == P.device_payload(INPUT_SIZE) == P.APP_MIN_PAYLOAD
    # the stub's store state (proto_dummy.h): fell back, generation 0x01020304
    assert info.store == P.STORE_FALLBACK and info.generation == 0x01020304


def test_infer_train_stats(dev: Device) -> None:
    rng = np.random.default_rng(1)
    xs = random_inputs(rng, 5)
    for x in xs:
        logits, pred = dev.infer(x)
        want_logits, want_pred = dummy_reply(x)
        assert logits.dtype == np.int8
        assert np.array_equal(logits, want_logits) and pred == want_pred
    for i, x in enumerate(xs):
        logits, pred = dev.train(x, label=i % CLASSES)
        assert np.array_equal(logits, dummy_reply(x)[0]) and pred == dummy_reply(x)[1]
    st = dev.stats()
    assert (st.samples, st.flushes) == (5, 0)
    assert [(s.max_writes, s.total_writes, s.paper_max_writes) for s in st.layers] == [
        (5 + k, 10 + k, 0) for k in range(LAYERS)
    ]
    assert st.max_writes == 5 + LAYERS - 1
    assert dev.hello().samples == 5


def test_read_blob(dev: Device) -> None:
    assert dev.read_blob(0, 16) == blob_bytes(0, 16)
    assert dev.read_blob(4990, 100) == blob_bytes(4990, 10)  # short at the end
    assert dev.read_blob(BLOB_SIZE, 10) == b""
    most = dev.hello().max_payload  # the device's frames, not the protocol's cap
    assert dev.read_blob(123, most) == blob_bytes(123, most)
    with pytest.raises(ProtocolError) as err:
        dev.read_blob(BLOB_SIZE + 1, 1)
    assert err.value.name == "LRT_ERR_ARG" and err.value.request_type == P.MsgType.READ
    with pytest.raises(ProtocolError) as err:
        dev.read_blob(0, most + 1)
    assert err.value.name == "LRT_ERR_SIZE"
    assert dev.read_all_blob(BLOB_SIZE) == blob_bytes(0, BLOB_SIZE)
    with pytest.raises(Exception, match="blob has 5000 bytes"):
        dev.read_all_blob(BLOB_SIZE + 3)


def test_errors_keep_link_usable(dev: Device) -> None:
    dev.drift(P.DriftKind.ANALOG, seed=7, param=-5)
    with pytest.raises(ProtocolError) as err:
        dev.drift(P.DriftKind.DIGITAL, seed=0, param=1)  # the dummy refuses seed 0
    assert err.value.code == -12 and err.value.name == "LRT_ERR_UNSUPPORTED"
    with pytest.raises(ProtocolError) as err:
        dev.drift(3, seed=1, param=1)
    assert err.value.name == "LRT_ERR_ARG"
    x = np.zeros(INPUT_SIZE, dtype=np.int8)
    x[:2] = 0x7F
    with pytest.raises(ProtocolError) as err:
        dev.infer(x)  # handler error
    assert err.value.name == "LRT_ERR_STATE" and err.value.request_type == P.MsgType.INFER
    with pytest.raises(ProtocolError) as err:
        dev.train(np.ones(INPUT_SIZE, dtype=np.int8), label=CLASSES)
    assert err.value.name == "LRT_ERR_ARG"
    with pytest.raises(ProtocolError) as err:
        dev.request(P.MsgType.INFER, b"\x01" * (INPUT_SIZE - 1))
    assert err.value.name == "LRT_ERR_SIZE"
    with pytest.raises(ProtocolError) as err:
        dev.request(0x55)
    assert err.value.name == "LRT_ERR_TYPE" and err.value.request_type == 0x55
    with pytest.raises(ValueError):
        dev.infer(np.zeros(INPUT_SIZE + 1, dtype=np.int8))  # refused before sending
    x = np.arange(INPUT_SIZE, dtype=np.int8)
    assert dev.infer(x)[1] == dummy_reply(x)[1]
    assert dev.stats().samples == 0


def test_corrupted_frames_then_service(dev: Device) -> None:
    x = np.arange(INPUT_SIZE, dtype=np.int8)
    frame = bytearray(P.infer_request(x.tobytes()))
    frame[10] ^= 0x04  # payload bit: CRC mismatch
    dev.send(bytes(frame))
    reply = _error(dev)
    assert (reply.name, reply.request_type) == ("LRT_ERR_CRC", P.MsgType.INFER)

    # garbage in the same bad region: no second ERROR, the next good frame is served
    dev.send(b"hello?\n")
    assert np.array_equal(dev.infer(x)[0], dummy_reply(x)[0])
    dev.send(b"hello?\n")  # after a good frame: one ERROR for the whole run
    reply = _error(dev)
    assert (reply.name, reply.request_type) == ("LRT_ERR_FRAME", 0)
    assert np.array_equal(dev.infer(x)[0], dummy_reply(x)[0])

    # a frame cut short, then good frames right behind it: served once the filler completes
    # the cut frame and the re-scan finds them; the rest of the filler is one more bad region
    cut = P.infer_request(x.tobytes())[:20]
    dev.send(cut + P.hello_request() + P.stats_request() + bytes(100))
    assert _error(dev).name == "LRT_ERR_CRC"
    assert dev.read_reply()[0] == P.MsgType.HELLO | P.REPLY
    assert dev.read_reply()[0] == P.MsgType.STATS | P.REPLY
    assert _error(dev).name == "LRT_ERR_FRAME"
    assert np.array_equal(dev.infer(x)[0], dummy_reply(x)[0])


def _error(dev: Device) -> P.ErrorReply:
    msg_type, payload = dev.read_reply()
    assert msg_type == P.MsgType.ERROR
    return P.ErrorReply.parse(payload)


def test_timeout_and_resync(dev: Device) -> None:
    x = np.arange(INPUT_SIZE, dtype=np.int8)
    frame = P.infer_request(x.tobytes())
    dev.send(frame[:-6])  # the device waits for the rest
    with pytest.raises(DeviceTimeout):
        dev.read_reply(timeout=0.3)
    info = dev.resync()
    assert info.n_classes == CLASSES
    assert np.array_equal(dev.infer(x)[0], dummy_reply(x)[0])
    # a frame of the device's longest payload cut after its header: the filler must complete
    # all of it (a filler sized for shorter frames leaves the device waiting)
    longest = P.encode_frame(P.MsgType.READ, bytes(info.max_payload))
    dev.send(longest[:P.HEADER_SIZE])
    with pytest.raises(DeviceTimeout):
        dev.read_reply(timeout=0.3)
    dev.info = None  # as at a session's start: the filler follows the build's frames
    assert dev.expected_payload == info.max_payload
    assert dev.resync().n_classes == CLASSES
    assert np.array_equal(dev.infer(x)[0], dummy_reply(x)[0])


@pytest.mark.parametrize("window", [1, 7, 32])
def test_pipelined_batches(firmware: Path, window: int) -> None:
    rng = np.random.default_rng(window)
    n = 1500
    xs = random_inputs(rng, n)
    ys = rng.integers(0, CLASSES, size=n)
    seen: list[tuple[int, int]] = []
    with HostRunner(firmware).start(window=window) as dev:
        logits, preds = dev.train_many(xs, ys, progress=lambda d, t: seen.append((d, t)))
        want = [dummy_reply(x) for x in xs]
        assert logits.shape == (n, CLASSES) and logits.dtype == np.int8
        assert np.array_equal(logits, np.stack([w[0] for w in want]))
        assert np.array_equal(preds, np.array([w[1] for w in want]))
        assert dev.stats().samples == n
        assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        logits2, preds2 = dev.infer_many(xs[:100].reshape(100, -1))
        assert np.array_equal(logits2, logits[:100]) and np.array_equal(preds2, preds[:100])
        empty = dev.infer_many(np.zeros((0, *IN_SHAPE), dtype=np.int8))
        assert empty[0].shape == (0, CLASSES)
        assert dev.stats().samples == n


def test_pipeline_error_mid_batch(dev: Device) -> None:
    rng = np.random.default_rng(3)
    xs = random_inputs(rng, 200)
    xs.reshape(200, -1)[37, :2] = 0x7F  # handler error on sample 37
    with pytest.raises(ProtocolError, match="item 37 of 200") as err:
        dev.train_many(xs, np.zeros(200, dtype=np.int64))
    assert err.value.name == "LRT_ERR_STATE"
    # every in-flight reply was drained: the next request gets its own reply
    x = xs[0]
    assert np.array_equal(dev.infer(x)[0], dummy_reply(x)[0])
    samples = dev.stats().samples
    assert 37 <= samples <= 37 + dev.window  # stopped sending after the failure


def test_bye_and_eof_exit_cleanly(firmware: Path) -> None:
    dev = HostRunner(firmware).start()
    dev.bye()
    assert dev.close() == 0
    dev = HostRunner(firmware).start()
    dev.hello()
    assert dev.close(bye=False) == 0  # end of input without BYE


def test_throughput_smoke(firmware: Path) -> None:
    """Not a timing test: checks that 5k pipelined requests complete, and reports the rate."""
    rng = np.random.default_rng(9)
    xs = random_inputs(rng, 5000)
    with HostRunner(firmware).start() as dev:
        dev.hello()
        t0 = time.perf_counter()
        _, preds = dev.infer_many(xs)
        rate = len(xs) / (time.perf_counter() - t0)
    assert np.array_equal(preds, (xs.reshape(5000, -1)[:, 0].view(np.uint8) % CLASSES))
    print(f"{rate:.0f} INFER frames/s through pipes (ASan build)")


def test_device_exit_is_reported(firmware: Path) -> None:
    """A device that stops answering (here: end of its input) gives a LinkError naming the
    exit status, not a hang."""
    dev = HostRunner(firmware).start(timeout=5.0)
    assert isinstance(dev.transport, PipeTransport)
    dev.transport.proc.stdin.close()  # type: ignore[union-attr]
    with pytest.raises(LinkError, match="exited with 0"):
        dev.read_reply()
    assert dev.close() == 0


def test_progress_bar(dev: Device, capsys: pytest.CaptureFixture[str]) -> None:
    xs = random_inputs(np.random.default_rng(4), 50)
    dev.infer_many(xs, progress=True)
    err = capsys.readouterr().err
    assert "50/50" in err and "sample" in err

"""The same firmware on every QEMU board is bit-identical to the host build.

Integer-only firmware: predictions, logits, write counters and the final weight set after
200 online training samples must not depend on the core (M3/M4/M7/M55) or the compiler.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

from harness.buildcache import cache_lock
from helpers.e2e_support import PLAIN_ERROR_COUNT, built
from lrt.data import load_dataset, make_stream
from lrt.emulate import open_device
from lrt.model import Model

pytestmark = [pytest.mark.qemu, pytest.mark.slow]
SAMPLES = 200


@functools.cache
def _run(build: Path) -> tuple[np.ndarray, np.ndarray, object, bytes]:
    """The run of a build (once per build and worker: the host build a board is compared with
    is the same for every board of its preset)."""
    model = Model.load(build / "ir")
    size = json.loads((build / "report.json").read_text())["blob_size"]
    st = make_stream("shift", load_dataset("mnist5k"), SAMPLES, seed=5)
    with open_device(build) as dev:
        logits, preds = dev.train_many(model.quantize_input(st.x), st.y)
        stats = dev.stats()
        blob = dev.read_all_blob(size)
    return logits, preds, stats, blob


@pytest.mark.parametrize(
    ("board", "preset", "counters"),
    [
        ("mps2-an386", "mcu", "auto"),
        ("mps2-an500", "mcu", "auto"),
        ("mps3-an547", "mcu", "auto"),
        # streaming batch norm: statistics, tables and gamma/beta updates on the M4 too
        ("mps2-an386", "mcu-bn", "auto"),
        # 64 KB of RAM: no room for exact per-cell counters, so compare with a host build
        # that reports the same upper bounds
        ("lm3s6965evb", "tiny", "off"),
    ],
)
def test_board_matches_host(board: str, preset: str, counters: str) -> None:
    gate = {"gate_rate": PLAIN_ERROR_COUNT}
    host = _run(built("lrt-maxnorm", "host", preset=preset, cell_counters=counters, **gate))
    arm = _run(built("lrt-maxnorm", board, preset=preset, **gate))
    assert json.loads(
        (built("lrt-maxnorm", board, preset=preset, **gate) / "report.json").read_text()
    )["exact_write_counters"] == (counters != "off")
    assert np.array_equal(arm[1], host[1]), "predictions differ"
    assert np.array_equal(arm[0], host[0]), "logits differ"
    assert arm[2] == host[2], f"write counters differ: {arm[2]} vs {host[2]}"
    assert arm[3] == host[3], "final weight sets differ"
    # the run really trained: weights were flushed and changed
    assert host[2].flushes > 0  # type: ignore[attr-defined]
    assert max(lay.max_writes for lay in host[2].layers) > 0  # type: ignore[attr-defined]


def _reference_logits(tflite: Path, x: np.ndarray) -> np.ndarray:
    """BUILTIN_REF's logits, computed once per (.tflite, inputs) for every worker: the SIMD
    boards' builds carry the same model."""
    from helpers.e2e_support import tflite_logits

    h = hashlib.sha256(importlib.metadata.version("ai-edge-litert").encode())
    key = hashlib.sha256(h.digest() + tflite.read_bytes() + x.tobytes()).hexdigest()[:16]
    with cache_lock(f"tflite-logits-{key}") as path:
        if not path.with_suffix(".npy").is_file():
            np.save(path.with_suffix(".tmp.npy"), tflite_logits(tflite, x))
            path.with_suffix(".tmp.npy").rename(path.with_suffix(".npy"))
        return np.load(path.with_suffix(".npy"))


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500", "mps3-an547"])
def test_simd_board_logits_equal_tflite_reference(tmp_path: Path, board: str) -> None:
    """The SIMD kernels (on for every DSP core) give BUILTIN_REF's logits on 1,000 inputs."""
    from lrt import pipeline
    from lrt.boards import load_board

    assert load_board(board).simd
    build = built("inference", board)
    report = json.loads((build / "report.json").read_text())
    assert report["budget"]["ram_items"]["SIMD conv im2col buffer"] > 0
    model = Model.load(build / "ir")
    ds = load_dataset("mnist5k")
    x = model.quantize_input(np.concatenate([ds.x_test, ds.x_val, ds.x_train])[:1000])
    np.save(tmp_path / "x.npy", x)
    pipeline.infer_file(build, tmp_path / "x.npy", tmp_path / "y.npy")
    fw = np.load(tmp_path / "y.npy")
    ref = _reference_logits(build / "model.tflite", x)
    assert fw.shape == ref.shape == (1000, 10)
    mismatched = int((fw != ref).any(axis=1).sum())
    assert mismatched == 0, f"{mismatched} of 1000 inputs differ from BUILTIN_REF on {board}"


def test_qemu_report_counts_instructions_per_sample() -> None:
    from lrt import pipeline

    res = pipeline.emulate(built("lrt-maxnorm", "mps2-an386"), samples=8, progress=False)
    assert res.instructions_per_sample is not None
    # a training sample of the mcu net: more than inference's ~2.3 M, far less than 1e9
    assert 3e6 < res.instructions_per_sample < 1e9, res.instructions_per_sample
    assert "instructions per sample" in res.markdown()
    host = pipeline.emulate(built("lrt-maxnorm"), samples=8, progress=False)
    assert host.instructions_per_sample is None


@pytest.mark.parametrize(
    ("scheme", "overrides"),
    [
        ("sgd-batch", {"gate_rate": PLAIN_ERROR_COUNT}),
        (
            "lrt-maxnorm",
            {"write_policy": "gated", "gate_errors": 2, "gate_rate": PLAIN_ERROR_COUNT},
        ),
        # the paper's block step per sample on the narrow convs (the default sums them)
        ("lrt-maxnorm", {"lrt_conv_sum": 0, "gate_rate": PLAIN_ERROR_COUNT}),
    ],
    ids=["sgd-batch", "lrt-maxnorm-gated", "lrt-maxnorm-per-sample-steps"],
)
def test_batched_schemes_and_their_policy_match_host(
    scheme: str, overrides: dict[str, object]
) -> None:
    """sgd-batch's int32 sums, the gated write policy and the NVM wear counters (WEAR) on
    the M4 are the host's, bit for bit."""

    def run(board: str) -> tuple[np.ndarray, np.ndarray, object, object, bytes]:
        build = built(scheme, board, **overrides)
        model = Model.load(build / "ir")
        size = json.loads((build / "report.json").read_text())["blob_size"]
        st = make_stream("shift", load_dataset("mnist5k"), SAMPLES, seed=5)
        with open_device(build) as dev:
            logits, preds = dev.train_many(model.quantize_input(st.x), st.y)
            return logits, preds, dev.stats(), dev.wear(), dev.read_all_blob(size)

    host, arm = run("host"), run("mps2-an386")
    assert np.array_equal(arm[1], host[1]) and np.array_equal(arm[0], host[0])
    assert arm[2] == host[2] and arm[4] == host[4]
    assert arm[3] == host[3], f"wear differs: {arm[3]} vs {host[3]}"
    assert host[2].flushes > 0  # type: ignore[attr-defined]


def test_firmware_on_a_uart_says_ready_before_its_first_reply(tmp_path: Path) -> None:
    """On a serial channel the firmware prints LRT_PLATFORM_READY once it serves (what the
    Renode runner, its .robot suite and serial monitors wait for), then speaks frames."""
    import shutil

    from lrt.boards import load_board
    from lrt.build import build_firmware
    from lrt.emulate import protocol as P
    from lrt.emulate.qemu import QemuRunner
    from lrt.emulate.renode import firmware_sentinel

    board = load_board("mps2-an386")
    shutil.copytree(built("lrt-maxnorm", "mps2-an386") / "src", tmp_path / "src")
    res = build_firmware(tmp_path, board, io="uart")
    run = QemuRunner(board, res.executable, io="uart").run(
        P.hello_request() + P.bye_request(), timeout=60
    )
    ready = (firmware_sentinel() + "\n").encode()
    assert run.stdout.startswith(ready), run.stdout[:80]
    assert run.stdout[len(ready) :].startswith(P.SYNC), run.stdout[:80]


def test_firmware_on_a_uart_that_stops_at_boot_says_why(tmp_path: Path) -> None:
    """A board on a serial line only halts when it stops at boot: the firmware prints its
    status first, and the host's reader turns the silence into the reason."""
    import shutil

    from lrt.boards import load_board
    from lrt.build import build_firmware
    from lrt.emulate import Device, LinkError, PipeTransport
    from lrt.emulate.base import BOOT_FAILURES
    from lrt.emulate.qemu import QemuRunner

    board = load_board("mps2-an386")
    shutil.copytree(built("lrt-maxnorm", "mps2-an386") / "src", tmp_path / "src")
    main_c = tmp_path / "src" / "main.c"
    setup = "    r = lrt_device_init(&dev, &s);\n"
    text = main_c.read_text()
    assert setup in text
    # a device setup the firmware refuses, as a toolchain bug would make it
    main_c.write_text(text.replace(setup, setup + "    r = -1;\n"))
    res = build_firmware(tmp_path, board, io="uart")
    proc = QemuRunner(board, res.executable, io="uart").spawn()
    dev = Device(PipeTransport(proc, name="QEMU"), timeout=10.0)
    try:
        with pytest.raises(LinkError, match="stopped at boot with status 5") as info:
            dev.hello()
        assert BOOT_FAILURES[5] in str(info.value)
    finally:
        dev.close(bye=False)

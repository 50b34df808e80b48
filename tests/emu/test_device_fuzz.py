"""Protocol fuzz against the real device handlers: the generated training firmware (mcu,
lrt-maxnorm, host board) built with ASan + UBSan gets >= 10^5 frames with good CRCs and
random types, lengths and payloads -- unknown types, wrong sizes, READs and WRITEs anywhere,
COMMITs, DRIFTs with random kinds and parameters, INFER/TRAIN with random samples and labels.
Every frame must get exactly one reply, in order, of its own reply type or ERROR naming it;
no sanitizer report; the device must still answer HELLO at the end and exit 0 on BYE.
(tests/c/fuzz_app.c fuzzes the framing itself with corrupted bytes over stub handlers.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import built
from lrt.boards import load_board
from lrt.build import build_firmware
from lrt.emulate import protocol as P
from lrt.pipeline import load_build

pytestmark = pytest.mark.slow
FRAMES = 100_000


def frames(rng: np.random.Generator, n: int, input_size: int, blob_size: int,
           max_payload: int) -> tuple[bytes, list[int]]:
    out, types = [], []
    kinds = ["random", "hello", "stats", "read", "read-any", "write", "commit", "drift",
             "infer", "train"]
    # the costly handlers (a commit, a forward/backward pass, a drift over every weight) are
    # rare, the cheap ones many: >= 10^5 frames within the CI budget
    weights = np.array([45, 6, 6, 20, 8, 12, 0.05, 0.1, 0.08, 0.08])
    picks = rng.choice(len(kinds), n, p=weights / weights.sum())
    for k in picks:
        kind = kinds[k]
        if kind == "random":
            t = int(rng.integers(0, 256))
            t = 0x40 if t == P.MsgType.BYE else t  # BYE ends the session: sent once, last
            payload = rng.bytes(int(rng.integers(0, 48)))
        elif kind in ("hello", "stats", "commit"):
            t = {"hello": P.MsgType.HELLO, "stats": P.MsgType.STATS,
                 "commit": P.MsgType.COMMIT}[kind]
            payload = b"" if rng.random() < 0.9 else rng.bytes(int(rng.integers(1, 8)))
        elif kind == "read":
            t = P.MsgType.READ
            payload = P.read_payload(int(rng.integers(0, blob_size + 8)),
                                     int(rng.choice([rng.integers(0, 64),
                                                     rng.integers(0, max_payload + 64)])))
        elif kind == "read-any":
            t = P.MsgType.READ
            payload = rng.bytes(int(rng.choice([6, 6, 6, 5, 7])))
        elif kind == "write":
            t = P.MsgType.WRITE
            off = int(rng.integers(0, blob_size + 16)) if rng.random() < 0.9 else int(
                rng.integers(0, 2**32))
            payload = int(off).to_bytes(4, "little") + rng.bytes(int(rng.integers(0, 64)))
        elif kind == "drift":
            # after a COMMIT: drift is refused while a WRITE transaction is open
            out.append(P.encode_frame(P.MsgType.COMMIT))
            types.append(int(P.MsgType.COMMIT))
            t = P.MsgType.DRIFT
            payload = rng.bytes(9) if rng.random() < 0.5 else P.drift_payload(
                int(rng.integers(0, 4)), int(rng.integers(0, 2**32)), int(rng.integers(0, 2**20)))
        else:
            t = P.MsgType.INFER if kind == "infer" else P.MsgType.TRAIN
            size = input_size + (kind == "train")
            if rng.random() < 0.2:
                size += int(rng.integers(-3, 4))
            payload = rng.bytes(max(size, 0))
            if kind == "train" and rng.random() < 0.5 and size == input_size + 1:
                payload = payload[:-1] + bytes([int(rng.integers(0, 10))])  # a real label
        out.append(P.encode_frame(int(t), payload))
        types.append(int(t))
    return b"".join(out), types


def test_real_handlers_survive_100k_random_frames(tmp_path: Path) -> None:
    build = built("lrt-maxnorm")
    res = build_firmware(build, load_board("host"), sanitize=True)
    assert res.variant.endswith("-asan")
    report, model = load_build(build)
    rng = np.random.default_rng(2024)
    info_size = int(np.prod(model.input_shape))
    data, types = frames(rng, FRAMES, info_size, int(report["blob_size"]),
                         P.device_payload(info_size))  # the device's frames, not the cap
    data = P.hello_request() + data + P.hello_request() + P.bye_request()
    types = [P.MsgType.HELLO, *types, P.MsgType.HELLO, P.MsgType.BYE]
    proc = subprocess.run([str(res.executable), "--nvm", str(tmp_path / "nvm.img")], input=data,
                          capture_output=True, timeout=900)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err[-3000:]
    assert "runtime error" not in err and "AddressSanitizer" not in err, err[-3000:]
    replies, buf = [], memoryview(proc.stdout)  # slices of a view copy nothing: 12 MB
    while (frame := P.split_frame(buf)) is not None:
        msg_type, payload, used = frame
        replies.append((msg_type, payload))
        buf = buf[used:]
    assert not buf and len(replies) == len(types) >= FRAMES
    seen: dict[str, int] = {}
    for t, (r, payload) in zip(types, replies, strict=True):
        if r == P.MsgType.ERROR:
            code, about = payload[0] - 256 * (payload[0] > 127), payload[1]
            assert about == t and code < 0, (t, payload)
            seen["error"] = seen.get("error", 0) + 1
        else:
            assert r == t | P.REPLY, (t, r)
            seen[P.type_name(r)] = seen.get(P.type_name(r), 0) + 1
    info = P.Info.parse(replies[-2][1])
    assert info.version == P.VERSION
    print(seen)
    # the fuzz reached every handler, not only the error paths
    for name in ("HELLO reply", "STATS reply", "READ reply", "WRITE reply", "COMMIT reply",
                 "DRIFT reply", "INFER reply", "TRAIN reply", "error"):
        assert seen.get(name, 0) > 0, (name, seen)

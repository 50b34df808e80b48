"""The generated training firmware itself, built for the host with ASan + UBSan
(-Wall -Wextra -Werror), streams samples for every scheme without a sanitizer report."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers.e2e_support import built
from lrt.boards import load_board
from lrt.build import build_firmware
from lrt.data import load_dataset, make_stream
from lrt.emulate import protocol as P
from lrt.model import Model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scheme", ["bias", "sgd", "lrt", "lrt-maxnorm"])
def test_training_firmware_under_sanitizers(scheme: str, tmp_path: Path) -> None:
    build = built(scheme)
    res = build_firmware(build, load_board("host"), sanitize=True)
    assert res.variant.endswith("-asan")
    # make may find the variant up to date (another test built it): ask the binary itself
    if res.commands:  # what make compiled, when it had to
        assert any("-fsanitize=address,undefined" in c and "-Werror" in c for c in res.commands)
    image = res.executable.read_bytes()
    assert b"__asan_init" in image and b"__ubsan_handle" in image
    model = Model.load(build / "ir")
    n = 60
    st = make_stream("shift", load_dataset("mnist5k"), n, seed=4)
    xq = model.quantize_input(st.x)
    data = P.hello_request() + b"".join(
        P.train_request(xq[i].tobytes(), int(st.y[i])) for i in range(n)
    )
    data += P.encode_frame(P.MsgType.DRIFT, P.drift_payload(1, 7, 265_000))
    data += P.stats_request() + P.bye_request()
    proc = subprocess.run(
        [str(res.executable), "--nvm", str(tmp_path / "nvm.img")], input=data,
        capture_output=True, timeout=600,
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err[-3000:]
    assert "runtime error" not in err and "AddressSanitizer" not in err, err[-3000:]
    # every request got its reply: HELLO, n TRAIN, DRIFT, STATS, BYE
    replies, buf = [], memoryview(proc.stdout)
    while (frame := P.split_frame(buf)) is not None:
        msg_type, _payload, used = frame
        replies.append(msg_type)
        buf = buf[used:]
    assert replies.count(P.MsgType.TRAIN | 0x80) == n, replies[:10]
    assert P.MsgType.ERROR not in replies

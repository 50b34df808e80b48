"""lrt.emulate.protocol: frame codec and reply parsers, and its constants against the C
headers they mirror (lrt_common.h/.c, lrt_proto.h, lrt_train.h)."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.cbuild import LIB_DIR as LIB
from lrt import nvm
from lrt.config import SCHEMES
from lrt.emulate import protocol as P


def test_crc_check_value() -> None:
    assert P.crc32(b"123456789") == 0xCBF43926  # the CRC-32/ISO-HDLC check value


def test_frame_layout() -> None:
    frame = P.encode_frame(0x03, b"\x01\x02\xff")
    assert frame[:5] == bytes([0xA5, 0x5A, 0x03, 3, 0])
    assert frame[5:8] == b"\x01\x02\xff"
    (crc,) = struct.unpack("<I", frame[8:])
    assert crc == P.crc32(bytes([0x03, 3, 0, 1, 2, 0xFF]))
    assert len(P.hello_request()) == P.OVERHEAD == 9


@given(st.integers(0, 255), st.binary(max_size=3000))
def test_roundtrip(msg_type: int, payload: bytes) -> None:
    frame = P.encode_frame(msg_type, payload)
    assert P.decode_frame(frame) == (msg_type, payload)
    for cut in (0, 4, len(frame) - 1):
        assert P.split_frame(frame[:cut]) is None
    got = P.split_frame(frame + b"\xa5")
    assert got == (msg_type, payload, len(frame))


def test_split_frame_rejects() -> None:
    frame = bytearray(P.encode_frame(0x81, b"abc"))
    frame[6] ^= 1
    with pytest.raises(P.FrameError, match="CRC"):
        P.split_frame(frame)
    with pytest.raises(P.FrameError, match="sync"):
        P.split_frame(b"\x00" + P.hello_request())
    with pytest.raises(P.FrameError):
        P.decode_frame(P.hello_request() + b"\x00")
    with pytest.raises(ValueError):
        P.encode_frame(256)
    with pytest.raises(ValueError):
        P.train_request(b"", 256)


def test_requests() -> None:
    assert P.decode_frame(P.read_request(0x01020304, 513)) == (
        P.MsgType.READ,
        bytes([4, 3, 2, 1, 1, 2]),
    )
    kind, seed, param = struct.unpack("<BIi", P.decode_frame(P.drift_request(2, -1, -7))[1])
    assert (kind, seed, param) == (2, 0xFFFFFFFF, -7)
    assert P.decode_frame(P.train_request(b"\x80\x7f", 9)) == (P.MsgType.TRAIN, b"\x80\x7f\x09")


def test_info_parse() -> None:
    raw = bytes([2, 3, 2, 10]) + struct.pack("<HHH", 28, 28, 1) + b"\x12\x34\x56\x78"
    tail = struct.pack("<BI", P.STORE_FALLBACK, 41)
    raw += struct.pack("<IH", 777, 1024) + b"\x01" + tail
    info = P.Info.parse(raw)
    assert (info.version, info.scheme, info.n_layers, info.n_classes) == (2, 3, 2, 10)
    assert info.generation == 41 and info.store_text.startswith("generation 41; fell back")
    assert info.input_shape == (28, 28, 1) and info.input_size == 784
    assert info.samples == 777 and info.max_payload == 1024
    assert info.max_norm and info.scheme_name == "lrt-maxnorm"
    assert info.matches_fingerprint("12345678aabbccdd")
    plain = P.Info.parse(raw[:1] + b"\x02" + raw[2:20] + b"\x00" + tail)
    assert plain.scheme_name == "sgd" and not plain.max_norm
    with pytest.raises(P.FrameError):
        P.Info.parse(raw[:-1])
    with pytest.raises(P.FrameError, match="protocol version 1"):
        P.Info.parse(b"\x01" + raw[1:21])


def test_stats_parse() -> None:
    raw = struct.pack("<II", 100, 4) + struct.pack("<III", 9, 90, 0) + struct.pack("<III", 3, 7, 5)
    s = P.Stats.parse(raw)
    assert (s.samples, s.flushes) == (100, 4)
    assert s.layers == (P.LayerStats(9, 90, 0), P.LayerStats(3, 7, 5))
    assert s.max_writes == 9
    assert P.Stats.parse(raw[:8]).layers == ()
    with pytest.raises(P.FrameError):
        P.Stats.parse(raw[:-1])


def test_prediction_parse() -> None:
    logits, pred = P.parse_prediction(bytes([0x80, 0x7F, 0x01, 2]), 3)
    assert logits.dtype == np.int8 and logits.tolist() == [-128, 127, 1] and pred == 2
    with pytest.raises(P.FrameError):
        P.parse_prediction(b"\x00\x00", 3)


def test_check_reply_and_errors() -> None:
    assert P.check_reply(P.MsgType.STATS, 0x84, b"xy") == b"xy"
    with pytest.raises(P.ProtocolError) as err:
        P.check_reply(P.MsgType.TRAIN, 0xFF, bytes([0xFE, 0x03]), "sample 5")
    e = err.value
    assert (e.code, e.name, e.request_type) == (-2, "LRT_ERR_SIZE", 3)
    assert "size mismatch" in str(e) and "TRAIN" in str(e) and "sample 5" in str(e)
    with pytest.raises(P.FrameError, match="expected the INFER reply, got HELLO reply"):
        P.check_reply(P.MsgType.INFER, 0x81, b"")
    assert P.error_name(-99) == "LRT_ERR_99"
    assert P.type_name(0x55) == "0x55"


# ---- constants mirror the C sources --------------------------------------------------------


def _c_enum(text: str, prefix: str) -> dict[str, int]:
    return {m[0]: int(m[1], 0) for m in re.findall(rf"\b({prefix}\w*)\s*=\s*(-?\w+)", text)}


def test_error_codes_match_c() -> None:
    header = (LIB / "lrt_common.h").read_text()
    codes = _c_enum(header, "LRT_")
    assert codes, "no lrt_err enum found"
    assert {name: code for code, (name, _) in P.ERRORS.items()} == codes
    source = (LIB / "lrt_common.c").read_text()
    texts = dict(re.findall(r'case (LRT_\w+): return "([^"]*)";', source))
    assert {name: text for name, text in P.ERRORS.values()} == texts


def test_proto_constants_match_c() -> None:
    h = (LIB / "lrt_proto.h").read_text()

    def define(name: str) -> int:
        m = re.search(rf"#define {name} \(?(\w+?)u?\b", h)
        assert m, name
        return int(m.group(1), 0)

    assert define("LRT_PROTO_VERSION") == P.VERSION
    assert define("LRT_PROTO_MAX_PAYLOAD") == P.MAX_PAYLOAD
    app = (LIB / "lrt_app.h").read_text()
    assert re.search(rf"#define LRT_APP_MIN_PAYLOAD {P.APP_MIN_PAYLOAD}u\b", app)
    assert define("LRT_PROTO_SYNC0") == P.SYNC[0] and define("LRT_PROTO_SYNC1") == P.SYNC[1]
    assert define("LRT_PROTO_HEADER_SIZE") == P.HEADER_SIZE
    assert define("LRT_PROTO_CRC_SIZE") == P.CRC_SIZE
    assert define("LRT_PROTO_INFO_SIZE") == P.INFO_SIZE == struct.calcsize("<BBBBHHH4sIHBBI")
    assert define("LRT_PROTO_STATS_HEAD_SIZE") == P.STATS_HEAD_SIZE
    assert define("LRT_PROTO_STATS_LAYER_SIZE") == P.STATS_LAYER_SIZE
    assert define("LRT_PROTO_FLAG_MAX_NORM") == P.FLAG_MAX_NORM
    assert define("LRT_PROTO_WEAR_HEAD_SIZE") == P.WEAR_HEAD_SIZE
    msgs = _c_enum(h, "LRT_MSG_")
    assert {k.removeprefix("LRT_MSG_"): v for k, v in msgs.items() if k != "LRT_MSG_REPLY"} == {
        m.name: int(m) for m in P.MsgType
    }
    assert msgs["LRT_MSG_REPLY"] == P.REPLY
    store = {int(v, 16) for v in re.findall(r"#define LRT_PROTO_STORE_\w+ (0x[0-9A-F]+)u", h)}
    assert store == set(P.STORE_FLAGS)
    # the mount's flags travel as these bits (main.c): one meaning per bit
    nvm_h = (LIB / "lrt_nvm.h").read_text()
    mount = {name: int(v, 16) for name, v in re.findall(
        r"#define LRT_NVM_F_(\w+)\s*\\?\s*(0x[0-9A-F]+)u", nvm_h)}
    assert mount == {"EMPTY": 0x01, "FALLBACK": 0x02, "DEGRADED": 0x04, "VERSION": 0x08,
                     "FOREIGN": 0x10, "WEAR_STALE": 0x40}
    assert mount["WEAR_STALE"] == nvm.F_WEAR_STALE and 0x20 in P.STORE_FLAGS  # 0x20: formatted
    schemes = _c_enum(h, "LRT_PROTO_SCHEME_")
    assert {k.removeprefix("LRT_PROTO_SCHEME_"): v for k, v in schemes.items()} == {
        s.name: int(s) for s in P.Scheme
    }
    drift = _c_enum(h, "LRT_PROTO_DRIFT_")
    assert {k.removeprefix("LRT_PROTO_DRIFT_"): v for k, v in drift.items()} == {
        d.name: int(d) for d in P.DriftKind
    }


def test_schemes_match_training_library() -> None:
    train_h = LIB / "lrt_train.h"
    if not train_h.is_file():
        pytest.skip("lrt_train.h not present")
    lib = _c_enum(train_h.read_text(), "LRT_SCHEME_")
    assert {k.removeprefix("LRT_SCHEME_"): v for k, v in lib.items()} == {
        s.name: int(s) for s in P.Scheme
    }
    for scheme in P.Scheme:
        assert P.SCHEME_NAMES[scheme] in SCHEMES
    assert "lrt-maxnorm" in SCHEMES


def test_wear_reply() -> None:
    payload = struct.pack("<IIIIII", 1, 7, 9, 5, 6, 0)
    w = P.Wear.parse(payload)
    assert (w.tech, w.max_blob, w.max_meta, w.layers) == ("flash", 7, 9, (5, 6, 0))
    assert w.max_erases_per_page == 9  # flash: a page program follows its erase
    assert P.Wear.parse(struct.pack("<III", 2, 3, 4)).max_erases_per_page == 0  # RRAM
    with pytest.raises(P.FrameError):
        P.Wear.parse(b"\0" * 14)


def test_boot_failure_line_is_read_from_the_banner() -> None:
    """The line a serial firmware prints when it stops at boot names its status; one followed
    by a ready line is an earlier boot's, and a cut line says so."""
    from lrt.emulate.base import BOOT_FAILURES, boot_failure

    assert boot_failure(b"lrt: ready\n") is None
    why = boot_failure(b"noise\nlrt: boot failed, status 4\n")
    assert why is not None and "status 4" in why and BOOT_FAILURES[4] in why
    assert boot_failure(b"lrt: boot failed, status 3\nlrt: ready\n") is None
    assert boot_failure(b"lrt: boot failed, status ") == "stopped at boot (its status line is cut)"
    # every status the firmware's main.c returns at boot is decoded, as PROTOCOL.md lists them
    main_c = (LIB.parent / "main.c.j2").read_text()
    returned = {int(v) for v in re.findall(r"boot_failed\((\d+)\)", main_c)}
    returned |= {2} if "return 2;" in main_c else set()
    doc = (LIB.parents[1] / "docs" / "PROTOCOL.md").read_text()
    table = doc.split("(`lrt.emulate.base.BOOT_FAILURES`):", 1)[1].split("\n\n", 2)[1]
    listed = {int(v) for v in re.findall(r"^\| (\d) \| ", table, re.M)}
    assert returned <= set(BOOT_FAILURES) == listed, (returned, set(BOOT_FAILURES), listed)


def test_the_lifetime_charges_a_run_its_own_programs() -> None:
    """OnlineResult.add_wear: a blank store's run is charged everything (its first commit
    included), a worn store's run its increase, at least one when anything was programmed
    (an older slot catching up leaves the maximum where it was), nothing programmed: none."""
    from lrt.report import OnlineResult

    def result() -> OnlineResult:
        return OnlineResult("host", "lrt-maxnorm", "shift", 1000, 0.9, 0.9, 0.9, 500, 3, None,
                            4, [{"layer": "d", "cells": 9, "max_writes_per_cell": 3,
                                 "mean_writes_per_cell": 1.0}], 1.0, 1000.0)  # fmt: skip

    def wear(blob: int, meta: int, layer: int) -> P.Wear:
        return P.Wear("rram", blob, meta, (layer,))

    years = 1_000_000 * 1000 / (365.25 * 86400)
    cases = [  # (before, after, blank at boot, programs charged)
        (wear(1, 1, 1), wear(9, 10, 9), True, 10),
        (wear(10, 12, 10), wear(20, 17, 20), False, 8),
        (wear(10, 10, 9), wear(10, 10, 10), False, 1),
        (wear(1, 1, 1), wear(1, 1, 1), True, 0),
    ]
    for before, after, blank, charged in cases:
        res = result()
        res.add_wear(after, 1_000_000, 2, 1.0, before=before, blank_at_boot=blank)
        assert res.programs_in_run == charged, (before, after)
        if charged:
            assert res.lifetime_years == pytest.approx(years / charged)
        else:
            assert res.lifetime_years is None
            assert "| not projected: the run programmed no NVM unit |" in res.markdown()


def test_expected_payload_follows_the_builds_input() -> None:
    """The resync filler before a device's HELLO: the frames of the build's firmware."""
    from lrt.emulate import expected_payload

    assert expected_payload({"model": {"layers": [{"in": [32, 32, 3]}]}}) == 3073
    assert expected_payload({"model": {"layers": [{"in": [28, 28, 1]}]}}) == P.APP_MIN_PAYLOAD
    assert expected_payload({}) == P.APP_MIN_PAYLOAD  # a report without its model's layers

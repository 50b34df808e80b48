"""Host side of the wire protocol (docs/PROTOCOL.md): frames, requests, typed replies.

Pure functions and dataclasses, no I/O: ``base.Device`` drives a transport with them.
The C side is firmware_templates/lib/lrt_proto.[ch] and lrt_app.[ch]; constants here
mirror those headers (tests/unit/test_protocol.py checks them against the C sources).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from lrt.crc import crc32
from lrt.errors import DeviceError

VERSION = 2  # 2: INFO reports the weight store's mount state
SYNC = b"\xa5\x5a"
MAX_PAYLOAD = 16384  # the protocol's cap; a device reports its own (INFO.max_payload)
APP_MIN_PAYLOAD = 2048  # lrt_app.h: the shortest frames a device of lrt is built with
HEADER_SIZE = 5
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE
REPLY = 0x80

INFO_SIZE = 26
STATS_HEAD_SIZE = 8
STATS_LAYER_SIZE = 12
WEAR_HEAD_SIZE = 12
FLAG_MAX_NORM = 0x01
# INFO.store: the weight store's state at boot (LRT_PROTO_STORE_* of lrt_proto.h)
STORE_FLAGS = {
    0x01: "was blank: built-in weights committed",
    0x02: "fell back: a newer set failed its CRC",
    0x04: "degraded: no set verified, running on a CRC-failing one",
    0x08: "a slot of another format version was seen",
    0x10: "a slot of another model was seen",
    0x20: "formatted at boot, built-in weights committed",
    0x40: "the set's wear table failed its CRC: wear counted from an older table",
    0x80: "no NVM store: weights in the firmware image",
}
STORE_EMPTY = 0x01
STORE_FORMATTED = 0x20
STORE_FALLBACK = 0x02
STORE_DEGRADED = 0x04

_HEADER = struct.Struct("<2sBH")
_CRC = struct.Struct("<I")
_INFO = struct.Struct("<BBBBHHH4sIHBBI")
_READ = struct.Struct("<IH")
_DRIFT = struct.Struct("<BIi")
_ERROR = struct.Struct("<bB")


class MsgType(IntEnum):
    HELLO = 0x01
    INFER = 0x02
    TRAIN = 0x03
    STATS = 0x04
    READ = 0x05
    BYE = 0x06
    DRIFT = 0x07
    WRITE = 0x08
    COMMIT = 0x09
    WEAR = 0x0A
    ERROR = 0xFF


class Scheme(IntEnum):
    INFERENCE = 0
    BIAS = 1
    SGD = 2
    LRT = 3
    SGD_BATCH = 4


class DriftKind(IntEnum):
    ANALOG = 1
    DIGITAL = 2


# lrt_err of lrt_common.h: code -> (enum name, lrt_err_str text).
ERRORS: dict[int, tuple[str, str]] = {
    0: ("LRT_OK", "ok"),
    -1: ("LRT_ERR_ARG", "invalid argument"),
    -2: ("LRT_ERR_SIZE", "size mismatch"),
    -3: ("LRT_ERR_CRC", "crc mismatch"),
    -4: ("LRT_ERR_FRAME", "malformed frame"),
    -5: ("LRT_ERR_TYPE", "unknown message type"),
    -6: ("LRT_ERR_IO", "i/o error"),
    -7: ("LRT_ERR_CORRUPT", "corrupt data"),
    -8: ("LRT_ERR_NOSPACE", "no space"),
    -9: ("LRT_ERR_WORN", "endurance exhausted"),
    -10: ("LRT_ERR_EOF", "end of stream"),
    -11: ("LRT_ERR_STATE", "invalid state"),
    -12: ("LRT_ERR_UNSUPPORTED", "unsupported"),
}


def error_name(code: int) -> str:
    return ERRORS.get(code, (f"LRT_ERR_{-code}" if code < 0 else f"code {code}", ""))[0]


def type_name(msg_type: int) -> str:
    base = msg_type if msg_type == MsgType.ERROR else msg_type & ~REPLY
    try:
        name = MsgType(base).name
    except ValueError:
        return f"0x{msg_type:02x}"
    return name if msg_type == base else f"{name} reply"


class ProtocolError(DeviceError):
    """The device answered a request with an ERROR frame."""

    def __init__(self, code: int, request_type: int, context: str = "") -> None:
        self.code = code
        self.name = error_name(code)
        self.request_type = request_type
        self.context = context
        desc = ERRORS.get(code, ("", "unknown error"))[1]
        where = f" ({context})" if context else ""
        super().__init__(
            f"device error {self.name} ({code}: {desc}) for request {type_name(request_type)}"
            f"{where}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable, so errors in process-pool / Dask workers reach the caller intact
        return (type(self), (self.code, self.request_type, self.context))


class FrameError(DeviceError):
    """Bytes from the device that are not a well-formed frame, or not the expected reply."""


# ---- frames --------------------------------------------------------------------------------


def encode_frame(msg_type: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    if not 0 <= msg_type <= 0xFF:
        raise ValueError(f"message type {msg_type} out of range")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a frame")
    head = _HEADER.pack(SYNC, msg_type, len(payload))
    crc = crc32(payload, crc32(head[2:]))
    return b"".join((head, payload, _CRC.pack(crc)))


def decode_frame(frame: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """One complete frame -> (type, payload); FrameError if it is not exactly one frame."""
    got = split_frame(frame)
    if got is None:
        raise FrameError(f"incomplete frame ({len(frame)} bytes)")
    msg_type, payload, used = got
    if used != len(frame):
        raise FrameError(f"{len(frame) - used} bytes after the frame")
    return msg_type, payload


def split_frame(buf: bytes | bytearray | memoryview) -> tuple[int, bytes, int] | None:
    """Parse the frame at the start of buf: (type, payload, bytes used), or None if buf holds
    only part of it. Device replies are always well-formed, so anything else is FrameError
    (the host does not resynchronise; it reports the broken link)."""
    if len(buf) < HEADER_SIZE:
        return None
    sync, msg_type, length = _HEADER.unpack_from(buf)
    if sync != SYNC:
        raise FrameError(f"bad sync {bytes(buf[:2]).hex()} (expected a55a)")
    end = HEADER_SIZE + length + CRC_SIZE
    if len(buf) < end:
        return None
    (crc,) = _CRC.unpack_from(buf, end - CRC_SIZE)
    body = bytes(buf[2 : end - CRC_SIZE])
    if crc32(body) != crc:
        raise FrameError(f"CRC mismatch in a {type_name(msg_type)} frame of {length} bytes")
    return msg_type, body[3:], end


# ---- requests ------------------------------------------------------------------------------


def device_payload(input_size: int) -> int:
    """The max payload of the firmware lrt builds for `input_size` int8 inputs (the C's
    LRT_APP_PAYLOAD_FOR): a TRAIN request carries the sample and its label."""
    return max(APP_MIN_PAYLOAD, input_size + 1)


def hello_request() -> bytes:
    return encode_frame(MsgType.HELLO)


def infer_request(x: bytes) -> bytes:
    return encode_frame(MsgType.INFER, x)


def train_request(x: bytes, label: int) -> bytes:
    if not 0 <= label <= 0xFF:
        raise ValueError(f"label {label} does not fit a u8")
    return encode_frame(MsgType.TRAIN, x + bytes((label,)))


def stats_request() -> bytes:
    return encode_frame(MsgType.STATS)


def read_payload(offset: int, length: int) -> bytes:
    return _READ.pack(offset, length)


def read_request(offset: int, length: int) -> bytes:
    return encode_frame(MsgType.READ, read_payload(offset, length))


def bye_request() -> bytes:
    return encode_frame(MsgType.BYE)


def drift_payload(kind: int, seed: int, param: int) -> bytes:
    """kind: DriftKind; seed: u32 (taken modulo 2**32); param: i32, meaning per kind (see
    docs/PROTOCOL.md)."""
    return _DRIFT.pack(kind, seed & 0xFFFFFFFF, param)


def drift_request(kind: int, seed: int, param: int) -> bytes:
    return encode_frame(MsgType.DRIFT, drift_payload(kind, seed, param))


def write_payload(offset: int, data: bytes) -> bytes:
    return struct.pack("<I", offset) + data


# ---- replies -------------------------------------------------------------------------------

SCHEME_NAMES = {
    Scheme.INFERENCE: "inference",
    Scheme.BIAS: "bias",
    Scheme.SGD: "sgd",
    Scheme.LRT: "lrt",
    Scheme.SGD_BATCH: "sgd-batch",
}


@dataclass(frozen=True)
class Info:
    version: int
    scheme: int
    n_layers: int  # weight layers (conv2d/dense) = entries of Stats.layers
    n_classes: int
    in_h: int
    in_w: int
    in_c: int
    fingerprint: bytes  # first 4 bytes of Model.fingerprint()
    samples: int
    max_payload: int
    flags: int
    store: int  # STORE_FLAGS bits
    generation: int  # NVM generation of the set in use (0: none)

    @classmethod
    def parse(cls, payload: bytes) -> Info:
        if payload and payload[0] != VERSION:
            raise FrameError(f"device speaks protocol version {payload[0]}, expected {VERSION}")
        if len(payload) != INFO_SIZE:
            raise FrameError(f"INFO payload of {len(payload)} bytes, expected {INFO_SIZE}")
        return cls(*_INFO.unpack(payload))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_h, self.in_w, self.in_c)

    @property
    def input_size(self) -> int:
        return self.in_h * self.in_w * self.in_c

    @property
    def max_norm(self) -> bool:
        return bool(self.flags & FLAG_MAX_NORM)

    @property
    def scheme_name(self) -> str:
        """The build config's scheme name (config.SCHEMES), e.g. 'lrt-maxnorm'."""
        try:
            base = SCHEME_NAMES[Scheme(self.scheme)]
        except ValueError:
            return f"scheme {self.scheme}"
        return f"{base}-maxnorm" if self.max_norm and base == "lrt" else base

    @property
    def store_text(self) -> str:
        """The mount state in words, e.g. 'generation 7; fell back: ...'."""
        parts = [f"generation {self.generation}" if self.generation else "no stored set"]
        # a formatted store is blank too: "formatted" says both
        store = self.store & ~STORE_EMPTY if self.store & STORE_FORMATTED else self.store
        parts += [text for bit, text in STORE_FLAGS.items() if store & bit]
        return "; ".join(parts)

    @property
    def committed_at_boot(self) -> bool:
        """The store was blank (or formatted) at boot: its first commit happened then."""
        return bool(self.store & (STORE_EMPTY | STORE_FORMATTED))

    def matches_fingerprint(self, fingerprint_hex: str) -> bool:
        """True if the device runs the model whose Model.fingerprint() is fingerprint_hex."""
        return bytes.fromhex(fingerprint_hex[:8]) == self.fingerprint


def parse_prediction(payload: bytes, n_classes: int) -> tuple[np.ndarray, int]:
    """INFER/TRAIN reply -> (int8 logits[n_classes], predicted class)."""
    if len(payload) != n_classes + 1:
        raise FrameError(f"logits payload of {len(payload)} bytes, expected {n_classes + 1}")
    return np.frombuffer(payload, dtype=np.int8, count=n_classes).copy(), payload[n_classes]


@dataclass(frozen=True)
class LayerStats:
    max_writes: int  # most writes any cell of the layer received (real programming ops)
    total_writes: int  # sum over the layer's cells
    paper_max_writes: int  # the paper's per-pixel SGD accounting (0 unless scheme sgd)


@dataclass(frozen=True)
class Stats:
    samples: int
    flushes: int
    layers: tuple[LayerStats, ...]

    @classmethod
    def parse(cls, payload: bytes) -> Stats:
        n = len(payload) - STATS_HEAD_SIZE
        if n < 0 or n % STATS_LAYER_SIZE:
            raise FrameError(f"STATS payload of {len(payload)} bytes is not 8 + 12k")
        samples, flushes = struct.unpack_from("<II", payload)
        layers = tuple(
            LayerStats(*struct.unpack_from("<III", payload, STATS_HEAD_SIZE + i * STATS_LAYER_SIZE))
            for i in range(n // STATS_LAYER_SIZE)
        )
        return cls(samples, flushes, layers)

    @property
    def max_writes(self) -> int:
        return max((lay.max_writes for lay in self.layers), default=0)


NVM_TECH = {0: "none", 1: "flash", 2: "rram"}


@dataclass(frozen=True)
class Wear:
    """WEAR reply: the weight store's physical wear, from the NVM layer's own counters."""

    tech: str  # none (weights in the firmware image), flash or rram
    max_blob: int  # most programs of any blob unit (weights, bias/batch-norm snapshots)
    max_meta: int  # most programs of a slot's metadata (header + wear table)
    layers: tuple[int, ...]  # per weight layer: max programs per cell of its weights

    @classmethod
    def parse(cls, payload: bytes) -> Wear:
        n = len(payload) - WEAR_HEAD_SIZE
        if n < 0 or n % 4:
            raise FrameError(f"WEAR payload of {len(payload)} bytes is not 12 + 4k")
        tech, blob, meta = struct.unpack_from("<III", payload)
        layers = struct.unpack_from(f"<{n // 4}I", payload, WEAR_HEAD_SIZE)
        return cls(NVM_TECH.get(tech, str(tech)), blob, meta, tuple(int(v) for v in layers))

    @property
    def max_erases_per_page(self) -> int:
        """Flash: every program of a page follows its erase; RRAM has no erase."""
        return max(self.max_blob, self.max_meta) if self.tech == "flash" else 0


@dataclass(frozen=True)
class ErrorReply:
    code: int
    request_type: int

    @classmethod
    def parse(cls, payload: bytes) -> ErrorReply:
        if len(payload) != _ERROR.size:
            raise FrameError(f"ERROR payload of {len(payload)} bytes, expected {_ERROR.size}")
        return cls(*_ERROR.unpack(payload))

    @property
    def name(self) -> str:
        return error_name(self.code)

    def exception(self, context: str = "") -> ProtocolError:
        return ProtocolError(self.code, self.request_type, context)


def check_reply(request_type: int, msg_type: int, payload: bytes, context: str = "") -> bytes:
    """Payload of the reply to request_type; ProtocolError for an ERROR reply, FrameError for
    a reply of another type (the link is out of step)."""
    if msg_type == MsgType.ERROR:
        raise ErrorReply.parse(payload).exception(context)
    if msg_type != request_type | REPLY:
        raise FrameError(
            f"expected the {type_name(request_type)} reply, got {type_name(msg_type)}"
            + (f" ({context})" if context else "")
        )
    return payload

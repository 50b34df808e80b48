"""The one CRC of the project: CRC-32/ISO-HDLC (IEEE 802.3, reflected polynomial 0xEDB88320,
initial and final value 0xFFFFFFFF), i.e. zlib's crc32. Wire frames (emulate.protocol) and
NVM records (nvm) use it; the firmware's lrt_crc32.c holds the byte table of the same
polynomial (tests/c/test_proto.py checks that table against ``table()`` and the C results
against ``crc32``)."""

from __future__ import annotations

import zlib

POLY = 0xEDB88320


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC of data continuing from value (0 to start), as lrt_crc32_update(value, data)."""
    return zlib.crc32(data, value) & 0xFFFFFFFF


def table() -> list[int]:
    """The 256-entry byte table of the reflected polynomial (lrt_crc32.c's table)."""
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (POLY if c & 1 else 0)
        out.append(c)
    return out

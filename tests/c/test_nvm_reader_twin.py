"""The Python image reader (lrt.nvm.inspect_bytes) against the firmware's mount, image by image.

Hypothesis builds images the way commits do (lrt.nvm.build_image, byte-identical to the C
layer), then damages them: bit flips, erase tears that leave garbage or zeros, slots copied
over others, and crafted headers (every field changed, resealed with a good CRC or not). One
sanitized C process (nvm_mount_batch.c) mounts each image with the build's geometry; the
reader must give the same verdict: result, flags, slot, generation, every slot's state,
whether the firmware would initialise the store, whose wear table it reads and the most-worn
units in it. Reading without the build's geometry must never fail, and must agree with the
device whenever the geometry it learns is the build's.
"""

from __future__ import annotations

import functools
import random
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cbuild import LIB_DIR, compile_c
from lrt import nvm

HERE = Path(__file__).resolve().parent
LIB_SRC = [LIB_DIR / n for n in (
    "lrt_nvm.c", "lrt_nvm_budget.c", "lrt_nvm_drift.c", "lrt_nvm_host.c", "lrt_crc32.c",
    "lrt_common.c",
)]

GEOMETRIES = {
    # 3 slots of 5 pages, the metadata sharing the first page with the blob
    "flash": nvm.NvmGeometry(tech=nvm.TECH_FLASH, prog_size=4, page_size=64, page_count=24,
                             blob_size=300, model_id=0x1234ABCD),
    # word-writable, a wear counter per 16 bytes, zero-valued fresh cells
    "rram": nvm.NvmGeometry(tech=nvm.TECH_RRAM, prog_size=4, page_size=64, page_count=40,
                            blob_size=300, wear_unit=16, erase_value=0x00, model_id=7),
    # 8-byte program words, 4 slots fixed by the build, erased value 0
    "flash8": nvm.NvmGeometry(tech=nvm.TECH_FLASH, prog_size=8, page_size=128, page_count=16,
                              blob_size=200, n_slots=4, erase_value=0x00, model_id=0xFFFFFFFF),
}
IMAGES_PER_GEOMETRY = 3400  # x 3 geometries: > 10,000 images per run
PER_EXAMPLE = 4  # images per hypothesis example (its engine costs more than a mount)

# header fields a crafted header changes: (offset, struct format)
_FIELDS = [(4, "<H"), (6, "<B"), (7, "<B"), (8, "<I"), (12, "<I"), (16, "<I"), (20, "<I"),
           (24, "<I"), (28, "<I"), (32, "<H"), (34, "<H"), (36, "<I"), (40, "<I"), (44, "<I"),
           (48, "<B"), (52, "<I"), (56, "<I")]


class MountChecker:
    """One C process that mounts every image it is sent."""

    def __init__(self, exe: Path) -> None:
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.count = 0

    def mount(self, geo: nvm.NvmGeometry, img: bytes) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        head = struct.pack("<10I", geo.tech, geo.prog_size, geo.page_size, geo.page_count,
                           geo.blob_size, geo.wear_unit, geo.n_slots, geo.erase_value,
                           geo.model_id, len(img))
        self.proc.stdin.write(head + img)
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().decode().strip()
        assert line, f"checker died (exit {self.proc.poll()})"
        self.count += 1
        return line

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountChecker]:
    out = tmp_path_factory.mktemp("twin")
    c = MountChecker(compile_c([HERE / "nvm_mount_batch.c", *LIB_SRC], out / "mount_batch"))
    yield c
    assert c.close() == 0  # no sanitizer report


def verdict(rep: nvm.NvmReport) -> str:
    states = ",".join(str(nvm.SLOT_STATES.index(s.state)) for s in rep.slots)
    slot = -1 if rep.chosen is None else rep.chosen
    wear_slot = -1 if rep.wear_slot is None else rep.wear_slot
    return (f"{rep.mount_rc} {rep.flags} {slot} {rep.generation} {int(rep.may_initialise)} "
            f"{wear_slot} {rep.max_blob_writes} {rep.max_meta_writes} {states}")


def _reseal(h: bytearray) -> None:
    h[60:64] = struct.pack("<I", nvm.crc32(bytes(h[:60])))


@functools.cache
def _committed(geo: nvm.NvmGeometry, commits: int, seed: int) -> bytes:
    """The image after `commits` commits of random sets (a few seeds, built once each)."""
    rng = random.Random(seed)
    return nvm.build_image(geo, [rng.randbytes(geo.blob_size) for _ in range(commits)])


KINDS = ("flip", "header-flip", "tear", "copy", "craft", "craft-unsealed")


@st.composite
def images(draw: st.DrawFn, geo: nvm.NvmGeometry) -> bytes:
    """Hypothesis picks the history and the kinds of damage; a seeded RNG the details (few
    draws per image keep 10,000 images cheap)."""
    lay = geo.layout()
    img = bytearray(_committed(geo, draw(st.integers(0, 2 * lay.n_slots)),
                               draw(st.integers(0, 7))))
    kinds = draw(st.lists(st.sampled_from(KINDS), max_size=4))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    size, page = len(img), geo.page_size
    for kind in kinds:
        s = rng.randrange(lay.n_slots)
        base = lay.slot_base(s)
        if kind == "flip":
            bit = rng.randrange(8 * size)
            img[bit // 8] ^= 1 << (bit % 8)
        elif kind == "header-flip":
            bit = rng.randrange(8 * (nvm.HEADER_SIZE + lay.table_len))
            img[base + bit // 8] ^= 1 << (bit % 8)
        elif kind == "tear":
            # an erase or a program cut short: part of a page garbage, zeros or erased
            p = rng.randrange(size // page) * page
            lo = p + rng.randrange(page)
            hi = rng.randint(lo + 1, p + page)
            fill = rng.choice(["garbage", "zeros", "erased"])
            img[lo:hi] = (rng.randbytes(hi - lo) if fill == "garbage"
                          else bytes([0 if fill == "zeros" else geo.erase_value]) * (hi - lo))
        elif kind == "copy":
            t = lay.slot_base(rng.randrange(lay.n_slots))
            img[t : t + lay.slot_size] = img[base : base + lay.slot_size]
        else:
            h = bytearray(img[base : base + nvm.HEADER_SIZE])
            if nvm.SlotHeader.parse(bytes(h), any_version=True) is None:
                # a sound header to start from: the one a commit of this geometry writes
                h = bytearray(_committed(geo, 1, 0)[: nvm.HEADER_SIZE])
                h[7] = s
            off, fmt = rng.choice(_FIELDS)
            top = 2 ** (8 * struct.calcsize(fmt)) - 1
            value = rng.choice([0, 1, 2, 3, 4, 64, top, rng.randint(0, top)])
            struct.pack_into(fmt, h, off, value)
            if kind == "craft":
                _reseal(h)
            img[base : base + nvm.HEADER_SIZE] = h
    return bytes(img)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_reader_verdict_is_the_firmware_mount(checker: MountChecker, name: str) -> None:
    geo = GEOMETRIES[name]

    @settings(max_examples=IMAGES_PER_GEOMETRY // PER_EXAMPLE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(imgs=st.lists(images(geo), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(imgs: list[bytes]) -> None:
        for img in imgs:
            c_verdict = checker.mount(geo, img)
            assert verdict(nvm.inspect_bytes(img, geo)) == c_verdict
            learnt = nvm.inspect_bytes(img)  # without the build: must not fail
            if nvm.learn_geometry(img) == geo:
                assert verdict(learnt) == c_verdict

    before = checker.count
    check()
    # counted per geometry: under pytest-xdist the geometries may share no process
    assert checker.count - before >= IMAGES_PER_GEOMETRY

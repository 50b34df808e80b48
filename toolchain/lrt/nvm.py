"""Host side of the NVM image format (docs/NVM_FORMAT.md): read, verify, report wear, build.

Twin of firmware_templates/lib/lrt_nvm.c. ``inspect_image`` reads a whole-region image (what
the host/file backend stores, or a dump of a board's NVM region), checks every slot's header
and CRCs, picks the set the device would boot from and summarises the wear counters.
``build_image`` writes the same bytes the C layer writes for a sequence of commits (used to
pre-load a device and to cross-check the format). The report is ``nvm_report``, the
endurance budget ``nvm_lifetime``, the drift models ``nvm_drift`` (integer twins of the C).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lrt.crc import crc32
from lrt.nvm_lifetime import U32_MAX, projected_lifetime_days

MAGIC = 0x4E54524C  # "LRTN"
# 3: headers carry the model id; 2: flash metadata shares the slot's first page (1: metadata
# page(s) of its own)
VERSION = 3
HEADER_SIZE = 64
MAX_SLOTS = 32
MAX_PROG = 64
TECH_FLASH = 1
TECH_RRAM = 2
TECH_NAMES = {TECH_FLASH: "flash", TECH_RRAM: "rram"}

# <I magic, H version, B tech, B slot, I gen, I blob_len, I blob_crc, I table_len,
#  I table_crc, I page_size, H prog_size, H n_slots, I slot_size, I meta_size, I unit_size,
#  B erase_value, B flags, H reserved, I units_written, I model_id, I header_crc>
_HDR = struct.Struct("<IHBBIIIIIIHHIIIBBHIII")
assert _HDR.size == HEADER_SIZE

SLOT_STATES = ("blank", "valid", "bad-header", "foreign", "bad-data")
# lrt_nvm_mount_info.flags and the mount's result (lrt_nvm.h, lrt_common.h)
F_EMPTY, F_FALLBACK, F_DEGRADED, F_VERSION, F_FOREIGN = 0x01, 0x02, 0x04, 0x08, 0x10
F_WEAR_STALE = 0x40
LRT_OK, LRT_ERR_CORRUPT = 0, -7


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


@dataclass(frozen=True)
class NvmLayout:
    n_slots: int
    slot_size: int
    meta_size: int
    table_len: int
    blob_units: int
    unit_size: int
    align: int

    def slot_base(self, s: int) -> int:
        return s * self.slot_size

    def blob_addr(self, s: int) -> int:
        return s * self.slot_size + self.meta_size

    @property
    def units(self) -> int:
        """Wear counters per slot: RRAM metadata + blob units; flash: the slot's pages."""
        return 1 + self.blob_units


@dataclass(frozen=True)
class NvmGeometry:
    """The lrt_nvm_config fields that decide the byte layout."""

    tech: int
    prog_size: int
    page_size: int
    page_count: int
    blob_size: int
    wear_unit: int = 0
    n_slots: int = 0
    erase_value: int = 0xFF
    model_id: int = 0  # lrt_nvm_config.model_id: codegen.nvm_model_id of the build's model

    @property
    def region_size(self) -> int:
        return self.page_size * self.page_count

    def layout(self) -> NvmLayout:
        """Twin of lrt_nvm_layout_get; ValueError where the C code returns an error."""
        p = self.prog_size
        if p <= 0 or p & (p - 1) or p > MAX_PROG or self.page_size <= 0:
            raise ValueError(f"prog_size {p} must be a power of two <= {MAX_PROG}")
        if self.page_size % p or self.page_count <= 0 or not 0 < self.blob_size <= 1 << 30:
            raise ValueError("page_size must be a multiple of prog_size; sizes must be > 0")
        if self.n_slots == 1 or self.n_slots > MAX_SLOTS:
            raise ValueError(f"n_slots must be 0 (auto) or 2..{MAX_SLOTS}")
        if self.region_size > U32_MAX:
            raise ValueError("the region must be < 4 GiB")
        align = max(p, 4)
        if self.tech == TECH_FLASH:
            if self.page_size < HEADER_SIZE:
                raise ValueError(f"flash page_size must be >= {HEADER_SIZE}")
            fit = self._fit_flash
        elif self.tech == TECH_RRAM:
            unit = self.wear_unit or p
            if unit % p or self.page_size % unit:
                raise ValueError("wear_unit must be a multiple of prog_size dividing page_size")
            fit = self._fit_rram
        else:
            raise ValueError(f"unknown technology {self.tech}")
        candidates = [self.n_slots] if self.n_slots else range(MAX_SLOTS, 1, -1)
        for n in candidates:
            lay = fit(n, align)
            if lay is not None:
                return lay
        raise ValueError(
            f"{self.region_size} bytes of NVM do not hold two slots of a {self.blob_size}-byte set"
        )

    def _fit_flash(self, n: int, align: int) -> NvmLayout | None:
        # a table entry per slot page: the fewest pages k with header + table(k) + blob <= k pages
        page = self.page_size
        k = -(-(HEADER_SIZE + self.blob_size) // page)
        while True:
            if k * page * n > self.region_size:
                return None
            table = 4 * n * k
            meta = _round_up(HEADER_SIZE + table, align)
            if meta + self.blob_size <= k * page:
                return NvmLayout(n, k * page, meta, table, k - 1, page, align)
            k = -(-(meta + self.blob_size) // page)

    def _fit_rram(self, n: int, align: int) -> NvmLayout | None:
        unit = self.wear_unit or self.prog_size
        units = -(-self.blob_size // unit)
        table = 4 * n * (1 + units)
        meta = _round_up(table + HEADER_SIZE, align)
        slot = meta + _round_up(self.blob_size, align)
        if table > 1 << 30 or slot * n > self.region_size:
            return None
        return NvmLayout(n, slot, meta, table, units, unit, align)


def window_size(geometry: NvmGeometry, chunk_size: int = 0) -> int:
    """Bytes of the RAM window a commit streams through (lrt_nvm's win_size)."""
    page = geometry.page_size
    if geometry.tech != TECH_FLASH or chunk_size == 0 or chunk_size >= page:
        return page
    if chunk_size % max(geometry.prog_size, 4) or page % chunk_size:
        raise ValueError(
            f"chunk_size {chunk_size} must be a multiple of max(prog_size, 4) dividing the "
            f"page ({page})"
        )
    return chunk_size


def work_size(geometry: NvmGeometry, chunk_size: int = 0) -> int:
    """Twin of lrt_nvm_work_size: the work buffer lrt_nvm_mount needs, in bytes."""
    lay = geometry.layout()
    w = window_size(geometry, chunk_size)
    windows = 2 if w < geometry.page_size else 1
    return _round_up(w, 4) * windows + _round_up(lay.units, 4) + 8 * lay.n_slots


@dataclass(frozen=True)
class SlotHeader:
    tech: int
    slot: int
    generation: int
    blob_len: int
    blob_crc: int
    table_len: int
    table_crc: int
    page_size: int
    prog_size: int
    n_slots: int
    slot_size: int
    meta_size: int
    unit_size: int
    erase_value: int
    units_written: int
    version: int = VERSION
    model_id: int = 0

    def encode(self) -> bytes:
        body = _HDR.pack(
            MAGIC, self.version, self.tech, self.slot, self.generation, self.blob_len,
            self.blob_crc, self.table_len, self.table_crc, self.page_size, self.prog_size,
            self.n_slots, self.slot_size, self.meta_size, self.unit_size, self.erase_value, 0, 0,
            self.units_written, self.model_id, 0,
        )
        return body[:60] + struct.pack("<I", crc32(body[:60]))

    @classmethod
    def parse(cls, raw: bytes, any_version: bool = False) -> SlotHeader | None:
        """The header in raw[:64], or None when magic, CRC or generation are bad, or the format
        version is not this one (unless any_version)."""
        if len(raw) < HEADER_SIZE:
            return None
        f = _HDR.unpack(raw[:HEADER_SIZE])
        if f[0] != MAGIC or f[-1] != crc32(raw[:60]) or f[4] == 0:
            return None
        if f[1] != VERSION and not any_version:
            return None
        return cls(
            tech=f[2], slot=f[3], generation=f[4], blob_len=f[5], blob_crc=f[6], table_len=f[7],
            table_crc=f[8], page_size=f[9], prog_size=f[10], n_slots=f[11], slot_size=f[12],
            meta_size=f[13], unit_size=f[14], erase_value=f[15], units_written=f[18],
            version=f[1], model_id=f[19],
        )


@dataclass
class SlotReport:
    index: int
    offset: int
    state: str
    header: SlotHeader | None = None
    note: str = ""
    table_ok: bool = False  # a header of ours whose wear table passes its CRC

    @property
    def generation(self) -> int:
        return self.header.generation if self.header else 0


@dataclass
class NvmReport:
    path: str
    image_size: int
    tech: str
    layout: NvmLayout | None
    page_size: int = 0
    prog_size: int = 0
    blob_size: int = 0
    slots: list[SlotReport] = field(default_factory=list)
    chosen: int | None = None
    generation: int = 0
    fallback: bool = False
    degraded: bool = False
    empty: bool = False
    other_version: int = 0  # a sound header of this format version (not readable here) seen
    version_seen: bool = False  # such a header seen (its version may be 0)
    foreign: bool = False  # a slot of another model, geometry or format version seen
    # slot whose wear table the counts come from: the chosen one unless its table fails its
    # CRC (then the newest that passes; None: counts restart at zero)
    wear_slot: int | None = None
    model_id: int = 0
    geometry_from: str = "build"  # "build": the caller's geometry; "image": learnt from it
    blob: bytes | None = None
    # (n_slots, 1 + blob_units): RRAM: [:, 0] metadata, rest blob units; flash: the slot's pages
    # ([:, 0] the page holding the header)
    wear: np.ndarray | None = None
    page_erases: np.ndarray | None = None  # flash: erases per page of the region
    endurance: int = 0
    samples: int = 0
    sample_rate: float = 0.0
    projected_days: int | None = None

    @property
    def flags(self) -> int:
        """lrt_nvm_mount_info.flags the firmware's mount reports for this image."""
        return ((F_EMPTY if self.empty else 0) | (F_FALLBACK if self.fallback else 0)
                | (F_DEGRADED if self.degraded else 0)
                | (F_VERSION if self.version_seen else 0) | (F_FOREIGN if self.foreign else 0)
                | (F_WEAR_STALE if self.wear_stale else 0))

    @property
    def wear_stale(self) -> bool:
        """The chosen set's wear table failed its CRC: counts from an older table or zero."""
        return self.chosen is not None and self.wear_slot != self.chosen

    @property
    def mount_rc(self) -> int:
        """lrt_nvm_mount's result: LRT_OK (a set, or blank) or LRT_ERR_CORRUPT."""
        return LRT_OK if self.chosen is not None or self.empty else LRT_ERR_CORRUPT

    @property
    def may_initialise(self) -> bool:
        """lrt_nvm_may_initialise: would the firmware commit its built-in set unasked? (blank,
        or only unreadable headers: nothing that belongs to anyone is lost)."""
        return not self.foreign and self.chosen is None

    @property
    def max_blob_writes(self) -> int:
        return int(self.wear[:, 1:].max()) if self.wear is not None and self.wear.size else 0

    @property
    def mean_blob_writes(self) -> float:
        return float(self.wear[:, 1:].mean()) if self.wear is not None and self.wear.size else 0.0

    @property
    def max_meta_writes(self) -> int:
        return int(self.wear[:, 0].max()) if self.wear is not None and self.wear.size else 0

    @property
    def worst(self) -> int:
        return max(self.max_blob_writes, self.max_meta_writes)

    def max_range(self, offset: int, length: int) -> int:
        """Most programs, over every slot, of the units holding blob bytes [offset, offset +
        length) (lrt_nvm_wear_range)."""
        if self.wear is None or self.layout is None or length <= 0:
            return 0
        lay = self.layout
        if self.tech == "flash":
            u0, u1 = (lay.meta_size + offset) // lay.unit_size, (
                lay.meta_size + offset + length - 1) // lay.unit_size
        else:
            u0, u1 = 1 + offset // lay.unit_size, 1 + (offset + length - 1) // lay.unit_size
        return int(self.wear[:, u0 : u1 + 1].max())


def _geometry_of(h: SlotHeader, image_size: int) -> NvmGeometry | None:
    """The geometry a header claims, if it is one the firmware could have mounted with: its
    layout, recomputed by the firmware's rules for a region of image_size bytes, must give
    exactly the header's fields. A crafted or damaged header is not trusted."""
    if h.page_size <= 0 or image_size % h.page_size:
        return None
    wear_unit = 0 if h.tech == TECH_FLASH or h.unit_size == h.prog_size else h.unit_size
    geo = NvmGeometry(tech=h.tech, prog_size=h.prog_size, page_size=h.page_size,
                      page_count=image_size // h.page_size, blob_size=h.blob_len,
                      wear_unit=wear_unit, n_slots=h.n_slots, erase_value=h.erase_value,
                      model_id=h.model_id)
    try:
        lay = geo.layout()
    except ValueError:
        return None
    if (lay.n_slots, lay.slot_size, lay.meta_size, lay.table_len, lay.unit_size) != (
            h.n_slots, h.slot_size, h.meta_size, h.table_len, h.unit_size) or h.slot >= lay.n_slots:
        return None
    return geo


def learn_geometry(img: bytes) -> NvmGeometry | None:
    """Without a build: the geometry of the first slot header (4-byte aligned, at its own
    slot's offset) that is consistent with the firmware's layout rules, else None."""
    magic = struct.pack("<I", MAGIC)
    pos = img.find(magic)
    while pos >= 0:
        h = SlotHeader.parse(img[pos : pos + HEADER_SIZE]) if pos % 4 == 0 else None
        if h is not None and pos == h.slot * h.slot_size:
            geo = _geometry_of(h, len(img))
            if geo is not None:
                return geo
        pos = img.find(magic, pos + 1)
    return None


def _other_version(img: bytes) -> int | None:
    magic = struct.pack("<I", MAGIC)
    pos = img.find(magic)
    while pos >= 0:
        h = SlotHeader.parse(img[pos : pos + HEADER_SIZE], any_version=True)
        if pos % 4 == 0 and h is not None and h.version != VERSION:
            return h.version
        pos = img.find(magic, pos + 1)
    return None


def inspect_bytes(
    img: bytes,
    geometry: NvmGeometry | None = None,
    *,
    path: str = "<bytes>",
    endurance: int = 0,
    samples: int = 0,
    sample_rate: float = 1.0,
) -> NvmReport:
    """Verify every slot of an NVM region image and pick the set the device boots from, by
    the firmware's mount rules (lrt_nvm_mount). With the build's geometry (and model id) the
    verdict is the device's; without, the geometry is learnt from a consistent header."""
    geometry_from = "build"
    if geometry is None:
        geometry = learn_geometry(img)
        geometry_from = "image"
        if geometry is None:
            seen = _other_version(img)
            return NvmReport(path=path, image_size=len(img), tech="unknown", layout=None,
                             empty=all(b == img[0] for b in img[:HEADER_SIZE]) if img else True,
                             other_version=seen or 0, version_seen=seen is not None,
                             foreign=seen is not None, geometry_from="image")
    lay = geometry.layout()
    tech, page, prog = geometry.tech, geometry.page_size, geometry.prog_size
    blob_size, erase = geometry.blob_size, geometry.erase_value
    if len(img) != geometry.region_size:
        raise ValueError(f"image is {len(img)} bytes, geometry says {geometry.region_size}")
    rep = NvmReport(path=path, image_size=len(img), tech=TECH_NAMES.get(tech, str(tech)),
                    layout=lay, page_size=page, prog_size=prog, blob_size=blob_size,
                    endurance=endurance, samples=samples, sample_rate=sample_rate,
                    model_id=geometry.model_id, geometry_from=geometry_from)
    expect = (tech, blob_size, lay.table_len, page, prog, lay.n_slots, lay.slot_size,
              lay.meta_size, lay.unit_size, erase, geometry.model_id)
    for s in range(lay.n_slots):
        base = lay.slot_base(s)
        raw = img[base : base + HEADER_SIZE]
        h = SlotHeader.parse(raw)
        if all(b == erase for b in raw):
            rep.slots.append(SlotReport(s, base, "blank"))
            continue
        if h is None:
            old = SlotHeader.parse(raw, any_version=True)
            if old is not None:
                rep.other_version = old.version
                rep.version_seen = rep.foreign = True
                rep.slots.append(SlotReport(
                    s, base, "foreign", old,
                    note=f"format version {old.version}; this reader and the firmware use "
                    f"{VERSION}: not used"))
            else:
                rep.slots.append(SlotReport(s, base, "bad-header"))
            continue
        got = (h.tech, h.blob_len, h.table_len, h.page_size, h.prog_size, h.n_slots,
               h.slot_size, h.meta_size, h.unit_size, h.erase_value, h.model_id)
        if got != expect or h.slot != s:
            rep.foreign = True
            note = (f"model id {h.model_id:08x}, this build's is {geometry.model_id:08x}"
                    if got[:-1] == expect[:-1] and h.slot == s else "another geometry")
            rep.slots.append(SlotReport(s, base, "foreign", h, note=note))
            continue
        blob = img[lay.blob_addr(s) : lay.blob_addr(s) + blob_size]
        table = img[base + HEADER_SIZE : base + HEADER_SIZE + lay.table_len]
        table_ok = crc32(table) == h.table_crc
        ok = crc32(blob) == h.blob_crc and table_ok
        rep.slots.append(SlotReport(s, base, "valid" if ok else "bad-data", h, table_ok=table_ok))
    _choose(rep)
    if rep.chosen is not None:
        s = rep.chosen
        rep.blob = img[lay.blob_addr(s) : lay.blob_addr(s) + blob_size]
        rep.wear_slot = _wear_source(rep)
        if rep.wear_slot is None:
            rep.wear = np.zeros((lay.n_slots, 1 + lay.blob_units), dtype=np.int64)
        else:
            base = lay.slot_base(rep.wear_slot) + HEADER_SIZE
            counts = np.frombuffer(img[base : base + lay.table_len], dtype="<u4")
            rep.wear = counts.astype(np.int64).reshape(lay.n_slots, 1 + lay.blob_units)
        if tech == TECH_FLASH:
            rep.page_erases = _page_erases(rep.wear, lay, page, len(img))
    if endurance and rep.wear is not None and samples and sample_rate > 0:
        rep.projected_days = projected_lifetime_days(
            endurance, rep.worst, samples, round(sample_rate * 1000)
        )
    return rep


def _choose(rep: NvmReport) -> None:
    """Same choice as lrt_nvm_mount."""
    valid = [s for s in rep.slots if s.state == "valid"]
    bad = [s for s in rep.slots if s.state == "bad-data"]
    bad_header = any(s.state == "bad-header" for s in rep.slots)
    if valid:
        best = max(valid, key=lambda s: s.generation)
        newest_bad = max((s.generation for s in bad), default=0)
        rep.fallback = bad_header or newest_bad > best.generation
    elif bad:
        best = max(bad, key=lambda s: s.generation)
        rep.degraded = rep.fallback = True
    else:
        rep.empty = all(s.state == "blank" for s in rep.slots)
        return
    rep.chosen = best.index
    rep.generation = best.generation


def _wear_source(rep: NvmReport) -> int | None:
    """Same table as lrt_nvm_mount's wear_source: the chosen set's if it verifies, else the
    newest one of ours that does."""
    assert rep.chosen is not None
    if rep.slots[rep.chosen].table_ok:
        return rep.chosen
    good = [s for s in rep.slots if s.table_ok]
    return max(good, key=lambda s: s.generation).index if good else None


def _page_erases(wear: np.ndarray, lay: NvmLayout, page: int, size: int) -> np.ndarray:
    out = np.zeros(size // page, dtype=np.int64)
    for s in range(lay.n_slots):
        first = lay.slot_base(s) // page
        out[first : first + lay.units] = wear[s]
    return out


def inspect_image(
    path: str | Path,
    geometry: NvmGeometry | None = None,
    *,
    endurance: int = 0,
    samples: int = 0,
    sample_rate: float = 1.0,
) -> NvmReport:
    """Read an NVM image file (geometry from its headers unless given) and verify it."""
    p = Path(path)
    return inspect_bytes(p.read_bytes(), geometry, path=str(p), endurance=endurance,
                         samples=samples, sample_rate=sample_rate)


# ---- writer (same bytes as the C layer) ----


def build_image(geometry: NvmGeometry, blobs: Sequence[bytes], *, base: bytes | None = None
                ) -> bytes:
    """The region after committing `blobs` in order on a fresh device (or on `base`, which
    must be an image this function produced, with its newest set in the slot before the next).

    Mirrors lrt_nvm: round-robin slots, write skip per unit (flash: per slot page, the pages
    holding metadata always rewritten), counts in every slot's table. Bytes a commit does not
    change are the carried-over previous set (zeros for the first).
    """
    lay = geometry.layout()
    ev, n = geometry.erase_value, geometry.blob_size
    img = bytearray(base if base is not None else bytes([ev]) * geometry.region_size)
    rep = inspect_bytes(bytes(img), geometry)
    cur, gen = rep.chosen, rep.generation
    gen = max([gen, *(s.generation for s in rep.slots)])
    table = (rep.wear.copy() if rep.wear is not None
             else np.zeros((lay.n_slots, lay.units), dtype=np.int64))
    flash = geometry.tech == TECH_FLASH
    page = geometry.page_size
    meta_pages = -(-(HEADER_SIZE + lay.table_len) // page)
    for blob in blobs:
        if len(blob) != n:
            raise ValueError(f"blob is {len(blob)} bytes, geometry says {n}")
        t = 0 if cur is None else (cur + 1) % lay.n_slots
        sb = lay.slot_base(t)
        old = bytes(img[sb : sb + lay.slot_size])
        # the slot as it will be, the header and table still erased
        new = bytearray([ev]) * lay.slot_size
        new[lay.meta_size : lay.meta_size + n] = blob
        written = 0
        if flash:
            for k in range(lay.units):
                lo, hi = k * page, (k + 1) * page
                if k < meta_pages or new[lo:hi] != old[lo:hi]:
                    table[t, k] += 1
                    written += 1
        else:
            table[t, 0] += 1
            for u in range(lay.blob_units):
                lo = lay.meta_size + u * lay.unit_size
                hi = min(lo + lay.unit_size, lay.slot_size)
                if new[lo:hi] != old[lo:hi]:
                    table[t, 1 + u] += 1
                    written += 1
        tab = table.astype("<u4").tobytes()
        new[HEADER_SIZE : HEADER_SIZE + len(tab)] = tab
        gen += 1
        hdr = SlotHeader(
            tech=geometry.tech, slot=t, generation=gen, blob_len=n, blob_crc=crc32(bytes(blob)),
            table_len=lay.table_len, table_crc=crc32(tab), page_size=geometry.page_size,
            prog_size=geometry.prog_size, n_slots=lay.n_slots, slot_size=lay.slot_size,
            meta_size=lay.meta_size, unit_size=lay.unit_size, erase_value=ev,
            units_written=written, model_id=geometry.model_id,
        )
        new[:HEADER_SIZE] = hdr.encode()
        img[sb : sb + lay.slot_size] = new
        cur = t
    return bytes(img)

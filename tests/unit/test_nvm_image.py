"""toolchain/lrt/nvm.py on its own: layout, headers, inspector, writer, budget, drift."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from lrt import nvm, nvm_drift, nvm_lifetime, nvm_report

FLASH = nvm.NvmGeometry(tech=nvm.TECH_FLASH, prog_size=4, page_size=64, page_count=24,
                        blob_size=300)
RRAM = nvm.NvmGeometry(tech=nvm.TECH_RRAM, prog_size=4, page_size=32, page_count=61,
                       blob_size=300)


def _blobs(n: int, k: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for _ in range(k)]


def test_layout_fits_region_and_auto_slots() -> None:
    lay = FLASH.layout()
    assert lay.n_slots == 3 and lay.slot_size * lay.n_slots <= FLASH.region_size
    # flash: whole pages per slot, the blob right after header + table (4-byte aligned)
    assert lay.slot_size % 64 == 0 and lay.meta_size % 4 == 0
    assert lay.table_len == 4 * lay.n_slots * (1 + lay.blob_units)
    pages = lay.slot_size // 64
    assert lay.blob_units == pages - 1  # a counter per slot page
    assert lay.meta_size == nvm.HEADER_SIZE + lay.table_len
    assert lay.meta_size + 300 <= lay.slot_size < lay.meta_size + 300 + 64  # no spare page
    assert pages == math.ceil((nvm.HEADER_SIZE + 4 * 3 * pages + 300) / 64)
    # large erase sectors: a slot per 128 KiB sector, metadata inside it
    big = nvm.NvmGeometry(tech=nvm.TECH_FLASH, prog_size=4, page_size=0x20000, page_count=3,
                          blob_size=21616).layout()
    assert (big.n_slots, big.slot_size, big.units) == (3, 0x20000, 1)
    r = RRAM.layout()
    assert r.n_slots == 2 and r.unit_size == 4 and r.blob_units == 75
    assert r.meta_size >= nvm.HEADER_SIZE + r.table_len and r.meta_size % 4 == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"prog_size": 3}, {"prog_size": 128}, {"page_size": 30}, {"n_slots": 1},
        {"page_count": 2}, {"tech": 7}, {"blob_size": 0},
    ],
)
def test_layout_rejects_bad_geometry(bad: dict[str, int]) -> None:
    g = nvm.NvmGeometry(**{**FLASH.__dict__, **bad})
    with pytest.raises(ValueError):
        g.layout()


def test_header_round_trip_and_crc() -> None:
    h = nvm.SlotHeader(tech=1, slot=2, generation=77, blob_len=300, blob_crc=5, table_len=72,
                       table_crc=6, page_size=64, prog_size=4, n_slots=3, slot_size=512,
                       meta_size=192, unit_size=64, erase_value=0xFF, units_written=3)
    raw = h.encode()
    assert len(raw) == nvm.HEADER_SIZE and raw[:4] == b"LRTN"
    assert nvm.SlotHeader.parse(raw) == h
    for i in range(nvm.HEADER_SIZE):
        bad = bytearray(raw)
        bad[i] ^= 0x10
        assert nvm.SlotHeader.parse(bytes(bad)) is None
    for version in (nvm.VERSION - 1, nvm.VERSION + 1):
        # another format version is refused, not misread, but can be recognised
        other = bytearray(raw)
        other[4:6] = struct.pack("<H", version)
        other[60:64] = struct.pack("<I", nvm.crc32(bytes(other[:60])))
        assert nvm.SlotHeader.parse(bytes(other)) is None
        parsed = nvm.SlotHeader.parse(bytes(other), any_version=True)
        assert parsed is not None and parsed.version == version


@pytest.mark.parametrize("geo", [FLASH, RRAM], ids=["flash", "rram"])
def test_build_then_inspect(geo: nvm.NvmGeometry) -> None:
    blobs = _blobs(geo.blob_size, 5)
    img = nvm.build_image(geo, blobs)
    rep = nvm.inspect_bytes(img)  # geometry learnt from the headers
    lay = geo.layout()
    assert rep.layout == nvm.inspect_bytes(img, geo).layout
    assert rep.generation == 5 and rep.chosen == 4 % lay.n_slots and rep.blob == blobs[-1]
    assert not (rep.fallback or rep.degraded or rep.empty)
    assert rep.wear is not None and rep.wear.shape == (lay.n_slots, 1 + lay.blob_units)
    # metadata rewritten once per commit into the slot: round robin spreads 5 commits
    assert sorted(rep.wear[:, 0].tolist()) == sorted(
        [sum(1 for g in range(5) if g % lay.n_slots == s) for s in range(lay.n_slots)])
    # incremental build equals one-shot build
    assert nvm.build_image(geo, blobs[3:], base=nvm.build_image(geo, blobs[:3])) == img


def test_write_skip_counts_in_python_writer() -> None:
    blobs = _blobs(300, 1)
    same = [blobs[0]] * 4
    rep = nvm.inspect_bytes(nvm.build_image(RRAM, same))
    assert rep.wear is not None
    # slot 0 written at gens 1 and 3 with the same content: its words once, not twice
    assert rep.wear[0, 1:].max() == 1 and rep.wear[0, 0] == 2
    b2 = bytearray(blobs[0])
    b2[10] ^= 1
    rep = nvm.inspect_bytes(nvm.build_image(RRAM, [*same, bytes(b2)]))
    assert rep.wear is not None
    assert rep.wear[0, 1 + 10 // 4] == 2 and int(rep.wear[0, 1:].sum()) == 75 + 1


def test_corruption_fallback_and_degraded() -> None:
    blobs = _blobs(300, 2)
    img = bytearray(nvm.build_image(RRAM, blobs))
    lay = RRAM.layout()
    img[lay.blob_addr(1) + 5] ^= 4  # newest set hit
    rep = nvm.inspect_bytes(bytes(img))
    assert rep.chosen == 0 and rep.blob == blobs[0] and rep.fallback and not rep.degraded
    assert [s.state for s in rep.slots] == ["valid", "bad-data"]
    img[lay.blob_addr(0) + 5] ^= 4  # and the older one
    rep = nvm.inspect_bytes(bytes(img), RRAM)
    assert rep.degraded and rep.chosen == 1
    img[lay.slot_base(1) + 9] ^= 1  # newest header unreadable
    rep = nvm.inspect_bytes(bytes(img), RRAM)
    assert rep.slots[1].state == "bad-header" and rep.chosen == 0 and rep.degraded


def test_degraded_set_with_a_broken_wear_table_counts_from_an_older_one() -> None:
    """A degraded mount's set may have a table that fails its CRC too: its counts are not
    trusted; the newest table that verifies gives them (or none: zero), and the report and
    the flags say so."""
    blobs = _blobs(300, 3)
    img = bytearray(nvm.build_image(RRAM, blobs))  # slots 0, 1, 0: slot 0 newest (gen 3)
    lay = RRAM.layout()
    sound = nvm.inspect_bytes(bytes(img), RRAM)
    assert sound.chosen == 0 and sound.wear_slot == 0 and not sound.wear_stale
    img[lay.blob_addr(0) + 5] ^= 4
    img[lay.blob_addr(1) + 5] ^= 4  # both sets drifted: degraded, on slot 0
    rep = nvm.inspect_bytes(bytes(img), RRAM)
    assert rep.degraded and rep.chosen == 0 and rep.wear_slot == 0  # its table is sound
    img[lay.slot_base(0) + nvm.HEADER_SIZE] ^= 1  # slot 0's table hit as well
    rep = nvm.inspect_bytes(bytes(img), RRAM)
    assert rep.chosen == 0 and rep.wear_slot == 1 and rep.wear_stale
    assert rep.flags & nvm.F_WEAR_STALE and rep.wear is not None
    assert rep.max_meta_writes == int(sound.wear[:, 0].max()) - 1  # gen 2's table: one short
    assert "slot 1's, an older set's table" in nvm_report.render_markdown(rep)
    img[lay.slot_base(1) + nvm.HEADER_SIZE] ^= 1
    rep = nvm.inspect_bytes(bytes(img), RRAM)
    assert rep.wear_slot is None and rep.wear_stale and rep.worst == 0
    assert "the firmware counts from zero" in nvm_report.render_markdown(rep)


def test_blank_and_foreign_images() -> None:
    blank = bytes([0xFF]) * FLASH.region_size
    rep = nvm.inspect_bytes(blank, FLASH)
    assert rep.empty and rep.chosen is None
    assert nvm.inspect_bytes(blank).layout is None
    other = nvm.NvmGeometry(**{**FLASH.__dict__, "blob_size": 200})
    img = nvm.build_image(other, _blobs(200, 1))
    rep = nvm.inspect_bytes(img, FLASH)
    assert rep.slots[0].state == "foreign" and rep.chosen is None
    with pytest.raises(ValueError):
        nvm.inspect_bytes(img[:-1], FLASH)


def test_render_report(tmp_path: object) -> None:
    img = nvm.build_image(FLASH, _blobs(300, 4))
    rep = nvm.inspect_bytes(img, endurance=10_000, samples=4 * 1000, sample_rate=2.0)
    md = nvm_report.render_markdown(rep)
    assert "Boot: slot 0, generation 4" in md and "| 1 |" in md
    assert rep.projected_days == nvm_lifetime.projected_lifetime_days(10_000, rep.worst, 4000, 2000)
    assert f"{rep.projected_days} days" in md
    txt = nvm_report.render_text(rep)
    assert "|" not in txt and "generation 4" in txt
    assert rep.page_erases is not None and rep.page_erases.max() == rep.worst


def test_projected_lifetime() -> None:
    # 1 cycle per 1000 samples at 1 sample/s, 1e5 cycles: 1e8 s = 1157 days
    assert nvm_lifetime.projected_lifetime_days(100_000, 1, 1000, 1000) == 1157
    assert nvm_lifetime.projected_lifetime_days(100_000, 0, 1000, 1000) == nvm.U32_MAX
    assert nvm_lifetime.projected_lifetime_days(100_000, 2, 1000, 1000) == 578
    assert nvm_lifetime.projected_lifetime_days(100_000, 1, 1000, 2000) == 578  # twice the rate
    assert nvm_lifetime.projected_lifetime_days(2**32 - 1, 1, 2**63, 1) == nvm.U32_MAX  # saturates


def test_budget_throttles_when_ahead_of_schedule() -> None:
    # 10 years, 1 sample/s, 1e4 cycles: the schedule grants 1 cycle per 31557.6 samples
    kw = {"endurance": 10_000, "target_days": 3652, "sample_rate_mhz": 1000, "burst": 2}
    early = nvm_lifetime.budget_check(**kw, worst_after=3, samples=1000, rho_min_q16=655)
    assert not early.allow and early.rho_min_q16 > 655 and early.allowed == 2
    later = nvm_lifetime.budget_check(**kw, worst_after=3, samples=10**6, rho_min_q16=655)
    assert later.allow and later.rho_min_q16 == 655 and later.allowed >= 3
    assert later.projected_days >= 3652
    far = nvm_lifetime.budget_check(**kw, worst_after=5000, samples=10**6, rho_min_q16=655)
    assert not far.allow and far.rho_min_q16 == 65536  # capped at 1.0
    assert nvm_lifetime.budget_check(0, 1, 1, 0, 99, 1, 7).allow  # unlimited endurance


def test_digital_drift_rate_and_determinism() -> None:
    data = bytes(20_000)
    p = 2**32 // 100  # 1% per bit
    out, flips = nvm_drift.drift_bits(data, p, seed=3)
    n_bits = 8 * len(data)
    assert abs(flips - n_bits / 100) < 5 * math.sqrt(n_bits / 100)
    assert sum(bin(b).count("1") for b in out) == flips
    assert nvm_drift.drift_bits(data, p, seed=3) == (out, flips)
    assert nvm_drift.drift_bits(data, 0, seed=3) == (data, 0)


def test_analog_drift_statistics() -> None:
    w = np.zeros(20_000, dtype=np.int8)
    sigma = 4.0
    got = nvm_drift.drift_noise(w, round(sigma * 65536), seed=5)
    assert got.dtype == np.int8
    assert abs(float(got.mean())) < 0.1
    # rounding to the LSB adds 1/12 variance
    assert abs(float(got.std()) - math.sqrt(sigma**2 + 1 / 12)) < 0.1
    clipped = nvm_drift.drift_noise(np.full(1000, 127, dtype=np.int8), 20 << 16, seed=1)
    assert clipped.max() == 127 and clipped.min() >= -128 and (clipped < 127).any()


def test_paper_drift_parameters() -> None:
    # p = p0 / (1e6 / d) = 1e-4 per bit; sigma = 10 / sqrt(1e5) weight units = 4.05 LSB (2^-7)
    assert nvm_drift.digital_drift_p_q32() == round(1e-4 * 2**32)
    assert nvm_drift.analog_drift_sigma_q16() == round(10 / math.sqrt(1e5) * 128 * 65536)
    assert 4.0 < nvm_drift.analog_drift_sigma_q16() / 65536 < 4.1


def test_report_of_garbage_says_the_tools_refuse_it() -> None:
    """Random bytes of the right size: the firmware would format them, but lrt-emulate --nvm
    refuses them without --format (they may be something other than a weight store), and
    the report says both."""
    size = len(nvm.build_image(FLASH, _blobs(300, 1)))
    img = np.random.default_rng(5).integers(0, 256, size, np.uint8).tobytes()
    rep = nvm.inspect_bytes(img, FLASH)
    assert rep.chosen is None and not rep.empty
    text = nvm_report.render_report(rep)
    assert "not an lrt weight store" in text and "refuses it unless" in text

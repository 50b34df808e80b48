"""lrt_nvm in C: power loss at every op, single-bit flips, write skip, kill -9, twins, ARM build.

The C drivers (tests/c/nvm_*.c) do the heavy enumeration in-process under ASan/UBSan; these
tests pick the geometries, compute the expectations in Python and check the drivers' output.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from harness.cbuild import LIB_DIR, compile_c
from lrt import nvm, nvm_drift, nvm_lifetime, nvm_report

HERE = Path(__file__).resolve().parent
LIB_SRC = [LIB_DIR / n for n in (
    "lrt_nvm.c", "lrt_nvm_budget.c", "lrt_nvm_drift.c", "lrt_nvm_host.c", "lrt_crc32.c",
    "lrt_common.c",
)]

FLASH = {"tech": "flash", "prog": 4, "page": 64, "pages": 24, "blob": 300}  # 3 slots
RRAM = {"tech": "rram", "prog": 4, "page": 32, "pages": 61, "blob": 300}  # 2 slots
# Large erase sectors scaled down: the STM32F446's 3 x 128 KiB sectors for a 21.6 KB set become
# 4 KiB pages for a 3 KiB set (one page per slot, metadata in the same page), streamed through a
# 256-byte window; MULTI has slots of three pages, so pages are skipped or rewritten one by one.
BIG = {"tech": "flash", "prog": 4, "page": 4096, "pages": 3, "blob": 3072, "chunk": 256}
MULTI = {"tech": "flash", "prog": 4, "page": 4096, "pages": 8, "blob": 9000, "chunk": 256}
# the real part: sectors 5-7 of the STM32F446RE, the mcu preset's weight set
NUCLEO = {"tech": "flash", "prog": 4, "page": 131072, "pages": 3, "blob": 21616, "chunk": 1024}


def ordered(geo: dict[str, object]) -> bool:
    """A flash window smaller than a page takes writes in increasing order only."""
    chunk = int(geo.get("chunk", 0))  # type: ignore[call-overload]
    return geo["tech"] == "flash" and 0 < chunk < int(geo["page"])  # type: ignore[call-overload]


def args(geo: dict[str, object]) -> list[str]:
    return [f"{k}={v}" for k, v in geo.items()]


def geometry(geo: dict[str, object]) -> nvm.NvmGeometry:
    return nvm.NvmGeometry(
        tech=nvm.TECH_FLASH if geo["tech"] == "flash" else nvm.TECH_RRAM,
        prog_size=int(geo["prog"]),  # type: ignore[call-overload]
        page_size=int(geo["page"]),  # type: ignore[call-overload]
        page_count=int(geo["pages"]),  # type: ignore[call-overload]
        blob_size=int(geo["blob"]),  # type: ignore[call-overload]
        wear_unit=int(geo.get("unit", 0)),  # type: ignore[call-overload]
        n_slots=int(geo.get("slots", 0)),  # type: ignore[call-overload]
        erase_value=int(geo.get("erase", 0xFF)),  # type: ignore[call-overload]
    )


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("nvm")
    return {
        name: compile_c([HERE / f"nvm_{name}.c", *LIB_SRC], out / name)
        for name in ("powerloss", "bitflip", "writeskip", "filekill", "twin", "image")
    }


def result(stdout: str, tag: str = "RESULT") -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith(tag + " "))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


# ---- 1. power loss at every program/erase op ----


def powerloss_args(geo: dict[str, object]) -> list[str]:
    return [*args(geo), *(["plans=2"] if ordered(geo) else [])]


@pytest.mark.parametrize("geo", [FLASH, RRAM, BIG], ids=["flash", "rram", "flash-4k-page"])
def test_power_loss_every_op_1000_commits(drivers: dict[str, Path], geo: dict[str, object]
                                          ) -> None:
    proc = subprocess.run([drivers["powerloss"], "commits=1000", "seed=11", *powerloss_args(geo)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = result(proc.stdout)
    print(proc.stdout.strip())
    assert r["commits"] == 1000
    assert r["torn"] == 0 and r["lost"] == 0
    # every op of every commit was cut, three ways (not happening, torn prefix, torn bits)
    assert r["trials"] == 3 * (r["cut_points"] - r["commits"]) + r["commits"]
    assert r["slots"] == geometry(geo).layout().n_slots
    assert r["old"] > r["new"] > 0


@pytest.mark.parametrize(
    "geo",
    [
        {**FLASH, "slots": 2},
        {**FLASH, "prog": 8, "page": 128, "pages": 12},
        {**FLASH, "prog": 1, "erase": 0},  # erased = 0x00: prog sets bits
        {**FLASH, "prog": 64, "page": 256, "pages": 8, "blob": 301},
        {**RRAM, "prog": 1, "page": 16, "pages": 200, "blob": 123},
        {**RRAM, "prog": 8, "page": 64, "pages": 40, "unit": 16},
        {**RRAM, "pages": 200, "erase": 0, "blob": 257},
        MULTI,
        {**FLASH, "chunk": 16},
        {**MULTI, "chunk": 4096, "pages": 12},  # page-sized window: any write order
        {**BIG, "prog": 8, "chunk": 512, "erase": 0},
    ],
    ids=["flash-2slots", "flash-p8", "flash-erase0", "flash-p64", "rram-p1", "rram-unit16",
         "rram-4slots", "flash-4k-multipage", "flash-64-chunk16", "flash-4k-page-window",
         "flash-4k-p8-erase0"],
)
def test_power_loss_other_geometries(drivers: dict[str, Path], geo: dict[str, object]) -> None:
    proc = subprocess.run([drivers["powerloss"], "commits=120", "seed=5", *powerloss_args(geo)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout.strip())
    r = result(proc.stdout)
    assert r["torn"] == 0 and r["lost"] == 0 and r["commits"] == 120
    assert r["reverts"] > 0  # some commits put back bytes the target slot still held
    if geo is MULTI:
        # a page whose windows restore the target's bytes, the case the window must remember
        assert r["early"] > 0


def test_power_loss_nucleo_sectors(drivers: dict[str, Path]) -> None:
    """The real geometry: 3 x 128 KiB sectors, a 21.6 KB set, a 1 KiB window."""
    proc = subprocess.run([drivers["powerloss"], "commits=25", "seed=7", *powerloss_args(NUCLEO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout.strip())
    r = result(proc.stdout)
    assert r["torn"] == 0 and r["lost"] == 0 and r["slots"] == 3


# ---- 2. every single-bit flip is detected ----


@pytest.mark.parametrize(
    "geo",
    [{**FLASH, "blob": 64, "pages": 16, "slots": 2}, {**RRAM, "blob": 64, "pages": 40},
     {**RRAM, "blob": 61, "prog": 1, "page": 16, "pages": 100},
     {**BIG, "blob": 1000, "pages": 2}],
    ids=["flash", "rram", "rram-p1", "flash-4k-page"],
)
def test_every_single_bit_flip_detected(drivers: dict[str, Path], geo: dict[str, object]) -> None:
    proc = subprocess.run([drivers["bitflip"], *args(geo)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout.strip())
    r = result(proc.stdout)
    lay = geometry(geo).layout()
    covered = nvm.HEADER_SIZE + lay.table_len + int(geo["blob"])  # type: ignore[call-overload]
    assert r["flips"] == 2 * 8 * covered  # both slots, every bit of header, table, blob
    assert r["detected"] == r["flips"]
    assert r["fell_back"] == r["kept_newer"] == r["flips"] // 2
    assert "reboot_before_refresh=fallback" in proc.stdout
    assert "refresh=sealed" in proc.stdout and "DEGRADED" in proc.stdout


# ---- 3. write skip: exactly the changed words / pages are programmed ----


def _blob_sequence(n: int, seed: int) -> tuple[list[bytes], list[float]]:
    """Commits changing 100%, 0%, 1 byte, 1%, 5%, 10%, 25%, 50% of the bytes (scattered)."""
    rng = np.random.default_rng(seed)
    cur = rng.integers(0, 256, n, dtype=np.uint8)
    blobs, pcts = [cur.tobytes()], [100.0]
    for frac in (0.0, 1.0 / n, 0.01, 0.05, 0.10, 0.25, 0.50, 0.01, 0.0, 0.05):
        nxt = cur.copy()
        k = max(1, round(frac * n)) if frac else 0
        idx = rng.choice(n, size=k, replace=False)
        nxt[idx] = (nxt[idx].astype(np.int32) + rng.integers(1, 256, k)).astype(np.uint8)
        blobs.append(nxt.tobytes())
        pcts.append(100.0 * k / n)
        cur = nxt
    return blobs, pcts


def _pct(a: bytes, b: bytes | None, n: int) -> str:
    if b is None:
        return "  new"
    return f"{100.0 * sum(x != y for x, y in zip(a[:n], b[:n], strict=True)) / n:5.1f}%"


def _parse_writeskip(stdout: str) -> tuple[dict[str, int], list[dict[str, object]]]:
    lines = stdout.splitlines()
    lay = result(stdout, "L")
    commits: list[dict[str, object]] = []
    for i, ln in enumerate(lines):
        if ln.startswith("C "):
            c: dict[str, object] = dict(result(ln, "C"))
            for tag, nxt in (("W", lines[i + 1]), ("E", lines[i + 2])):
                assert nxt.split()[0] == tag
                c[tag] = {int(a): int(b) for a, b in (t.split(":") for t in nxt.split()[1:])}
            commits.append(c)
    return lay, commits


@pytest.mark.parametrize(
    "geo",
    [FLASH, RRAM, {**RRAM, "unit": 16, "page": 64, "pages": 40}, BIG, MULTI,
     {**MULTI, "chunk": 0}, {**FLASH, "chunk": 16}],
    ids=["flash", "rram", "rram-unit16", "flash-4k-page", "flash-4k-multipage",
         "flash-4k-page-window", "flash-64-chunk16"])
@pytest.mark.parametrize("plan", [0, 1])
def test_write_skip_programs_exactly_the_changed_units(
    drivers: dict[str, Path], tmp_path: Path, geo: dict[str, object], plan: int
) -> None:
    g = geometry(geo)
    lay = g.layout()
    n, ev = g.blob_size, g.erase_value
    blobs, pcts = _blob_sequence(n, seed=3 + plan)
    (tmp_path / "blobs").write_bytes(b"".join(blobs))
    img = tmp_path / "nvm.img"
    proc = subprocess.run(
        [drivers["writeskip"], f"blobs={tmp_path / 'blobs'}", f"image={img}", f"plan={plan}",
         *args(geo)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clay, commits = _parse_writeskip(proc.stdout)
    assert (clay["n_slots"], clay["slot_size"], clay["meta_size"], clay["table_len"]) == (
        lay.n_slots, lay.slot_size, lay.meta_size, lay.table_len)
    assert len(commits) == len(blobs)

    # each slot as stored (header and table aside): blob after the metadata, erase value around
    def slot_bytes(blob: bytes | None) -> bytes:
        if blob is None:
            return bytes([ev]) * lay.slot_size  # a fresh device
        pad = lay.slot_size - lay.meta_size - n
        return bytes([ev]) * lay.meta_size + blob + bytes([ev]) * pad

    stored: list[bytes | None] = [None] * lay.n_slots
    report = []
    for gen, (blob, pct, c) in enumerate(zip(blobs, pcts, commits, strict=True), start=1):
        t = (gen - 1) % lay.n_slots
        assert c["slot"] == t and c["gen"] == gen
        new, old = slot_bytes(blob), slot_bytes(stored[t])
        m0 = lay.slot_base(t)
        progs: dict[int, int] = c["W"]  # type: ignore[assignment]
        erases: dict[int, int] = c["E"]  # type: ignore[assignment]
        # nothing outside the target slot is touched, no word twice
        assert all(m0 <= a < m0 + lay.slot_size for a in [*progs, *erases])
        assert all(k == 1 for k in progs.values())
        if g.tech == nvm.TECH_RRAM:
            p = g.prog_size
            b0 = lay.meta_size
            changed = {m0 + w for w in range(b0, lay.slot_size, p)
                       if new[w : w + p] != old[w : w + p]}
            assert {a for a in progs if a >= m0 + b0} == changed
            assert erases == {}
            units = {(a - m0 - b0) // lay.unit_size for a in changed}
            assert c["units"] == len(units)
            report.append(f"{pct:5.1f}% of bytes vs previous set, {_pct(blob, stored[t], n)} vs "
                          f"target slot -> {len(changed)} of {(lay.slot_size - b0) // p} words "
                          f"programmed")
        else:
            P = g.page_size
            meta_pages = -(-(nvm.HEADER_SIZE + lay.table_len) // P)
            pages = range(0, lay.slot_size, P)
            # pages with metadata always (the header changes), others exactly when they differ
            want = {m0 + q for q in pages if q < meta_pages * P or new[q : q + P] != old[q : q + P]}
            assert erases == {a: 1 for a in want}
            # a page is programmed only after its erase
            assert {a - a % P for a in progs} <= want
            assert c["units"] == len(want)
            report.append(f"{pct:5.1f}% of bytes vs previous set, {_pct(blob, stored[t], n)} vs "
                          f"target slot -> {len(want)} of {len(pages)} pages erased+programmed "
                          f"({meta_pages} with metadata)")
        stored[t] = blob
    print("\n".join(report))

    # the image is byte-identical to the Python writer's, and inspects cleanly
    image = img.read_bytes()
    assert image == nvm.build_image(g, blobs)
    rep = nvm.inspect_image(img)
    assert rep.chosen == (len(blobs) - 1) % lay.n_slots
    assert rep.generation == len(blobs) and rep.blob == blobs[-1]
    assert not rep.fallback and not rep.degraded
    assert rep.wear is not None
    if g.tech == nvm.TECH_RRAM:
        assert int(rep.wear[:, 1:].sum()) == sum(int(c["units"]) for c in commits)  # type: ignore[call-overload]
    else:
        assert int(rep.wear.sum()) == sum(int(c["units"]) for c in commits)  # type: ignore[call-overload]
        assert rep.page_erases is not None and int(rep.page_erases.sum()) == int(rep.wear.sum())


def test_write_skip_sub_page_window_remembers_one_restored_window(
    drivers: dict[str, Path], tmp_path: Path
) -> None:
    """Writes that put back the bytes the target slot still holds, on a page streamed through
    a sub-page window. One such window is remembered: a page that ends up as the target holds
    it is not erased. Two are not: the page is erased early (the documented trade-off). A
    later change erases the page anyway, and the remembered window is programmed back."""
    geo = {**MULTI, "pages": 6}  # 2 slots of 3 pages
    g = geometry(geo)
    lay = g.layout()
    n, P, W = g.blob_size, g.page_size, int(geo["chunk"])  # type: ignore[call-overload]
    assert lay.n_slots == 2 and lay.units == 3
    a = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)
    w1, w2, w3 = (P - lay.meta_size + k * W for k in (2, 5, 9))  # windows of page 1

    def flip(base: np.ndarray, *at: int) -> np.ndarray:
        out = base.copy()
        for x in at:
            out[x : x + 10] ^= 0x5A
        return out

    cases = {  # gen 1 = a (slot 0), gen 2 (slot 1), gen 3 (slot 0 again, which holds a)
        "one": (flip(a, w1), a),                # back to a: one window restored
        "two": (flip(a, w1, w2), a),            # back to a: two windows restored
        "later": (flip(a, w1), flip(a, w3)),    # w1 restored, w3 changed
    }
    page1 = lay.slot_base(0) + P
    got = {}
    for name, (second, third) in cases.items():
        (tmp_path / name).write_bytes(b"".join(x.tobytes() for x in (a, second, third)))
        img = tmp_path / f"{name}.img"
        proc = subprocess.run(
            [drivers["writeskip"], f"blobs={tmp_path / name}", f"image={img}", "plan=1",
             *args(geo)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-3000:]
        commit = _parse_writeskip(proc.stdout)[1][2]
        got[name] = (page1 in commit["E"], commit["early"])  # type: ignore[operator]
        rep = nvm.inspect_image(img)
        assert rep.blob == third.tobytes() and rep.generation == 3 and not rep.fallback
        assert lay.slot_base(0) + 2 * P not in commit["E"]  # type: ignore[operator]
    print(got)
    assert got == {"one": (False, 0), "two": (True, 1), "later": (True, 0)}


# ---- format version: an older firmware's store is recognised and replaced, never misread ----


def _as_version(img: bytes, lay: nvm.NvmLayout, version: int) -> bytes:
    out = bytearray(img)
    for s in range(lay.n_slots):
        h = out[lay.slot_base(s) : lay.slot_base(s) + nvm.HEADER_SIZE]
        if nvm.SlotHeader.parse(bytes(h)) is None:
            continue  # blank
        h[4:6] = version.to_bytes(2, "little")
        h[60:64] = nvm.crc32(bytes(h[:60])).to_bytes(4, "little")
        out[lay.slot_base(s) : lay.slot_base(s) + nvm.HEADER_SIZE] = h
    return bytes(out)


def test_old_format_version_is_rejected_clearly(drivers: dict[str, Path], tmp_path: Path) -> None:
    g = geometry(FLASH)
    lay = g.layout()
    blobs = [bytes(range(256)) + bytes(44), bytes(300)]
    old = _as_version(nvm.build_image(g, blobs), lay, 1)
    path = tmp_path / "v1.img"
    path.write_bytes(old)
    # Python: nothing chosen, the version named
    rep = nvm.inspect_image(path)
    assert rep.layout is None and rep.other_version == 1 and rep.chosen is None
    text = nvm_report.render_report(rep)
    assert "version 1" in text and f"version {nvm.VERSION}" in text
    rep = nvm.inspect_image(path, g)
    assert rep.chosen is None and rep.other_version == 1
    assert [s.state for s in rep.slots[:2]] == ["foreign", "foreign"]
    assert "format version 1" in rep.slots[0].note
    # C: mount flags it, uses nothing, and the firmware's boot refuses to overwrite it
    proc = subprocess.run([drivers["image"], f"image={path}", "commit=1", *args(FLASH)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = result(proc.stdout.split(" states=", 1)[0], "MOUNT")
    assert first["rc"] == -7 and first["slot"] == -1  # LRT_ERR_CORRUPT: nothing usable
    assert first["flags"] == nvm.F_VERSION | nvm.F_FOREIGN
    assert "states=3,3,0" in proc.stdout  # FOREIGN, FOREIGN, BLANK
    assert "REFUSED" in proc.stdout and path.read_bytes() == old
    # formatting is the explicit way out: every slot blank, then the built-in set
    proc = subprocess.run([drivers["image"], f"image={path}", "commit=1", "format=1",
                           *args(FLASH)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mounts = [result(ln.rsplit(" states=", 1)[0], "MOUNT")
              for ln in proc.stdout.splitlines() if ln.startswith("MOUNT")]
    assert mounts[1]["flags"] == nvm.F_EMPTY and "states=0,0,0" in proc.stdout
    assert mounts[2]["rc"] == 0 and mounts[2]["gen"] == 1 and mounts[2]["flags"] == 0
    rep = nvm.inspect_image(path, g)
    assert rep.generation == 1 and rep.blob == bytes((7 * i + 1) & 0xFF for i in range(300))
    assert not rep.foreign and rep.other_version == 0


@pytest.mark.parametrize("geo", [FLASH, RRAM, BIG, MULTI, NUCLEO, {**NUCLEO, "chunk": 0}],
                         ids=["flash", "rram", "big", "multi", "nucleo", "nucleo-page"])
def test_work_size_twin(drivers: dict[str, Path], tmp_path: Path, geo: dict[str, object]) -> None:
    g = geometry(geo)
    path = tmp_path / "blank.img"
    path.write_bytes(bytes([g.erase_value]) * g.region_size)
    proc = subprocess.run([drivers["image"], f"image={path}", *args(geo)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    want = nvm.work_size(g, int(geo.get("chunk", 0)))  # type: ignore[call-overload]
    assert result(proc.stdout, "WORK")["bytes"] == want
    if want <= 65536:  # the driver's work buffer
        assert "MOUNT rc=0 flags=1 " in proc.stdout  # blank: LRT_NVM_F_EMPTY
    else:
        assert "MOUNT rc=-2 " in proc.stdout  # LRT_ERR_SIZE: a page-sized window


def test_nucleo_layout_fits_two_sets_in_three_sectors() -> None:
    lay = geometry(NUCLEO).layout()
    assert lay.n_slots == 3 and lay.slot_size == 131072 and lay.units == 1
    # the window, its twin for a page whose writes put back stored bytes, one byte per page,
    # a worn-unit record per slot
    assert nvm.work_size(geometry(NUCLEO), 1024) == 2 * 1024 + 4 + 3 * 8


# ---- 4. file backend across kill -9 ----


def test_file_backend_survives_kill_9(drivers: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "nvm.img"
    geo = args(FLASH)
    rnd = random.Random(4)
    last = 0
    for round_ in range(6):
        proc = subprocess.Popen([drivers["filekill"], "run", str(path), "seed=9", *geo],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("START gen=")
        start = int(first.split("=")[1])
        assert start in (last, last + 1)  # resumes from what the previous kill left
        want = rnd.randint(20, 400)
        seen = start
        for ln in proc.stdout:
            seen = int(ln.split()[1])
            if seen - start >= want:
                break
        time.sleep(rnd.random() * 0.004)  # kill somewhere inside a later commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for ln in proc.stdout:  # lines printed before the kill
            seen = int(ln.split()[1])
        proc.stdout.close()
        out = tmp_path / f"blob{round_}"
        ver = subprocess.run([drivers["filekill"], "verify", str(path), "seed=9", f"out={out}",
                              *geo], capture_output=True, text=True, timeout=60)
        assert ver.returncode == 0, ver.stdout + ver.stderr
        m = result(ver.stdout, "MOUNT")
        assert m["ok"] == 1
        # the last generation reported done, or one more whose report the kill swallowed
        assert m["gen"] in (seen, seen + 1), (m, seen)
        rep = nvm.inspect_image(path)
        assert rep.generation == m["gen"] and rep.chosen == m["slot"]
        assert rep.blob == out.read_bytes()
        last = m["gen"]
    assert last > 100


# ---- twins: the Python budget and drift functions equal the C ones bit for bit ----


def test_python_twins_match_c(drivers: dict[str, Path]) -> None:
    rnd = random.Random(8)
    cmds, want = [], []
    for _ in range(300):
        e, w = rnd.choice([0, 1, 10_000, 100_000, 10**6, 2**32 - 1]), rnd.randint(0, 5000)
        s, r = rnd.choice([0, 1, 99, 10**5, 10**9, 2**40, 2**63]), rnd.choice([1, 100, 1000, 10**6])
        cmds.append(f"life {e} {w} {s} {r}")
        want.append(f"life {nvm_lifetime.projected_lifetime_days(e, w, s, r)}")
        td, burst = rnd.choice([1, 365, 3650, 36500]), rnd.randint(0, 100)
        rho = rnd.randint(1, 70000)
        t = nvm_lifetime.budget_check(e, td, r, burst, w, s, rho)
        cmds.append(f"budget {e} {td} {r} {burst} {w} {s} {rho}")
        want.append(f"budget {int(t.allow)} {t.rho_min_q16} {t.allowed} {t.projected_days}")
    for _ in range(20):
        data = rnd.randbytes(rnd.randint(1, 300))
        p, seed = rnd.choice([0, 429_497, 2**28, 2**31, 2**32 - 1]), rnd.getrandbits(32)
        out, flips = nvm_drift.drift_bits(data, p, seed)
        cmds.append(f"bits {p} {seed} {data.hex()}")
        want.append(f"bits {flips} {out.hex()}")
        sigma = rnd.choice([0, 1 << 10, 265_000, 4 << 16, 200 << 16])
        w8 = np.frombuffer(data, dtype=np.int8)
        got = nvm_drift.drift_noise(w8, sigma, seed)
        cmds.append(f"noise {sigma} {seed} {data.hex()}")
        want.append(f"noise {int((got != w8).sum())} {got.tobytes().hex()}")
    proc = subprocess.run([drivers["twin"]], input="\n".join(cmds) + "\n", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == want


# ---- the firmware part builds for Cortex-M without floating point ----


@pytest.mark.parametrize(
    "flags",
    [["-mcpu=cortex-m4", "-mthumb"], ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"]],
    ids=["m4", "m3"],
)
def test_lrt_nvm_builds_for_arm_without_float(tmp_path: Path, flags: list[str]) -> None:
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    for name in ("lrt_nvm.c", "lrt_nvm_budget.c", "lrt_nvm_drift.c"):
        obj = tmp_path / f"{name}.o"
        subprocess.run(
            ["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
             *flags, f"-I{LIB_DIR}", "-c", str(LIB_DIR / name), "-o", str(obj)],
            check=True, capture_output=True, text=True)
        undef = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], check=True,
                               capture_output=True, text=True).stdout.split()
        soft_float = [s for s in undef if s.startswith(("__aeabi_f", "__aeabi_d", "__aeabi_i2f"))]
        assert soft_float == [], name


# ---- the rest of the API: unmapped backend, lrt_wstore in any order, abort, wear, worn ----


@pytest.mark.parametrize("geo", [FLASH, RRAM, {**RRAM, "prog": 8, "page": 64, "pages": 40,
                                              "unit": 16}], ids=["flash", "rram", "rram-unit16"])
def test_api_wstore_abort_wear_budget_worn(tmp_path: Path, geo: dict[str, object]) -> None:
    exe = compile_c([HERE / "nvm_api.c", *LIB_SRC, LIB_DIR / "lrt_wstore.c"], tmp_path / "api")
    proc = subprocess.run([exe, *args(geo)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    n_slots = geometry(geo).layout().n_slots
    assert f"OK worn after {5 * n_slots} commits" in proc.stdout
    assert "OK abort" in proc.stdout and "OK wstore-any-order unmapped gen=201" in proc.stdout


def test_padding_after_an_unaligned_blob_wears_its_last_unit(tmp_path: Path) -> None:
    """RRAM, one-byte units, a 5-byte blob in an 8-byte area over stale bytes: programming the
    padding counted a wear unit past the end of the caller's work buffer (ASan: heap overflow);
    it wears the blob's last unit, once per commit."""
    src = [HERE / "nvm_padding.c", *(LIB_DIR / n for n in (
        "lrt_nvm.c", "lrt_nvm_budget.c", "lrt_nvm_drift.c", "lrt_nvm_mem.c", "lrt_crc32.c",
        "lrt_common.c"))]  # fmt: skip
    exe = compile_c(src, tmp_path / "padding")
    proc = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "OK commit wear=0 blob_max=1" in proc.stdout


# ---- programs the wear table must not miss, slots a commit must not take ----

REWEAR_SRC = [HERE / "nvm_rewear.c", *LIB_SRC]


@pytest.fixture(scope="module")
def rewear(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(REWEAR_SRC, tmp_path_factory.mktemp("rewear") / "rewear")


def run_rewear(exe: Path, scenario: str, geo: dict[str, object]) -> str:
    proc = subprocess.run([exe, scenario, *args(geo)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


RRAM16 = {**RRAM, "prog": 8, "page": 64, "pages": 40, "unit": 16}
# pages that are no multiple of 4 (the layout allows any multiple of prog_size): the wear
# table went out in window-sized pieces that cut its counters in two
ODD = {"tech": "flash", "prog": 2, "page": 66, "pages": 24, "blob": 300}
ODD_RRAM = {"tech": "rram", "prog": 2, "page": 66, "pages": 40, "blob": 300, "unit": 6}


@pytest.mark.parametrize("geo", [FLASH, RRAM, RRAM16, ODD, ODD_RRAM],
                         ids=["flash", "rram", "rram-unit16", "flash-page66", "rram-page66"])
def test_reprogramming_inside_one_commit_is_counted_and_capped(rewear: Path,
                                                               geo: dict[str, object]) -> None:
    """Writes that keep going backwards reprogram their units each time: every program is
    counted, and one a byte counter (255) or the endurance limit cannot take is refused before
    it happens (it was counted as 255, or past the limit, and done anyway)."""
    out = run_rewear(rewear, "alternate", geo)
    lay = geometry(geo).layout()
    first = 1 if geo["tech"] == "rram" else lay.meta_size // lay.unit_size
    assert f"OK alternate 20 passes: unit {first} +20, " in out and out.count(" +20") == 2
    assert f"OK alternate refused at pass 256: unit {first} +255" in out
    assert "OK endurance 12: refused at pass 13, slot 0 worn, next commit in slot 1" in out
    # the worn slot's count outlives the dropped commits (it was lost, and the slot reused)
    assert "OK endurance: slot 0 kept out after 6 more commits and a reboot" in out


# units the landed commit adds programs to: the first and the last blob unit when the target
# held the same bytes (2 slots), every unit of a blank target (3 slots); BIG's one page
DROPPED = [(FLASH, "all"), (RRAM, 2), (RRAM16, "all"), (BIG, 1), (MULTI, 2), (ODD, "all"),
           (ODD_RRAM, 2)]


@pytest.mark.parametrize(("geo", "units"), DROPPED,
                         ids=["flash", "rram", "rram-unit16", "big", "multi", "flash-page66",
                              "rram-page66"])
def test_programs_of_dropped_commits_reach_the_table(rewear: Path, geo: dict[str, object],
                                                     units: int | str) -> None:
    """Seven commits aborted after programming the blob's first unit, then one that lands: the
    table records all eight programs (it recorded the last one only). Flash erases the slot's
    first page in each of them; RRAM writes its metadata words only in the commit that lands.
    The landed commit's header counts every unit its table adds programs to (units the
    dropped commits had programmed were left out)."""
    out = run_rewear(rewear, "dropped", geo)
    meta = 8 if geo["tech"] == "flash" else 1
    assert "OK dropped 7 + 1 commit: unit " in out and f" +8, metadata +{meta}, " in out
    lay = geometry(geo).layout()
    everything = lay.units if geo["tech"] == "flash" else lay.blob_units
    assert f"units_written={everything if units == 'all' else units}\n" in out


F2 = {"tech": "flash", "prog": 4, "page": 256, "pages": 16, "blob": 600, "slots": 2}


@pytest.mark.parametrize("geo", [FLASH, RRAM, BIG, MULTI, F2, ODD, ODD_RRAM],
                         ids=["flash", "rram", "big", "multi", "flash-2-slots", "flash-page66",
                              "rram-page66"])
def test_degraded_mount_counts_from_the_table_that_verifies(rewear: Path,
                                                            geo: dict[str, object]) -> None:
    """Every set drifted and every wear table but the oldest hit: the counts come from the
    oldest; flash takes another slot for the next commit (its first erase would destroy that
    table), and with two slots, where it cannot, counts restart from zero rather than from the
    erased words (0xFFFFFFFF, which wrapped and wore the store out at once)."""
    out = run_rewear(rewear, "degraded", geo)
    line = next(ln for ln in out.splitlines() if ln.startswith("OK degraded: "))
    n_slots = geometry(geo).layout().n_slots
    if geo["tech"] == "flash" and n_slots > 2:
        assert "new set in slot 1," in line  # not slot 0, the table's
    if geo["tech"] == "flash" and n_slots == 2:
        assert line.endswith("max blob 0 meta 1")  # from zero: this commit's erases only


@pytest.mark.parametrize("geo", [BIG, MULTI], ids=["big", "multi"])
def test_backward_write_after_the_first_erase_is_counted(rewear: Path,
                                                         geo: dict[str, object]) -> None:
    """A sub-page flash window refuses a backward write after the slot's first page was
    erased; that erase reaches the table with the next commit into the slot."""
    out = run_rewear(rewear, "backward", geo)
    assert "OK backward 5 dropped + 1 commit: first page +6 erases" in out


def test_commits_never_take_another_models_slot(rewear: Path) -> None:
    """Slots 0 and 1 hold another model's sets: a commit takes the blank slot 2, numbers its
    generation 1 (another model's generations are not ours), and the next one finds no slot
    (LRT_ERR_NOSPACE) instead of overwriting slot 0; the other model still has both sets."""
    out = run_rewear(rewear, "foreign", FLASH)
    assert "OK foreign: own set in slot 2 gen 1, no slot for the next, the other model's 2 " \
           "sets intact" in out

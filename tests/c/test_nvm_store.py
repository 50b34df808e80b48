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

from conftest import LIB_DIR, compile_c
from lrt import nvm

HERE = Path(__file__).resolve().parent
LIB_SRC = [LIB_DIR / n for n in ("lrt_nvm.c", "lrt_nvm_host.c", "lrt_crc32.c", "lrt_common.c")]

FLASH = {"tech": "flash", "prog": 4, "page": 64, "pages": 24, "blob": 300}  # 3 slots
RRAM = {"tech": "rram", "prog": 4, "page": 32, "pages": 61, "blob": 300}  # 2 slots


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
        for name in ("powerloss", "bitflip", "writeskip", "filekill", "twin")
    }


def result(stdout: str, tag: str = "RESULT") -> dict[str, int]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith(tag + " "))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


# ---- 1. power loss at every program/erase op ----


@pytest.mark.parametrize("geo", [FLASH, RRAM], ids=["flash", "rram"])
def test_power_loss_every_op_1000_commits(drivers: dict[str, Path], geo: dict[str, object]
                                          ) -> None:
    proc = subprocess.run([drivers["powerloss"], "commits=1000", "seed=11", *args(geo)],
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
    ],
    ids=["flash-2slots", "flash-p8", "flash-erase0", "flash-p64", "rram-p1", "rram-unit16",
         "rram-4slots"],
)
def test_power_loss_other_geometries(drivers: dict[str, Path], geo: dict[str, object]) -> None:
    proc = subprocess.run([drivers["powerloss"], "commits=120", "seed=5", *args(geo)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = result(proc.stdout)
    assert r["torn"] == 0 and r["lost"] == 0 and r["commits"] == 120


# ---- 2. every single-bit flip is detected ----


@pytest.mark.parametrize(
    "geo",
    [{**FLASH, "blob": 64, "pages": 16, "slots": 2}, {**RRAM, "blob": 64, "pages": 40},
     {**RRAM, "blob": 61, "prog": 1, "page": 16, "pages": 100}],
    ids=["flash", "rram", "rram-p1"],
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


def _pct(a: bytes, b: bytes, n: int) -> str:
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


@pytest.mark.parametrize("geo", [FLASH, RRAM, {**RRAM, "unit": 16, "page": 64, "pages": 40}],
                         ids=["flash", "rram", "rram-unit16"])
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

    area = -(-n // lay.align) * lay.align
    slot_content = [bytes([ev]) * area for _ in range(lay.n_slots)]  # a fresh device
    report = []
    for gen, (blob, pct, c) in enumerate(zip(blobs, pcts, commits, strict=True), start=1):
        t = (gen - 1) % lay.n_slots
        assert c["slot"] == t and c["gen"] == gen
        new = blob + bytes([ev]) * (area - n)
        old = slot_content[t]
        b0, m0 = lay.blob_addr(t), lay.slot_base(t)
        progs: dict[int, int] = c["W"]  # type: ignore[assignment]
        erases: dict[int, int] = c["E"]  # type: ignore[assignment]
        blob_progs = {a: k for a, k in progs.items() if b0 <= a < b0 + area}
        meta_progs = {a: k for a, k in progs.items() if m0 <= a < b0}
        # nothing outside the target slot is touched
        assert len(blob_progs) + len(meta_progs) == len(progs)
        if g.tech == nvm.TECH_RRAM:
            p = g.prog_size
            changed = {b0 + w for w in range(0, area, p) if new[w : w + p] != old[w : w + p]}
            assert set(blob_progs) == changed
            assert all(k == 1 for k in blob_progs.values())
            assert erases == {}
            units = {(a - b0) // lay.unit_size for a in changed}
            assert c["units"] == len(units)
            report.append(f"{pct:5.1f}% of bytes vs previous set, {_pct(new, old, n)} vs target "
                          f"slot -> {len(changed)} of {area // p} words programmed")
        else:
            P = g.page_size
            changed = {b0 + q for q in range(0, area, P) if new[q : q + P] != old[q : q + P]}
            blob_erases = {a: k for a, k in erases.items() if b0 <= a < b0 + area}
            assert set(blob_erases) == changed and all(k == 1 for k in blob_erases.values())
            assert erases.get(m0) == 1  # the header page, erased once per commit
            assert set(erases) - set(blob_erases) <= set(range(m0, b0, P))
            # a page is programmed only after its erase, each word at most once
            assert all(k == 1 for k in progs.values())
            assert {a - a % P for a in blob_progs} <= changed
            assert c["units"] == len(changed)
            report.append(f"{pct:5.1f}% of bytes vs previous set, {_pct(new, old, n)} vs target "
                          f"slot -> {len(changed)} of {area // P} pages erased+programmed")
        slot_content[t] = new
    print("\n".join(report))

    # the image is byte-identical to the Python writer's, and inspects cleanly
    image = img.read_bytes()
    assert image == nvm.build_image(g, blobs)
    rep = nvm.inspect_image(img)
    assert rep.chosen == (len(blobs) - 1) % lay.n_slots
    assert rep.generation == len(blobs) and rep.blob == blobs[-1]
    assert not rep.fallback and not rep.degraded
    assert rep.wear is not None
    assert int(rep.wear[:, 1:].sum()) == sum(int(c["units"]) for c in commits)  # type: ignore[call-overload]


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
        want.append(f"life {nvm.projected_lifetime_days(e, w, s, r)}")
        td, burst = rnd.choice([1, 365, 3650, 36500]), rnd.randint(0, 100)
        rho = rnd.randint(1, 70000)
        t = nvm.budget_check(e, td, r, burst, w, s, rho)
        cmds.append(f"budget {e} {td} {r} {burst} {w} {s} {rho}")
        want.append(f"budget {int(t.allow)} {t.rho_min_q16} {t.allowed} {t.projected_days}")
    for _ in range(20):
        data = rnd.randbytes(rnd.randint(1, 300))
        p, seed = rnd.choice([0, 429_497, 2**28, 2**31, 2**32 - 1]), rnd.getrandbits(32)
        out, flips = nvm.drift_bits(data, p, seed)
        cmds.append(f"bits {p} {seed} {data.hex()}")
        want.append(f"bits {flips} {out.hex()}")
        sigma = rnd.choice([0, 1 << 10, 265_000, 4 << 16, 200 << 16])
        w8 = np.frombuffer(data, dtype=np.int8)
        got = nvm.drift_noise(w8, sigma, seed)
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
    obj = tmp_path / "lrt_nvm.o"
    subprocess.run(
        ["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
         *flags, f"-I{LIB_DIR}", "-c", str(LIB_DIR / "lrt_nvm.c"), "-o", str(obj)],
        check=True, capture_output=True, text=True)
    undef = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], check=True,
                           capture_output=True, text=True).stdout.split()
    soft_float = [s for s in undef if s.startswith(("__aeabi_f", "__aeabi_d", "__aeabi_i2f"))]
    assert soft_float == []


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

"""lrt_crc32, lrt_proto and lrt_app in C: unit cases, the >= 100k-frame fuzz harness
(ASan/UBSan), a libFuzzer run, and cross-compilation for Cortex-M."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cbuild import LIB_DIR, compile_c
from lrt import crc
from lrt.emulate import protocol as P

HERE = Path(__file__).parent
LIB_SOURCES = [LIB_DIR / "lrt_app.c", LIB_DIR / "lrt_proto.c", LIB_DIR / "lrt_crc32.c"]


def build(tmp: Path, main: str, name: str, extra: list[str] | None = None) -> Path:
    return compile_c([HERE / main, *LIB_SOURCES], tmp / name, include_dirs=[HERE], extra=extra)


def counts(stdout: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)=(\d+)$", stdout, re.M)}


@pytest.fixture(scope="module")
def bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proto")


def test_crc32_table_is_the_one_definition() -> None:
    """lrt_crc32.c's byte table, entry by entry, is lrt.crc's table of the polynomial."""
    src = (LIB_DIR / "lrt_crc32.c").read_text()
    body = src[src.index("lrt_crc32_table[256] = {"):]
    body = body[: body.index("};")]
    values = [int(v, 16) for v in re.findall(r"0x([0-9A-Fa-f]{8})u", body)]
    assert values == crc.table()
    assert crc.crc32(b"123456789") == 0xCBF43926  # the CRC-32/ISO-HDLC check value


def test_crc32_matches_the_definition(bindir: Path) -> None:
    exe = compile_c([HERE / "crc_main.c", LIB_DIR / "lrt_crc32.c"], bindir / "crc")
    rng = random.Random(5)
    cases = [b"", b"123456789", bytes(range(256)) * 9, rng.randbytes(70001)]
    for data in cases:
        for pieces in ([], ["1"], ["3", "1000", "7"]):
            out = subprocess.run([exe, *pieces], input=data, capture_output=True, check=True)
            assert int(out.stdout, 16) == crc.crc32(data), (len(data), pieces)


def test_proto_unit(bindir: Path) -> None:
    exe = build(bindir, "proto_unit.c", "proto_unit")
    out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    c = counts(out.stdout)
    assert c["failures"] == 0
    assert c["checks"] > 1000


def test_device_payload_is_the_cs(bindir: Path) -> None:
    """lrt.emulate.protocol.device_payload (what the host expects of a build) against
    lrt_app.h's LRT_APP_PAYLOAD_FOR and buffer size helper, around the minimum and the cap."""
    sizes = [1, 784, 2046, 2047, 2048, 2049, 3072, 12288, P.MAX_PAYLOAD - 1]
    src = bindir / "payload_for.c"
    src.write_text(
        '#include <stdio.h>\n#include "lrt_app.h"\nint main(void) {\n'
        + "".join(f'    printf("%u %u\\n", (unsigned)LRT_APP_PAYLOAD_FOR({n}u), '
                  f"(unsigned)LRT_APP_BUFFER_SIZE(LRT_APP_PAYLOAD_FOR({n}u)));\n" for n in sizes)
        + "    return 0;\n}\n"
    )  # fmt: skip
    exe = compile_c([src, *LIB_SOURCES], bindir / "payload_for", include_dirs=[HERE])
    rows = subprocess.run([exe], capture_output=True, text=True, check=True).stdout.splitlines()
    for n, row in zip(sizes, rows, strict=True):
        payload, buffers = map(int, row.split())
        assert payload == P.device_payload(n) and buffers == 2 * (payload + P.OVERHEAD), n


@pytest.mark.parametrize("max_payload", [2048, 256, 4000])
def test_fuzz_app(bindir: Path, max_payload: int) -> None:
    """>= 100k random/mutated frames: every bad region answered with exactly one ERROR, every
    malformed request with its ERROR, every valid request served correctly after resync
    (frames of lrt's default size, of a RAM-tight device, and longer ones for large inputs)."""
    exe = build(
        bindir, "fuzz_app.c", f"fuzz_app_{max_payload}", [f"-DDUMMY_MAX_PAYLOAD={max_payload}u"]
    )
    seed = 20240 + max_payload
    out = subprocess.run(
        [exe, str(seed), "8", "25000"], capture_output=True, text=True, timeout=120
    )
    print(out.stdout)
    assert out.returncode == 0, out.stderr[-3000:]
    c = counts(out.stdout)
    assert c["max_payload"] == max_payload
    assert c["mismatches"] == 0
    assert c["random_and_mutated"] >= 100_000
    assert c["valid_served"] == c["valid_sent"] > 50_000
    assert c["bad_request_errors"] == c["bad_requests_sent"] > 10_000
    assert c["gap_errors"] == c["gaps"] > 10_000
    assert c["corrupted_sent"] > c["gaps"]  # some regions hold several corrupted items
    assert c["replies"] == c["valid_sent"] + c["bad_requests_sent"] + c["gaps"]
    assert c["bye_rounds"] >= 1 and c["eof_rounds"] >= 1


def _libfuzzer_ok() -> bool:
    if shutil.which("clang") is None:
        return False
    probe = subprocess.run(
        ["clang", "-print-file-name=libclang_rt.fuzzer-x86_64.a"], capture_output=True, text=True
    )
    return probe.returncode == 0 and os.path.isabs(probe.stdout.strip())


@pytest.mark.skipif(not _libfuzzer_ok(), reason="clang with libFuzzer not available")
def test_libfuzzer(bindir: Path, tmp_path: Path) -> None:
    exe = bindir / "fuzz_libfuzzer"
    inc = [f"-I{LIB_DIR}", f"-I{HERE}"]
    cmd = ["clang", "-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O1"]
    cmd += ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", *inc]
    cmd += [str(HERE / "fuzz_libfuzzer.c"), *map(str, LIB_SOURCES), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    x = bytes(range(48))
    seeds = [
        P.hello_request() + P.infer_request(x) + P.train_request(x, 3),
        P.stats_request() + P.read_request(10, 100) + P.drift_request(1, 7, -3),
        b"\x00\xa5\x5a\x02\x30" + P.bye_request(),
        P.infer_request(x)[:20] + P.infer_request(x) + P.encode_frame(0x42, b"xyz"),
    ]
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(bytes([i * 17]) + seed)
    runs = 80_000
    out = subprocess.run(
        [exe, f"-runs={runs}", "-seed=1", "-max_len=4096", f"-artifact_prefix={tmp_path}/", corpus],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Done {runs} runs" in out.stderr


ARM_FLAGS = [
    ["-mcpu=cortex-m4", "-mthumb"],
    ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
    ["-mcpu=cortex-m0plus", "-mthumb"],
]


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="no arm-none-eabi-gcc")
@pytest.mark.parametrize("flags", ARM_FLAGS, ids=lambda f: f[0])
def test_arm_compile(tmp_path: Path, flags: list[str]) -> None:
    for src in LIB_SOURCES:
        cmd = ["arm-none-eabi-gcc", *flags, "-c", "-std=c99", "-Wall", "-Wextra", "-Werror"]
        cmd += ["-pedantic", "-Os", f"-I{LIB_DIR}", str(src), "-o", str(tmp_path / "x.o")]
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        # no floating point and no heap in the firmware library
        nm = subprocess.run(
            ["arm-none-eabi-nm", "-u", str(tmp_path / "x.o")], capture_output=True, text=True
        )
        undefined = set(nm.stdout.split()) - {"U"}
        assert not undefined & {"malloc", "free", "calloc", "realloc"}
        assert not any(s.startswith("__aeabi_f") or s.startswith("__aeabi_d") for s in undefined)

"""C int8 kernels (lrt_kernels.c, under ASan/UBSan) against the numpy reference (lrt.reference).

All cases of a test go to one run of tests/c/test_kernels_driver.c over stdin; the driver
answers with the return code and output bytes of every case.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from harness.cbuild import LIB_DIR, WARN, compile_c
from lrt import reference as ref

DRIVER_SRC = Path(__file__).with_name("test_kernels_driver.c")
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kernels") / "kernels_driver"
    return compile_c([DRIVER_SRC, LIB_DIR / "lrt_kernels.c"], out)


def i32s(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *[int(v) for v in values])


@dataclass
class Batch:
    """Cases for one driver run: stdin payload + how many bytes each answer has."""

    payload: list[bytes] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # output bytes after the int32 rc

    def run(self, driver: Path) -> Iterator[tuple[int, np.ndarray]]:
        proc = subprocess.run([str(driver)], input=b"".join(self.payload), capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()
        out, pos = proc.stdout, 0
        for n in self.answers:
            (rc,) = struct.unpack_from("<i", out, pos)
            data = np.frombuffer(out, dtype=np.int8, count=n, offset=pos + 4)
            pos += 4 + n
            yield rc, data
        assert pos == len(out), "driver wrote more than expected"


def rand_requant(rng: np.random.Generator, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "pow2":  # the toolchain's own models: every rescale is 2**k
        return np.full(n, 1 << 30, np.int64), rng.integers(-14, -2, n)
    if kind == "big":  # scales > 1: left shifts, outputs mostly saturate
        return rng.integers(1 << 30, 1 << 31, n), rng.integers(0, 8, n)
    if kind == "extreme":  # largest shift: the int32 left shift wraps, as in TFLite
        return np.full(n, (1 << 31) - 1, np.int64), np.full(n, 30, np.int64)
    return rng.integers(1 << 30, 1 << 31, n), rng.integers(-16, -4, n)


@dataclass
class ConvCase:
    hw: tuple[int, int]
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: str
    mult: str = "random"
    bias: str = "random"
    act: tuple[int, int] = (-128, 127)
    in_off: int | None = None  # None: random in the int8 models' range [-127, 128]


def conv_payload(rng: np.random.Generator, case: ConvCase) -> tuple[bytes, np.ndarray]:
    (h, w), (kh, kw), (sh, sw) = case.hw, case.kernel, case.stride
    oh, ow, top, _, left, _ = ref.pad_amounts(h, w, kh, kw, case.stride, case.padding)
    x = rng.integers(-128, 128, (h, w, case.c_in)).astype(np.int8)
    wts = rng.integers(-128, 128, (case.c_out, kh, kw, case.c_in)).astype(np.int8)
    mult, shift = rand_requant(rng, case.c_out, case.mult)
    bias: np.ndarray | None
    if case.bias == "none":
        bias = None
    elif case.bias == "huge":  # acc + bias wraps in int32
        bias = rng.choice([I32_MAX - 5, I32_MIN + 5], case.c_out).astype(np.int64)
    else:
        bias = rng.integers(-(1 << 16), 1 << 16, case.c_out)
    in_off, out_off = int(rng.integers(-127, 129)), int(rng.integers(-128, 128))
    if case.in_off is not None:
        in_off = case.in_off
    lo, hi = case.act
    expect = ref.conv2d_s8(
        x[None], wts, bias, mult, shift, in_off, out_off, lo, hi, case.stride, case.padding
    )[0]
    head = i32s(h, w, case.c_in, oh, ow, case.c_out, kh, kw, sh, sw, top, left,
                in_off, out_off, lo, hi, bias is not None)
    body = i32s(*mult) + i32s(*shift) + (i32s(*bias) if bias is not None else b"")
    return i32s(1) + head + body + x.tobytes() + wts.tobytes(), expect


CONV_CASES = [
    ConvCase((8, 8), 3, 4, (3, 3), (1, 1), "valid"),
    ConvCase((8, 8), 3, 4, (3, 3), (1, 1), "same"),
    ConvCase((9, 7), 2, 5, (3, 3), (2, 2), "same"),  # odd sizes, stride 2
    ConvCase((8, 8), 4, 3, (3, 3), (2, 2), "same"),  # even size: extra pad row after
    ConvCase((10, 10), 2, 3, (4, 4), (2, 2), "same"),  # even kernel: asymmetric padding
    ConvCase((11, 6), 3, 2, (5, 3), (3, 2), "valid"),
    ConvCase((6, 6), 1, 8, (1, 1), (1, 1), "valid"),
    ConvCase((7, 7), 2, 3, (3, 3), (1, 1), "same", mult="pow2"),
    ConvCase((7, 7), 2, 3, (3, 3), (2, 2), "same", mult="pow2", bias="none"),
    ConvCase((6, 6), 3, 4, (3, 3), (1, 1), "valid", mult="big"),
    ConvCase((5, 5), 2, 2, (3, 3), (1, 1), "same", mult="extreme"),
    ConvCase((6, 6), 2, 4, (3, 3), (1, 1), "valid", bias="huge"),
    ConvCase((8, 8), 3, 4, (3, 3), (1, 1), "same", act=(-20, 17)),
    ConvCase((3, 3), 2, 2, (3, 3), (2, 2), "same"),  # one output pixel with clipped taps
    # multiples of 8 output channels: the host's by-channel path (windows read in place,
    # windows cut by padding through a zero-point patch), and one too big for it
    ConvCase((9, 7), 3, 8, (3, 3), (1, 1), "same"),
    ConvCase((10, 10), 5, 16, (4, 4), (2, 2), "same"),  # odd taps per row, asymmetric pad
    ConvCase((8, 8), 8, 16, (3, 3), (1, 1), "valid", bias="huge"),
    ConvCase((7, 7), 1, 8, (3, 3), (2, 2), "same", mult="pow2", bias="none"),
    ConvCase((6, 6), 64, 16, (3, 3), (1, 1), "same"),  # 576 taps x 16 channels: dot products
    # the host's patch path takes output pixels in pairs: odd widths leave a last pixel alone,
    # with four channels at a time and with a remainder of two
    ConvCase((7, 9), 4, 12, (3, 3), (1, 1), "valid"),
    ConvCase((6, 7), 3, 6, (3, 3), (1, 1), "same"),
    ConvCase((2, 2), 1, 2048, (1, 1), (1, 1), "valid"),  # one tap, more channels than taps
    ConvCase((6, 6), 2, 8, (3, 3), (1, 1), "same", in_off=-255),  # no int8 zero point
    ConvCase((6, 6), 2, 8, (3, 3), (1, 1), "same", in_off=255),
]


def test_conv2d_matches_reference(driver: Path) -> None:
    rng = np.random.default_rng(1)
    batch, expects = Batch(), []
    for case in CONV_CASES:
        for _ in range(3):
            payload, expect = conv_payload(rng, case)
            batch.payload.append(payload)
            batch.answers.append(expect.size)
            expects.append((case, expect))
    saturated = 0
    for (rc, got), (case, expect) in zip(batch.run(driver), expects, strict=True):
        assert rc == 0
        assert np.array_equal(got.reshape(expect.shape), expect), case
        saturated += int(np.sum((expect == case.act[0]) | (expect == case.act[1])))
    assert saturated > 0  # the clamp was exercised


def dense_payload(
    rng: np.random.Generator, n_in: int, n_out: int, mult_kind: str, bias_kind: str,
    act: tuple[int, int] = (-128, 127),
) -> tuple[bytes, np.ndarray]:
    x = rng.integers(-128, 128, n_in).astype(np.int8)
    wts = rng.integers(-128, 128, (n_out, n_in)).astype(np.int8)
    mult, shift = rand_requant(rng, n_out, mult_kind)
    bias: np.ndarray | None = None
    if bias_kind == "huge":
        bias = rng.choice([I32_MAX - 3, I32_MIN + 3], n_out).astype(np.int64)
    elif bias_kind == "random":
        bias = rng.integers(-(1 << 16), 1 << 16, n_out)
    in_off, out_off = int(rng.integers(-127, 129)), int(rng.integers(-128, 128))
    expect = ref.dense_s8(x[None], wts, bias, mult, shift, in_off, out_off, *act)[0]
    head = i32s(n_in, n_out, in_off, out_off, act[0], act[1], bias is not None)
    body = i32s(*mult) + i32s(*shift) + (i32s(*bias) if bias is not None else b"")
    return i32s(2) + head + body + x.tobytes() + wts.tobytes(), expect


def test_dense_matches_reference(driver: Path) -> None:
    rng = np.random.default_rng(2)
    batch, expects = Batch(), []
    for n_in, n_out, mk, bk, act in [
        (1, 1, "random", "random", (-128, 127)),
        (16, 10, "random", "random", (-128, 127)),
        (200, 33, "random", "none", (-128, 127)),
        (64, 12, "pow2", "random", (-128, 127)),
        (64, 12, "big", "random", (-128, 127)),
        (32, 4, "extreme", "random", (-128, 127)),
        (32, 8, "random", "huge", (-128, 127)),
        (48, 16, "random", "random", (-5, 90)),
    ]:
        for _ in range(4):
            payload, expect = dense_payload(rng, n_in, n_out, mk, bk, act)
            batch.payload.append(payload)
            batch.answers.append(expect.size)
            expects.append(expect)
    for (rc, got), expect in zip(batch.run(driver), expects, strict=True):
        assert rc == 0
        assert np.array_equal(got, expect)


def test_maxpool_matches_reference(driver: Path) -> None:
    rng = np.random.default_rng(3)
    batch, expects = Batch(), []
    for hw, c, pool, stride, padding, act in [
        ((8, 8), 3, (2, 2), (2, 2), "valid", (-128, 127)),
        ((7, 9), 2, (2, 2), (2, 2), "valid", (-128, 127)),  # odd: last row/col dropped
        ((7, 9), 2, (2, 2), (2, 2), "same", (-128, 127)),  # odd: padded taps ignored
        ((9, 9), 4, (3, 3), (2, 2), "same", (-128, 127)),
        ((6, 6), 1, (3, 3), (1, 1), "same", (-128, 127)),
        ((6, 5), 2, (2, 3), (1, 2), "valid", (-128, 127)),
        ((8, 8), 3, (2, 2), (2, 2), "valid", (-30, 40)),
    ]:
        h, w = hw
        oh, ow, top, _, left, _ = ref.pad_amounts(h, w, pool[0], pool[1], stride, padding)
        x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
        expect = ref.maxpool2d_s8(x[None], pool, stride, padding, *act)[0]
        head = i32s(h, w, c, oh, ow, *pool, *stride, top, left, *act)
        batch.payload.append(i32s(3) + head + x.tobytes())
        batch.answers.append(expect.size)
        expects.append(expect)
    for (rc, got), expect in zip(batch.run(driver), expects, strict=True):
        assert rc == 0
        assert np.array_equal(got.reshape(expect.shape), expect)


def run_scalar(driver: Path, fn: int, triples: np.ndarray) -> np.ndarray:
    payload = i32s(4, fn, len(triples)) + np.asarray(triples, dtype="<i4").tobytes()
    proc = subprocess.run([str(driver)], input=payload, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return np.frombuffer(proc.stdout, dtype="<i4").astype(np.int64)


def test_rounding_primitives_known_values(driver: Path) -> None:
    """Values worked out by hand from the gemmlowp / TFLite definitions."""
    # RoundingDivideByPOT: round half away from zero, also for negative ties.
    rdbpot = [(-5, 1, -3), (-3, 1, -2), (5, 1, 3), (-12, 3, -2), (-4, 3, -1), (4, 3, 1),
              (-11, 3, -1), (-13, 3, -2), (7, 0, 7), (I32_MIN, 31, -1), (I32_MAX, 31, 1),
              (-(2**30), 31, -1), (2**30 - 1, 31, 0)]
    got = run_scalar(driver, 1, np.array([(x, e, 0) for x, e, _ in rdbpot]))
    assert got.tolist() == [r for *_, r in rdbpot]
    # SaturatingRoundingDoublingHighMul: round(a*b / 2**31), ties up; saturates INT32_MIN^2.
    srdhm = [(I32_MIN, I32_MIN, I32_MAX), (2**30, 2**30, 2**29), (3, 2**30, 2), (-3, 2**30, -1),
             (I32_MAX, I32_MAX, I32_MAX - 1), (I32_MIN, I32_MAX, I32_MIN + 1), (0, 12345, 0)]
    got = run_scalar(driver, 0, np.array([(a, b, 0) for a, b, _ in srdhm]))
    assert got.tolist() == [r for *_, r in srdhm]
    # x * 0.25 (multiplier 2**30, shift -1): the double rounding of TFLite rounds 1 * 0.25 to 1
    # (0.5 -> 1, then 0.5 -> 1); "away" rounds once: 0.25 -> 0, -1.5 -> -2, 1.5 -> 2.
    xs = [1, -1, 2, -2, 3, -3, 5, -5, 6, -6]
    got_d = run_scalar(driver, 2, np.array([(x, 2**30, -1) for x in xs]))
    assert got_d.tolist() == [1, 0, 1, -1, 1, -1, 2, -1, 2, -2]
    got_a = run_scalar(driver, 3, np.array([(x, 2**30, -1) for x in xs]))
    assert got_a.tolist() == [0, 0, 1, -1, 1, -1, 1, -1, 2, -2]
    # saturation of the single-rounding path: 2**31 * ~2**7 does not fit int32
    got_s = run_scalar(driver, 3, np.array([(I32_MAX, I32_MAX, 7), (I32_MIN, I32_MAX, 7)]))
    assert got_s.tolist() == [I32_MAX, I32_MIN]


def test_rounding_primitives_random(driver: Path) -> None:
    rng = np.random.default_rng(4)
    n = 20000
    edges = np.array([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX], dtype=np.int64)
    a = np.concatenate([rng.integers(I32_MIN, I32_MAX, n, endpoint=True), np.repeat(edges, 7)])
    b = np.concatenate([rng.integers(I32_MIN, I32_MAX, n, endpoint=True), np.tile(edges, 7)])
    got = run_scalar(driver, 0, np.stack([a, b, 0 * a], 1))
    assert np.array_equal(got, ref.saturating_rounding_doubling_high_mul(a, b))

    e = rng.integers(0, 32, a.size)
    # half of them exact negative ties: x = -(2k + 1) * 2**(e - 1)
    ties = -(2 * rng.integers(0, 1 << 10, a.size) + 1) << np.maximum(e - 1, 0)
    x = np.where((np.arange(a.size) % 2 == 0) & (e > 0) & (e < 21), ties, a)
    got = run_scalar(driver, 1, np.stack([x, e, 0 * x], 1))
    assert np.array_equal(got, ref.rounding_divide_by_pot(x, e))

    m = rng.integers(0, 1 << 31, a.size)
    s = rng.integers(-31, 31, a.size)
    roundings: list[tuple[int, ref.Rounding]] = [(2, "double"), (3, "away")]
    for fn, rounding in roundings:
        got = run_scalar(driver, fn, np.stack([a, m, s], 1))
        assert np.array_equal(got, ref.multiply_by_quantized_multiplier(a, m, s, rounding))
        # power-of-two scales (multiplier 2**30) take the kernels' shortcut: the same bits
        pow2 = np.full(a.size, 1 << 30)
        got = run_scalar(driver, fn, np.stack([a, pow2, s], 1))
        assert np.array_equal(got, ref.multiply_by_quantized_multiplier(a, pow2, s, rounding))
        # ... and the edges where no later division hides an off-by-one (shift 0 and -1)
        xe, se = np.repeat(edges, 2), np.tile([0, -1], edges.size)
        pe = np.full(xe.size, 1 << 30)
        got = run_scalar(driver, fn, np.stack([xe, pe, se], 1))
        assert np.array_equal(got, ref.multiply_by_quantized_multiplier(xe, pe, se, rounding))


def test_invalid_arguments_are_refused(driver: Path) -> None:
    proc = subprocess.run([str(driver)], input=i32s(5), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    codes = np.frombuffer(proc.stdout, dtype="<i4").tolist()
    ok, arg = 0, -1  # LRT_OK, LRT_ERR_ARG
    assert codes == [ok] + [arg] * 8 + [ok] + [arg] * 3 + [ok] + [arg] * 4


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="no arm-none-eabi-gcc")
@pytest.mark.parametrize("cpu", [["-mcpu=cortex-m4", "-mthumb"],
                                 ["-mcpu=cortex-m4", "-mthumb", "-DLRT_KERNELS_SIMD=1"],
                                 ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"]])
def test_cortex_m_build_needs_no_runtime_helpers(tmp_path: Path, cpu: list[str]) -> None:
    """Strict flags on ARM, and no libgcc calls: no float emulation, no 64-bit division
    (the C library's memcpy/memset are fine)."""
    obj = tmp_path / "k.o"
    cmd = ["arm-none-eabi-gcc", *WARN, "-O2", *cpu, f"-I{LIB_DIR}", "-c",
           str(LIB_DIR / "lrt_kernels.c"), "-o", str(obj)]
    subprocess.run(cmd, check=True, capture_output=True)
    nm = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], check=True, capture_output=True,
                        text=True)
    assert set(nm.stdout.split()) - {"U"} <= {"memcpy", "memset"}
    net = tmp_path / "n.o"
    cmd[-3:] = [str(LIB_DIR / "lrt_net.c"), "-o", str(net)]
    subprocess.run(cmd, check=True, capture_output=True)
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(net)], check=True,
                               capture_output=True, text=True).stdout.split()
    assert set(undefined) - {"U"} <= {"memcpy", "lrt_conv2d_s8_buf", "lrt_dense_s8",
                                        "lrt_conv2d_s8_get_buffer_size", "lrt_isqrt64",
                                        "lrt_maxpool2d_s8", "lrt_channel_affine_s8"}

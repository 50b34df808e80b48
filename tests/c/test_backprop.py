"""Backward kernels of lrt_backprop.c against numpy, under ASan/UBSan.

Integer results (weight/bias gradients, input gradient before and after the block-float
requantization, patches, the paper's per-pixel write counts, max-pool routing) are exact, so
they are compared exactly against an independent numpy formulation (im2col products and the
scatter adjoint instead of the C code's per-cell gathers). The softmax gradient and the
max-norm divisor are approximations and are compared with float64 at tight tolerances.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.backprop import (
    Reader,
    bfp_quantize,
    build_driver,
    im2col,
    input_grad_exact,
    net_bytes,
    pool_layer,
    run_driver,
    weight_layer,
)
from harness.cbuild import LIB_DIR
from lrt.model import Layer


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory.mktemp("bp"))


def _run_layer(driver: Path, tmp: Path, layer: Layer, x: np.ndarray, y: np.ndarray,
               g: np.ndarray, g_exp: int) -> Reader:  # fmt: skip
    net = tmp / f"{layer.name}.bin"
    net.write_bytes(net_bytes([layer], layer.in_shape, int(np.prod(layer.out_shape))))
    stdin = (
        x.astype(np.int8).tobytes() + y.astype(np.int8).tobytes() + g.astype(np.int8).tobytes()
        + np.array([g_exp], "<i4").tobytes()
    )  # fmt: skip
    return Reader(run_driver(driver, net, ["layer", "0"], stdin))


LAYERS: list[dict[str, Any]] = [
    {"kind": "conv2d", "in_shape": (9, 9, 3), "out_c": 4},
    {"kind": "conv2d", "in_shape": (7, 6, 2), "out_c": 5, "padding": "same"},
    {"kind": "conv2d", "in_shape": (9, 8, 3), "out_c": 3, "padding": "same", "stride": 2},
    {"kind": "conv2d", "in_shape": (11, 10, 2), "out_c": 3, "kernel": 5, "stride": 2},
    {"kind": "conv2d", "in_shape": (6, 6, 16), "out_c": 16},
    {"kind": "dense", "in_shape": (40,), "out_c": 12},
    {"kind": "dense", "in_shape": (3, 3, 4), "out_c": 7},  # no flatten before it
    {"kind": "dense", "in_shape": (33,), "out_c": 10, "relu": False},  # logits
]


@pytest.mark.parametrize("cfg", LAYERS, ids=lambda c: f"{c['kind']}{c['in_shape']}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_layer_backward(
    driver: Path, tmp_path: Path, cfg: dict[str, Any], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    kw = {k: v for k, v in cfg.items() if k not in ("kind", "in_shape", "out_c")}
    layer = weight_layer(rng, cfg["kind"], "l", cfg["in_shape"], cfg["out_c"], **kw)
    assert layer.weights is not None
    n = int(layer.weights.shape[0])
    in_size, out_size = int(np.prod(layer.in_shape)), int(np.prod(layer.out_shape))
    x = rng.integers(-128, 128, in_size)
    x[rng.random(in_size) < 0.3] = layer.input_q.zero_point  # ReLU zeros: no paper write
    y = rng.integers(-128, 128, out_size)
    y[rng.random(out_size) < 0.2] = -128  # clamp bounds block the gradient
    y[rng.random(out_size) < 0.1] = 127
    g = rng.integers(-127, 128, out_size)
    g[rng.random(out_size) < 0.1] = 0
    if seed == 2:
        # gradients growing down the output rows: the one-pass store has to rescale the
        # rows it already holds as the running max grows
        rows = np.arange(out_size) // (out_size // int(layer.out_shape[0]) or 1)
        g = g * (rows + 1) // (int(np.max(rows)) + 1) // (1 + 15 * (rows < max(1, rows.max())))
    g_exp = int(rng.integers(-20, -5))
    r = _run_layer(driver, tmp_path, layer, x, y, g, g_exp)

    # clipped straight-through estimator: strictly inside (act_min, act_max)
    dz = np.where((y > layer.act_min) & (y < layer.act_max), g, 0)
    assert r.int32() == np.count_nonzero(dz)
    np.testing.assert_array_equal(r.s8(out_size), dz)

    # input gradient: exact sums (scatter adjoint), then block float
    exact = input_grad_exact(layer, dz)
    q, s = bfp_quantize(exact)
    dx_exp = r.int32()
    dx = r.s8(in_size)
    assert dx_exp == g_exp + layer.weight_exp + s  # type: ignore[operator]
    np.testing.assert_array_equal(dx, q)
    assert r.int32() == dx_exp  # the one-pass sparse kernel: the same bits
    np.testing.assert_array_equal(r.s8(in_size), q)
    if np.any(exact):
        assert 64 <= np.max(np.abs(dx)) <= 127 or s == 0  # the range is used
        # vs float: dequantized within half an LSB of the float product
        real = exact * 2.0 ** (g_exp + layer.weight_exp)  # type: ignore[operator]
        assert np.all(np.abs(dx * 2.0**dx_exp - real) <= 2.0 ** (dx_exp - 1))

    # weight gradient: sum over pixels of dz_p (x) (patch_p - zp), and the paper's counts
    cols = im2col(layer, x)  # [pixels, m]
    a = cols - layer.input_q.zero_point
    dzp = dz.reshape(-1, n).astype(np.int64)
    m = cols.shape[1]
    np.testing.assert_array_equal(r.arr32(n * m).reshape(n, m), dzp.T @ a)
    np.testing.assert_array_equal(
        r.arr32(n * m).reshape(n, m), (dzp != 0).T.astype(np.int64) @ (a != 0)
    )
    bias = r.arr32(2 * n).reshape(n, 2)
    np.testing.assert_array_equal(bias[:, 0], dzp.sum(axis=0))
    np.testing.assert_array_equal(bias[:, 1], np.any(dzp != 0, axis=0))
    if layer.kind == "conv2d":
        np.testing.assert_array_equal(r.s8(cols.size).reshape(cols.shape), cols)
    assert r.done()


def test_maxpool_backward_routes_to_first_max(driver: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    layer = pool_layer("p", (8, 6, 5))
    x = rng.integers(-128, -124, 8 * 6 * 5)  # few levels: many ties
    g = rng.integers(-127, 128, 4 * 3 * 5)
    r = _run_layer(driver, tmp_path, layer, x, np.zeros(60), g, -9)
    got = r.s8(x.size).reshape(8, 6, 5)
    want = np.zeros((8, 6, 5), dtype=np.int64)
    xs = x.reshape(8, 6, 5)
    for oy in range(4):
        for ox in range(3):
            for c in range(5):
                win = xs[2 * oy : 2 * oy + 2, 2 * ox : 2 * ox + 2, c].reshape(-1)
                k = int(np.argmax(win))  # first maximum in row-major order
                want[2 * oy + k // 2, 2 * ox + k % 2, c] += g[(oy * 3 + ox) * 5 + c]
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(got) == np.count_nonzero(g)


def _softmax(
    driver: Path, logits: np.ndarray, label: int, exp: int
) -> tuple[int, np.ndarray, np.ndarray]:
    stdin = (
        np.array([len(logits), 0, exp, label], "<i4").tobytes() + logits.astype(np.int8).tobytes()
    )
    r = Reader(run_driver(driver, "-", ["softmax"], stdin))
    assert r.int32() == 0
    dz_exp = r.int32()
    dz = r.s8(len(logits))
    prob = r.arr32(len(logits))
    return dz_exp, dz, prob


@pytest.mark.parametrize("exp", [-4, -3, -6])
def test_softmax_xent_gradient(driver: Path, exp: int) -> None:
    rng = np.random.default_rng(exp + 100)
    cases = [rng.integers(-128, 128, 10) for _ in range(30)]
    cases += [rng.integers(-20, 20, 10), np.full(10, 5), np.array([127] + [-128] * 9)]
    cases += [np.array([-128] * 9 + [127]), rng.integers(-128, 128, 3), rng.integers(-5, 5, 64)]
    for i, q in enumerate(cases):
        label = int(rng.integers(0, len(q)))
        if i == len(cases) - 4:
            label = 0  # correct and confident: tiny gradient, must not vanish
        z = q.astype(np.float64) * 2.0**exp
        p = np.exp(z - z.max())
        p /= p.sum()
        want = p.copy()
        want[label] -= 1.0
        dz_exp, dz, prob = _softmax(driver, q, label, exp)
        got = dz * 2.0**dz_exp
        peak = np.max(np.abs(want))
        assert 64 <= np.max(np.abs(dz)) <= 127, (q, dz)  # block float uses the int8 range
        # half an LSB of rounding + the exp table's relative error (< 1e-4)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2.0 ** (dz_exp - 1) * 1.001)
        assert peak / 2.0**dz_exp <= 127.5
        np.testing.assert_allclose(prob / 32768.0, p, atol=1.5 / 32768 + 2e-4 * p.max())
        assert dz[label] <= 0 and np.all(np.delete(dz, label) >= 0)


def test_softmax_rejects_bad_label(driver: Path) -> None:
    stdin = np.array([4, 0, -4, 4], "<i4").tobytes() + bytes(4)
    r = Reader(run_driver(driver, "-", ["softmax"], stdin))
    assert r.int32() == -1  # LRT_ERR_ARG


def test_maxnorm_matches_float_reference(driver: Path) -> None:
    """The pseudo-float max-norm vs the paper's formula in float64 (beta 0.999, eps 1e-4)."""
    rng = np.random.default_rng(7)
    n = 400
    mant = rng.integers(1, 2**31 - 1, n)
    exps = rng.integers(-45, -25, n)
    exps[100:140] = -60  # tiny maxima: eps and the running average dominate
    beta_q30 = round(0.999 * 2**30)
    stdin = np.array([n, beta_q30], "<i4").tobytes()
    stdin += np.stack([mant, exps], axis=1).astype("<i4").tobytes()
    r = Reader(run_driver(driver, "-", ["maxnorm"], stdin))
    out = r.arr32(2 * n).reshape(n, 2)
    got = (out[:, 0] & 0xFFFFFFFF).astype(np.float64) * 2.0 ** out[:, 1].astype(np.float64)
    beta, eps, mv = beta_q30 / 2**30, 1e-4, 1e-4
    want = []
    for k in range(1, n + 1):
        x_max = float(mant[k - 1]) * 2.0 ** float(exps[k - 1]) + eps
        mv = beta * mv + (1 - beta) * x_max
        want.append(max(x_max, mv / (1 - beta**k)))
    np.testing.assert_allclose(got, np.array(want), rtol=1e-6)


MY_LIB = ["lrt_backprop.c", "lrt_train.c", "lrt_policy.c", "lrt_wstore.c"]
ARM_FLAGS = {
    "cortex-m3": ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb"],
}


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("cpu", sorted(ARM_FLAGS))
@pytest.mark.parametrize("src", MY_LIB)
def test_lib_compiles_for_cortex_m_without_floats(tmp_path: Path, cpu: str, src: str) -> None:
    obj = tmp_path / (src + ".o")
    cmd = ["arm-none-eabi-gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
           *ARM_FLAGS[cpu], f"-I{LIB_DIR}", "-c", str(LIB_DIR / src), "-o", str(obj)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    nm = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True)
    undefined = nm.stdout.split()
    # soft-float helpers (__aeabi_fadd, __aeabi_dmul, __aeabi_i2d, ...) would mean float code
    floats = [s for s in undefined if re.match(r"__aeabi_(f|d|[iu]2[fd]|l2[fd]|ul2[fd])", s)]
    assert not floats, f"{src} uses floating point: {floats}"
    text = (LIB_DIR / src).read_text()
    assert not re.search(r"\b(float|double)\b", re.sub(r"/\*.*?\*/", "", text, flags=re.S))


def test_ram_wstore_transactions(driver: Path) -> None:
    """begin/write/commit states, bounds (incl. offset + len wrap-around) and abort."""
    r = Reader(run_driver(driver, "-", ["wstore"]))
    assert r.int32() == 0

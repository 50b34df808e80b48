"""Streaming batch norm in C (lrt_net.c, lrt_backprop.c, lrt_train.c under ASan/UBSan)
against its Python twin (lrt.batchnorm, lrt.reference).

* forward tables: lrt_net_bn_refresh == lrt.batchnorm.derive on random and extreme states;
* streaming: over a run of training samples (lr 0), every sample's logits equal the numpy
  reference forward of the state at that sample, and the state after each sample equals
  lrt.batchnorm.update_stats applied to the sample's batch-norm input;
* gamma/beta: one step moves them by -lr * gradient (gradient from the grads mode);
  frozen layers and frozen statistics stay put; commits snapshot the state into the blob.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from harness.backprop import (
    Reader,
    _act_q,
    blob_layout,
    bn_layer,
    build_driver,
    random_preset_model,
    run_driver,
    write_net,
)
from lrt import batchnorm
from lrt import reference as ref
from lrt.model import Layer, Model, QParams

SCHEME_BIAS, SCHEME_LRT = 1, 3


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory.mktemp("bn"))


def read_bn(r: Reader, c: int) -> dict[str, np.ndarray | int]:
    """One write_bn record of bp_driver.c."""
    out: dict[str, np.ndarray | int] = {k: r.arr32(c) for k in ("gamma", "beta", "mean", "msq")}
    out["pow"] = r.int32() & 0xFFFFFFFF
    tab = r.arr32(5 * c).reshape(c, 5)
    for k, name in enumerate(("w", "shift", "bias", "mu", "std_q")):
        out[name] = tab[:, k] if name != "std_q" else tab[:, k] & 0xFFFFFFFF
    return out


def tables_of(layer: Layer) -> dict[str, np.ndarray]:
    t = batchnorm.layer_tables(layer)
    return {"w": t.w, "shift": t.shift, "bias": t.bias, "mu": t.mu, "std_q": t.std_q}


def bn_chain(states: list[tuple[np.ndarray, ...]], exps: list[tuple[int, int]]) -> Model:
    """A model of batch-norm layers only (1 x 1 x C), one per state (bntables mode)."""
    layers = []
    for i, ((g, b, m, s, p), (ie, oe)) in enumerate(zip(states, exps, strict=True)):
        c = len(g)
        layer = Layer(
            kind="batchnorm", name=f"bn{i}", in_shape=(1, 1, c), out_shape=(1, 1, c),
            input_q=QParams(2.0**ie, -128, ie), output_q=QParams(2.0**oe, 0, oe),
            bn_gamma=g.astype(np.int32), bn_beta=b.astype(np.int32),
            bn_mean=m.astype(np.int32), bn_msq=s.astype(np.int32), bn_pow_q30=int(p),
        )  # fmt: skip
        layers.append(layer)
    c = len(states[0][0])
    return Model("bnchain", (1, 1, c), _act_q(), c, layers)


def test_refresh_matches_python(driver: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    c = 64
    states, exps = [], []
    for k in range(12):
        gamma = rng.integers(-32768, 32768, c)
        gamma[:4] = [0, 1, -1, 32767]  # zero gain, the smallest, the saturated ones
        beta = rng.integers(-32768, 32768, c)
        mean = rng.integers(-(1 << 24), 1 << 24, c)
        msq = rng.integers(0, 1 << 24, c)
        msq[4:8] = 0  # variance below zero (inconsistent state): clamped to eps
        if k % 3 == 0:  # consistent statistics of plausible activations
            mu = rng.uniform(0, 255, c)
            sd = np.exp(rng.uniform(np.log(0.01), np.log(100), c))
            mean = np.round(mu * 2**16)
            msq = np.round((mu * mu + sd * sd) * 2**8)
        pow_q30 = [0, 1 << 30, (1 << 30) - 1, int(rng.integers(0, 1 << 30))][k % 4]
        states.append((gamma, beta, mean, msq, pow_q30))
        exps.append([(-7, -6), (-4, -5), (-12, -14), (3, 5)][k % 4])
    model = bn_chain(states, exps)
    r = Reader(run_driver(driver, write_net(tmp_path / "net.bin", model), ["bntables"]))
    shifts = set()
    for lay in model.layers:
        got = read_bn(r, c)
        want = tables_of(lay)
        for key, val in want.items():
            assert np.array_equal(got[key], val), (lay.name, key)
        shifts |= set(want["shift"].tolist())
    assert r.done()
    assert min(shifts) == batchnorm.F_MIN + 1 and max(shifts) == batchnorm.F_MAX + 1


def test_tables_encode_the_affine() -> None:
    """The integer tables approximate gamma (x - mu) / std + beta in output LSBs."""
    rng = np.random.default_rng(1)
    c = 200
    mu = rng.uniform(0, 200, c)
    sd = rng.uniform(3, 60, c)
    gamma = np.round(rng.uniform(-3, 3, c) * 4096)
    beta = np.round(rng.normal(0, 0.5, c) * 4096)
    t = batchnorm.derive(
        gamma, beta, np.round(mu * 2**16), np.round((mu * mu + sd * sd) * 2**8), 0, -7, -6
    )
    x = np.arange(256)[:, None]  # x_int
    real_std = np.sqrt(sd * sd + 2.0**-10 * 2**14)  # eps = 2**-10 real = 16 input LSBs**2
    gain_term = gamma / 4096 * (x - mu) / real_std / 2**-6
    want = gain_term + beta / 4096 / 2**-6
    got = (x * t.w + t.bias.astype(np.int64)) * 2.0 ** t.f.astype(np.float64)
    # an 8-bit gain mantissa >= 64: relative error <= 1/128 of the gain term, plus rounding
    assert np.all(np.abs(got - want) <= np.abs(gain_term) / 120 + 0.5)
    assert np.all(np.abs(t.w[np.abs(gamma) > 100]) >= 64)  # normalised mantissas


def train_run(
    driver: Path, tmp: Path, model: Model, x: np.ndarray, y: np.ndarray, scheme: int,
    lr_q16: int, max_norm: int = 0, flush_every: int = 0, batch: int = 10,
) -> tuple[np.ndarray, list[dict[str, np.ndarray | int]], bytes]:
    """bp_driver train: per-sample logits, final batch-norm records, final blob."""  # fmt: skip
    net = write_net(tmp / "net.bin", model, bn_batch=batch)
    stdin = np.array([len(x)], "<i4").tobytes()
    for xi, yi in zip(x, y, strict=True):
        stdin += xi.astype(np.int8).tobytes() + np.array([yi], "<i4").tobytes()
    args = ["train", str(scheme), str(max_norm), str(lr_q16), "0", str(flush_every)]
    r = Reader(run_driver(driver, net, args, stdin))
    logits = []
    for _ in range(len(x)):
        logits.append(r.s8(model.num_classes))
        r.int32()
    n_layers = len(model.layers)
    r.pos += 24 + n_layers * (4 + 8 + 4 + 8 + 4 + 4 + 4 + 4)  # stats, LRT blocks, mismatches
    payload_len = r.int32()
    r.pos += payload_len
    size = blob_layout(model.layers)[2]
    blob = r.data[r.pos : r.pos + size]
    r.pos += size
    for lay in model.weight_layers():
        r.pos += 4 * int(lay.out_shape[-1])
    bns = [read_bn(r, int(lay.out_shape[-1])) for lay in model.layers if lay.kind == "batchnorm"]
    cells = r.int32()
    assert cells >= 0 and r.done()
    return np.stack(logits), bns, blob


def replay(model: Model, x: np.ndarray, batch: int) -> tuple[np.ndarray, Model]:
    """Python twin of the streaming statistics at lr 0: per-sample logits, final model."""
    m = copy.deepcopy(model)
    logits = []
    for xi in x:
        outs = ref.forward_int8_layers(m, xi[None])
        logits.append(outs[-1][0])
        for i, lay in enumerate(m.layers):
            if lay.kind == "batchnorm":
                assert lay.bn_mean is not None and lay.bn_msq is not None
                mean, msq, p = batchnorm.update_stats(
                    lay.bn_mean, lay.bn_msq, int(lay.bn_pow_q30 or 0), outs[i - 1][0],
                    lay.input_q.zero_point, batch,
                )  # fmt: skip
                lay.bn_mean, lay.bn_msq = mean.astype(np.int32), msq.astype(np.int32)
                lay.bn_pow_q30 = p
    return np.stack(logits), m


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    from lrt.data import load_dataset

    ds = load_dataset("mnist5k", seed=0)
    model = random_preset_model("mcu-bn", seed=2)
    return model.quantize_input(ds.x_online[:24]), ds.y_online[:24]


@pytest.mark.parametrize("fresh", [False, True], ids=["warm", "from-scratch"])
def test_streaming_statistics_match_python(
    driver: Path, tmp_path: Path, samples: tuple[np.ndarray, np.ndarray], fresh: bool
) -> None:
    x, y = samples
    model = random_preset_model("mcu-bn", seed=2)
    if fresh:  # no statistics yet: bias correction 1 - eta**step from the first sample
        for lay in model.layers:
            if lay.kind == "batchnorm":
                assert lay.bn_mean is not None and lay.bn_msq is not None
                lay.bn_mean, lay.bn_msq = np.zeros_like(lay.bn_mean), np.zeros_like(lay.bn_msq)
                lay.bn_pow_q30 = 1 << 30
    batch = 7
    logits, bns, _ = train_run(driver, tmp_path, model, x, y, SCHEME_BIAS, 0, batch=batch)
    want_logits, want = replay(model, x, batch)
    assert np.array_equal(logits, want_logits)
    assert len(np.unique(np.argmax(want_logits, axis=1))) > 1
    for got, lay, lay0 in zip(
        bns, [la for la in want.layers if la.kind == "batchnorm"],
        [la for la in model.layers if la.kind == "batchnorm"], strict=True,
    ):  # fmt: skip
        assert np.array_equal(got["mean"], lay.bn_mean)
        assert np.array_equal(got["msq"], lay.bn_msq)
        assert got["pow"] == lay.bn_pow_q30
        assert not np.array_equal(lay.bn_mean, lay0.bn_mean)  # the statistics moved
        assert np.array_equal(got["gamma"], lay0.bn_gamma)  # lr 0: affine unchanged
        for key, val in tables_of(lay).items():
            assert np.array_equal(got[key], val), key
    if fresh:
        assert bns[0]["pow"] < (1 << 30) * 0.9 ** (len(x) - 1)


def grads_run(driver: Path, tmp: Path, model: Model, x: np.ndarray, y: int) -> dict[int, tuple]:
    """bp_driver grads for one sample: {layer index: (dz_exp, gamma sums, std_q, beta sums)}
    of the batch-norm layers."""
    net = write_net(tmp / "g.bin", model)
    stdin = np.array([1], "<i4").tobytes() + x.astype(np.int8).tobytes()
    stdin += np.array([y], "<i4").tobytes()
    r = Reader(run_driver(driver, net, ["grads"], stdin))
    r.s8(model.num_classes)
    r.int32()
    out = {}
    while True:
        li = r.int32()
        if li == -1:
            break
        lay = model.layers[li]
        if lay.kind == "batchnorm":
            e, n = r.int32(), r.int32()
            rec = r.arr32(4 * n).reshape(n, 4)
            tg = (rec[:, 0] & 0xFFFFFFFF) | (rec[:, 1] << 32)
            out[li] = (e, tg, rec[:, 2] & 0xFFFFFFFF, rec[:, 3])
        else:
            r.int32(), r.int32()
            n, m = r.int32(), r.int32()
            r.arr32(n * m + n)
    assert r.done()
    return out


def test_gamma_beta_step(
    driver: Path, tmp_path: Path, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    """One sample with lr: gamma and beta move by -lr * their gradient (+-1 LSB rounding)."""
    x, y = samples
    model = random_preset_model("mcu-bn", seed=2)
    grads = grads_run(driver, tmp_path, model, x[0], int(y[0]))
    assert grads, "no batch-norm gradients reported"
    lr_q16 = 6554  # 0.1
    _, bns, _ = train_run(driver, tmp_path, model, x[:1], y[:1], SCHEME_BIAS, lr_q16)
    bn_layers = [i for i, lay in enumerate(model.layers) if lay.kind == "batchnorm"]
    moved = 0
    for li, got in zip(bn_layers, bns, strict=True):
        lay = model.layers[li]
        assert lay.bn_gamma is not None and lay.bn_beta is not None
        e, tg, std_q, sb = grads[li]
        dgamma = 2.0 ** (e + 6) * tg.astype(np.float64) / std_q  # real units
        dbeta = 2.0**e * sb
        lr = lr_q16 / 65536
        step_g = lay.bn_gamma - np.asarray(got["gamma"])
        step_b = lay.bn_beta - np.asarray(got["beta"])
        assert np.all(np.abs(step_g - lr * dgamma * 4096) <= 1.0), (step_g, lr * dgamma * 4096)
        assert np.all(np.abs(step_b - lr * dbeta * 4096) <= 1.0)
        moved += int(np.count_nonzero(step_g)) + int(np.count_nonzero(step_b))
    assert moved > 0


def test_frozen_and_snapshot(
    driver: Path, tmp_path: Path, samples: tuple[np.ndarray, np.ndarray]
) -> None:
    """Frozen batch-norm layers keep gamma/beta; commits snapshot the whole state."""
    x, y = samples
    model = random_preset_model("mcu-bn", seed=2)
    bn_idx = [i for i, lay in enumerate(model.layers) if lay.kind == "batchnorm"]
    model.layers[bn_idx[0]].trainable = False
    _, bns, blob = train_run(
        driver, tmp_path, model, x[:20], y[:20], SCHEME_LRT, 655, max_norm=1, flush_every=5
    )
    first = model.layers[bn_idx[0]]
    assert np.array_equal(bns[0]["gamma"], first.bn_gamma)
    assert np.array_equal(bns[0]["beta"], first.bn_beta)
    assert not np.array_equal(bns[0]["mean"], first.bn_mean)
    second = model.layers[bn_idx[1]]
    assert not np.array_equal(bns[1]["gamma"], second.bn_gamma)  # max-norm: a real step
    # the 20th sample committed: the blob's snapshot is the RAM state
    _, b_off, _ = blob_layout(model.layers)
    for li, got in zip(bn_idx, bns, strict=True):
        c = int(model.layers[li].out_shape[-1])
        words = np.frombuffer(blob, "<i4", 4 * c + 1, b_off[li]).astype(np.int64)
        want = np.concatenate(
            [np.asarray(got[k]) for k in ("gamma", "beta", "mean", "msq")] + [[got["pow"]]]
        )
        assert np.array_equal(words & 0xFFFFFFFF, want & 0xFFFFFFFF)


def test_bn_layer_helper_statistics() -> None:
    """harness.backprop.bn_layer's statistics are those of its calibration input."""
    x = np.random.default_rng(4).integers(-128, 128, (10, 5, 5, 3)).astype(np.int8)
    lay = bn_layer(np.random.default_rng(0), "bn", (5, 5, 3), x)
    xi = x.astype(np.float64).reshape(-1, 3) + 128
    assert np.allclose(lay.bn_mean / 2**16, xi.mean(0), atol=1e-4)  # type: ignore[operator]
    assert np.allclose(lay.bn_msq / 2**8, (xi * xi).mean(0), atol=1e-2)  # type: ignore[operator]


def test_backward_kernel_matches_numpy(driver: Path, tmp_path: Path) -> None:
    """lrt_bp_batchnorm / lrt_bp_bn_gamma_sum against their numpy twins (bit exact)."""
    from harness.backprop import bfp_quantize, round_shift

    rng = np.random.default_rng(7)
    shape = (5, 6, 12)
    lay = bn_layer(rng, "bn", shape)
    lay.bn_gamma[0] = 0  # type: ignore[index]  # a zero gain
    net = Model("one", shape, _act_q(), int(np.prod(shape)), [lay])
    t = batchnorm.layer_tables(lay)
    for trial in range(6):
        x = rng.integers(-128, 128, shape).astype(np.int8)
        y = ref.layer_forward(lay, x[None])[0]
        g = rng.integers(-127, 128, shape).astype(np.int8)
        if trial == 0:
            g[..., 1:] = 0  # only the zero-gain channel: no input gradient at all
        e = int(rng.integers(-20, 0))
        stdin = x.tobytes() + y.tobytes() + g.tobytes() + np.array([e], "<i4").tobytes()
        r = Reader(run_driver(driver, write_net(tmp_path / "one.bin", net), ["layer", "0"], stdin))
        nz = r.int32()
        gm = np.where((y > lay.act_min) & (y < lay.act_max), g, 0)
        assert np.array_equal(r.s8(gm.size).reshape(shape), gm)
        assert nz == np.count_nonzero(gm)
        dx_exp = r.int32()
        dx = r.s8(gm.size).reshape(shape)
        fs = t.shift.astype(np.int64)
        active = t.w != 0
        if trial == 0:  # only the zero-gain channel has a gradient: nothing flows
            assert not np.any(dx)
        else:
            fmax = int(fs[active].max())
            prod = gm.astype(np.int64) * t.w.astype(np.int64)
            sh = fs - fmax + 16
            v = np.where(sh >= 0, prod * (2 ** np.maximum(sh, 0)), 0)
            for c in np.nonzero(sh < 0)[0]:
                v[..., c] = round_shift(prod[..., c], int(-sh[c]))
            want, s = bfp_quantize(v)
            assert np.array_equal(dx, want)
            assert dx_exp == e + (fmax - 1) - 16 + lay.output_q.exp - lay.input_q.exp + s  # type: ignore[operator]
        rec = r.arr32(3 * shape[2]).reshape(shape[2], 3)
        tg = (rec[:, 0] & 0xFFFFFFFF) | (rec[:, 1] << 32)
        xi = x.astype(np.int64) + 128
        want_tg = (gm.astype(np.int64) * (xi * 65536 - t.mu)).reshape(-1, shape[2]).sum(0)
        assert np.array_equal(tg, want_tg)
        assert np.array_equal(rec[:, 2], gm.astype(np.int64).reshape(-1, shape[2]).sum(0))
        assert r.done()

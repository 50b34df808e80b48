"""Training schemes of lrt_train.c (inference, bias, sgd, the lrt hooks) and write accounting,
run through harness/c/bp_driver.c (ASan/UBSan) on the `mcu` topology with random weights.

Exact expectations come from numpy applied to the gradients of the C backward pass (checked
against TensorFlow by tests/golden/test_grad_oracle.py) and from the integer forward pass of
lrt.reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness.backprop import (
    SCHEME,
    Reader,
    blob_layout,
    build_driver,
    random_preset_model,
    round_shift,
    run_driver,
    write_net,
)
from lrt.model import Model
from lrt.policy import Policy
from lrt.reference import forward_int8, forward_int8_layers, layer_forward

N = 12
LR_Q16 = 655  # 0.01
LR_SGD = 6554  # 0.1: enough to move weights without max-norm (paper convention)
# many real writes in every layer (to exercise the accounting): lr 0.04 on dL/dW_real
BUSY = {"lr_q16": 4 * LR_Q16, "real_units": 1}


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_driver(tmp_path_factory.mktemp("bp"))


Samples = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def samples() -> Samples:
    from lrt.data import load_dataset

    ds = load_dataset("mnist5k", seed=0)
    return ds.x_online[:N], ds.y_online[:N].astype(np.int64)


def _model(frozen: tuple[str, ...] = ()) -> Model:
    model = random_preset_model("mcu", seed=5)
    for lay in model.layers:
        if lay.name in frozen:
            lay.trainable = False
    return model


@dataclass
class LayerStats:
    max_writes: int
    total_writes: int
    paper_max: int
    paper_total: int
    cells: int
    exact: int
    terms: int  # LRT block hook calls
    mismatch: int  # samples whose blocks did not sum to the exact gradient


@dataclass
class TrainRun:
    logits: np.ndarray
    preds: np.ndarray
    samples: int
    flushes: int
    commits: int
    n_writes: int
    bytes_written: int
    stats: list[LayerStats]
    blob: bytes
    biases: dict[int, np.ndarray]
    cell_writes: np.ndarray | None
    paper_writes: np.ndarray | None
    errors: int = 0
    # with dump: per sample, layer index -> (integer weight gradient [n, m], its exponent)
    grads: list[dict[int, tuple[np.ndarray, int]]] | None = None


def train(driver: Path, tmp: Path, model: Model, x: np.ndarray, y: np.ndarray, scheme: str,
          max_norm: int = 0, lr_q16: int = LR_Q16, counters: int = 1,
          flush_every: int = 0, real_units: int = 0, lrt_block: int = 0,
          batched: list[int] | None = None) -> TrainRun:  # fmt: skip
    """batched: [BATCH_CONV, BATCH_DENSE, RHO_MIN_Q16, POLICY, GATE_ERRORS, GATE_CELLS_Q16,
    SAMPLES_PER_COMMIT, BURST(, GATE_RATE_Q16)] of bp_driver; the per-sample gradients are
    then dumped too."""
    net = write_net(tmp / f"net-{scheme}-{max_norm}-{counters}-{real_units}.bin", model)
    xq = model.quantize_input(x)
    stdin = np.array([len(xq)], "<i4").tobytes()
    for xi, yi in zip(xq, y, strict=True):
        stdin += xi.tobytes() + np.array([yi], "<i4").tobytes()
    args = [
        "train",
        str(SCHEME[scheme]),
        str(max_norm),
        str(lr_q16),
        str(counters),
        str(flush_every),
        str(real_units),
        str(lrt_block),
    ]
    if batched is not None:
        args += ["1", *map(str, batched)]
    r = Reader(run_driver(driver, net, args, stdin))
    logits, preds = [], []
    dumped: list[dict[int, tuple[np.ndarray, int]]] = []
    for _ in range(len(xq)):
        if batched is not None:
            per: dict[int, tuple[np.ndarray, int]] = {}
            while (li := r.int32()) != -1:
                w_exp, _, n, m = r.int32(), r.int32(), r.int32(), r.int32()
                per[li] = (r.arr32(n * m).reshape(n, m), w_exp)
                r.arr32(n)
            dumped.append(per)
        logits.append(r.s8(model.num_classes))
        preds.append(r.int32())
    head = [r.int32() for _ in range(6)]
    stats = []
    for _ in model.layers:
        mx, tot = r.int32(), r.u64()
        pmx, ptot = r.int32(), r.u64()
        stats.append(LayerStats(mx, tot, pmx, ptot, *(r.int32() for _ in range(4))))
    n_payload = r.int32()
    payload = r.data[r.pos : r.pos + n_payload]
    r.pos += n_payload
    # STATS reply (docs/PROTOCOL.md): samples, flushes, per weight layer max/total/paper max
    words = np.frombuffer(payload, "<u4").astype(np.int64)
    want = [head[0], head[1]]
    for lay, st in zip(model.layers, stats, strict=True):
        if lay.has_weights:
            want += [st.max_writes, min(st.total_writes, 2**32 - 1), st.paper_max]
    assert words.tolist() == want
    _, _, size = blob_layout(model.layers)
    blob = r.data[r.pos : r.pos + size]
    r.pos += size
    biases = {}
    for i, lay in enumerate(model.layers):
        if lay.has_weights:
            assert lay.bias is not None
            biases[i] = r.arr32(int(lay.bias.size))
    cells = r.int32()
    cw = pw = None
    if counters:
        cw, pw = r.arr32(cells), r.arr32(cells)
    assert r.done()
    samples_, flushes, commits, n_writes, bytes_written, errors = head
    return TrainRun(
        np.stack(logits), np.array(preds), samples_, flushes, commits, n_writes, bytes_written,
        stats, blob, biases, cw, pw, errors, dumped if batched is not None else None,
    )  # fmt: skip


def grads(
    driver: Path, tmp: Path, model: Model, x: np.ndarray, y: np.ndarray
) -> dict[int, tuple[np.ndarray, int, np.ndarray, int]]:
    """Layer index -> (integer weight gradient, exp, bias gradient, exp) of the first sample."""
    net = write_net(tmp / "net-grads.bin", model)
    xq = model.quantize_input(x[:1])
    stdin = np.array([1], "<i4").tobytes() + xq[0].tobytes() + np.array([y[0]], "<i4").tobytes()
    r = Reader(run_driver(driver, net, ["grads"], stdin))
    r.s8(model.num_classes)
    r.int32()
    out = {}
    while (li := r.int32()) != -1:
        w_exp, b_exp, n, m = r.int32(), r.int32(), r.int32(), r.int32()
        out[li] = (r.arr32(n * m).reshape(n, m), w_exp, r.arr32(n), b_exp)
    return out


def weights_of(model: Model, blob: bytes, i: int) -> np.ndarray:
    w_off, _, _ = blob_layout(model.layers)
    lay = model.layers[i]
    assert lay.weights is not None
    n = int(lay.weights.shape[0])
    return np.frombuffer(blob, np.int8, lay.weights.size, w_off[i]).reshape(n, -1).astype(np.int64)


def expected_bias(
    model: Model, i: int, gb: np.ndarray, b_exp: int, lr_q16: int = LR_Q16
) -> np.ndarray:
    lay = model.layers[i]
    assert lay.bias is not None and lay.weight_exp is not None and lay.bias_exp is not None
    acc = lay.input_q.exp + lay.weight_exp  # type: ignore[operator]
    bexp = max(lay.bias_exp, acc)
    du = round_shift(gb * lr_q16, 16 - (b_exp - bexp)) if 16 - (b_exp - bexp) >= 0 else None
    assert du is not None
    lim = 2 ** (lay.bias_exp + 15 - acc)
    new = lay.bias.astype(np.int64) - du * 2 ** (bexp - acc)
    return np.clip(new, -lim, lim - 2 ** (bexp - acc))


def test_inference_scheme_is_the_reference_forward(
    driver: Path, tmp_path: Path, samples: Samples
) -> None:
    x, y = samples
    model = _model()
    run = train(driver, tmp_path, model, x, y, "inference")
    np.testing.assert_array_equal(run.logits, forward_int8(model, model.quantize_input(x)))
    assert run.samples == 0 and run.commits == 0 and run.n_writes == 0
    assert all(s.total_writes == 0 and s.max_writes == 0 for s in run.stats)


def test_bias_scheme_updates_biases_only(driver: Path, tmp_path: Path, samples: Samples) -> None:
    x, y = samples
    model = _model()
    before = write_net(tmp_path / "before.bin", model).read_bytes()
    run = train(driver, tmp_path, model, x, y, "bias")
    # weights: not a single byte written, zero writes counted
    assert run.n_writes == 0 and run.commits == 0 and run.flushes == 0
    for i, lay in enumerate(model.layers):
        if lay.weights is not None:
            w0 = lay.weights.reshape(lay.weights.shape[0], -1)
            np.testing.assert_array_equal(weights_of(model, run.blob, i), w0)
            assert run.stats[i].max_writes == 0 and run.stats[i].total_writes == 0
            assert run.stats[i].paper_max == 0
    assert run.cell_writes is not None and not run.cell_writes.any()
    assert before[-len(run.blob) :] == run.blob  # biases live in RAM: no snapshot without a commit
    changed = [i for i, b in run.biases.items() if np.any(b != model.layers[i].bias)]
    assert len(changed) >= 4, "bias training changed (almost) no layer"
    # biases stay in the 16-bit format: range [-8, 8) and the 2^-12 grid (acc scale)
    for i, b in run.biases.items():
        lay = model.layers[i]
        acc = lay.input_q.exp + lay.weight_exp  # type: ignore[operator]
        assert np.all(np.abs(b) <= 2 ** (lay.bias_exp + 15 - acc))  # type: ignore[operator]
        assert np.all(b % 2 ** (lay.bias_exp - acc) == 0)  # type: ignore[operator]


def test_bias_update_exact_for_one_sample(driver: Path, tmp_path: Path, samples: Samples) -> None:
    x, y = samples
    model = _model()
    g = grads(driver, tmp_path, model, x, y)
    run = train(driver, tmp_path, model, x[:1], y[:1], "bias")
    assert set(g) == {i for i, lay in enumerate(model.layers) if lay.has_weights}
    for i, (_, _, gb, b_exp) in g.items():
        np.testing.assert_array_equal(run.biases[i], expected_bias(model, i, gb, b_exp))


@pytest.mark.parametrize(("real_units", "lr_q16"), [(0, LR_SGD), (1, LR_Q16)])
def test_sgd_one_sample_exact(
    driver: Path, tmp_path: Path, samples: Samples, real_units: int, lr_q16: int
) -> None:
    """W <- clip(W - round(lr * g / LSB)): updates below half an LSB vanish. Paper convention:
    g = dL/dW_paper = alpha dL/dW_real and LSB 2^-7; real units: g = dL/dW_real, LSB
    2^weight_exp."""
    x, y = samples
    model = _model()
    g = grads(driver, tmp_path, model, x, y)
    run = train(driver, tmp_path, model, x[:1], y[:1], "sgd", lr_q16=lr_q16, real_units=real_units)
    assert run.cell_writes is not None
    base = 0
    total_changed = 0
    for i, (gw, w_exp, gb, b_exp) in sorted(g.items()):  # counters are in layer order
        lay = model.layers[i]
        w0 = lay.weights.reshape(gw.shape).astype(np.int64)  # type: ignore[union-attr]
        assert lay.weight_exp is not None
        # paper convention: gradient times alpha = 2^(weight_exp + 7), LSB 2^-7
        k = 16 - (w_exp - lay.weight_exp if real_units else w_exp + lay.weight_exp + 14)
        du = round_shift(gw * lr_q16, k)
        want = np.clip(w0 - du, -128, 127)
        got = weights_of(model, run.blob, i)
        np.testing.assert_array_equal(got, want, err_msg=lay.name)
        np.testing.assert_array_equal(run.biases[i], expected_bias(model, i, gb, b_exp, lr_q16))
        changed = got != w0
        cw = run.cell_writes[base : base + gw.size].reshape(gw.shape)
        np.testing.assert_array_equal(cw, changed.astype(np.int64), err_msg=lay.name)
        assert run.stats[i].total_writes == changed.sum()
        total_changed += int(changed.sum())
        # many gradients are below half an LSB: they vanish
        assert np.count_nonzero(gw) > changed.sum()
        base += gw.size
    assert total_changed > 0
    assert run.flushes == 1 and run.commits == 1


def test_sgd_write_accounting(driver: Path, tmp_path: Path, samples: Samples) -> None:
    x, y = samples
    model = _model()
    run = train(driver, tmp_path, model, x, y, "sgd", **BUSY)
    assert run.cell_writes is not None and run.paper_writes is not None
    assert run.samples == N and 0 < run.flushes <= N and run.commits == run.flushes
    base = 0
    for i, lay in enumerate(model.layers):
        st = run.stats[i]
        if not lay.has_weights:
            assert st.total_writes == st.max_writes == st.cells == 0
            continue
        assert lay.weights is not None
        n = lay.weights.size
        cw, pw = run.cell_writes[base : base + n], run.paper_writes[base : base + n]
        base += n
        assert st.cells == n and st.exact == 1
        assert 0 < st.max_writes <= N, lay.name
        assert st.max_writes == cw.max() and st.total_writes == cw.sum()
        assert st.paper_max == pw.max() and st.paper_total == pw.sum()
        assert st.paper_max >= st.max_writes, lay.name
        assert np.all(pw >= cw), f"{lay.name}: a real write without a paper write"
        if lay.kind == "conv2d":
            # per-pixel accounting: far more than one write per sample on the busiest cell
            assert st.paper_max > N, lay.name
        else:
            assert st.paper_max <= N
        # a cell whose stored value differs from the start was written at least once
        w0 = lay.weights.reshape(-1).astype(np.int64)
        w1 = weights_of(model, run.blob, i).reshape(-1)
        assert np.all(cw[w1 != w0] >= 1)
        assert np.count_nonzero(w1 != w0) <= st.total_writes
    # bias snapshot of the last commit is in the blob
    _, b_off, _ = blob_layout(model.layers)
    for i, b in run.biases.items():
        snap = np.frombuffer(run.blob, "<i4", b.size, b_off[i])
        np.testing.assert_array_equal(snap, b)


def test_sgd_without_counters_reports_upper_bounds(
    driver: Path, tmp_path: Path, samples: Samples
) -> None:
    x, y = samples
    model = _model()
    exact = train(driver, tmp_path, model, x, y, "sgd", **BUSY)
    bound = train(driver, tmp_path, model, x, y, "sgd", counters=0, **BUSY)
    assert bound.blob == exact.blob and np.array_equal(bound.logits, exact.logits)
    for se, sb in zip(exact.stats, bound.stats, strict=True):
        assert sb.total_writes == se.total_writes and sb.paper_total == se.paper_total
        assert sb.max_writes >= se.max_writes and sb.paper_max >= se.paper_max
        assert sb.max_writes <= N
        if se.cells:
            assert sb.exact == 0


def test_sgd_maxnorm(driver: Path, tmp_path: Path, samples: Samples) -> None:
    """With max-norm the largest normalized gradient entry is at most ~1, so lr 0.01 moves the
    busiest cell of a layer by up to 0.01 / 2^-7 = 1.28 LSB per sample: every layer gets
    (few) writes, without max-norm (same lr) almost none."""
    x, y = samples
    model = _model()
    plain = train(driver, tmp_path, model, x, y, "sgd")
    mn = train(driver, tmp_path, model, x, y, "sgd", max_norm=1)
    for i, lay in enumerate(model.layers):
        if not lay.has_weights:
            continue
        assert 0 < mn.stats[i].max_writes <= N, lay.name
        assert mn.stats[i].total_writes > plain.stats[i].total_writes, lay.name
    assert mn.blob != plain.blob


def test_frozen_layers_get_no_writes(driver: Path, tmp_path: Path, samples: Samples) -> None:
    x, y = samples
    frozen = ("conv1", "conv2", "conv3", "conv4")
    model = _model(frozen)
    run = train(driver, tmp_path, model, x, y, "sgd", **BUSY)
    for i, lay in enumerate(model.layers):
        if not lay.has_weights:
            continue
        st = run.stats[i]
        if lay.name in frozen:
            assert lay.weights is not None and lay.bias is not None
            assert st.max_writes == st.total_writes == st.paper_max == 0, lay.name
            w0 = lay.weights.reshape(lay.weights.shape[0], -1)
            np.testing.assert_array_equal(weights_of(model, run.blob, i), w0)
            np.testing.assert_array_equal(run.biases[i], lay.bias)
        else:
            assert st.total_writes > 0, lay.name
    # counters cover the trainable layers only
    assert run.cell_writes is not None
    sizes = [lay.weights.size for lay in model.layers if lay.weights is not None and lay.trainable]
    assert run.cell_writes.size == sum(sizes)


@pytest.mark.parametrize("lrt_block", [0, 4])
def test_lrt_hooks_and_flush_path(
    driver: Path, tmp_path: Path, samples: Samples, lrt_block: int
) -> None:
    """Scheme lrt: each sample's gradient reaches the block hook as blocks that add up to the
    exact weight gradient (lrt_bp_weight_grad), bit for bit: one block per sample for dense
    layers and conv layers with <= kb channels, blocks of kb pixels for wider ones (kb 4:
    the 8- and 16-channel convs); weights change only through the flush (the driver's
    stand-in flush subtracts one LSB from row 0 every 4 samples)."""
    x, y = samples
    model = _model(("conv1",))
    run = train(driver, tmp_path, model, x, y, "lrt", flush_every=4, lrt_block=lrt_block)
    kb = lrt_block or 16
    flushes = N // 4
    assert run.flushes == flushes and run.commits == flushes
    assert run.cell_writes is not None
    base = 0
    for i, lay in enumerate(model.layers):
        st = run.stats[i]
        assert st.mismatch == 0, lay.name
        if not lay.has_weights:
            assert st.terms == 0
            continue
        if not lay.trainable:
            assert st.terms == 0 and st.total_writes == 0
            continue
        assert lay.weights is not None
        pixels = int(np.prod(lay.out_shape[:-1])) if lay.kind == "conv2d" else 1
        wide = lay.kind == "conv2d" and int(lay.out_shape[-1]) > kb
        assert 0 < st.terms <= (N * -(-pixels // kb) if wide else N), lay.name
        if wide:
            assert st.terms > N, lay.name  # several pixel blocks per sample
        w0 = lay.weights.reshape(lay.weights.shape[0], -1).astype(np.int64)
        want = w0.copy()
        want[0] = np.maximum(w0[0] - flushes, -128)
        np.testing.assert_array_equal(weights_of(model, run.blob, i), want, err_msg=lay.name)
        cw = run.cell_writes[base : base + w0.size].reshape(w0.shape)
        base += w0.size
        np.testing.assert_array_equal(cw[0], np.minimum(flushes, w0[0] + 128))
        assert not cw[1:].any()
        assert st.max_writes <= flushes and st.paper_max == 0
        assert lay.bias is not None
        assert not np.array_equal(run.biases[i], lay.bias)  # biases train every sample


def _xent(logits: np.ndarray, label: int, exp: int) -> float:
    z = logits.astype(np.float64) * 2.0**exp
    z -= z.max()
    return float(np.log(np.exp(z).sum()) - z[label])


@pytest.mark.parametrize(
    ("scheme", "max_norm", "lr_q16", "real_units"),
    [("bias", 0, 6554, 0), ("bias", 1, 6554, 0), ("sgd", 0, 6554, 1), ("sgd", 1, 6554, 0)],
)
def test_update_lowers_the_loss_of_its_sample(
    driver: Path,
    tmp_path: Path,
    samples: Samples,
    scheme: str,
    max_norm: int,
    lr_q16: int,
    real_units: int,
) -> None:
    """Each sample is shown twice in a row: the second forward pass runs on the weights
    updated by the first, so its loss must be lower (the update descends)."""
    x, y = samples
    model = _model()
    xx, yy = np.repeat(x, 2, axis=0), np.repeat(y, 2)
    run = train(driver, tmp_path, model, xx, yy, scheme, max_norm, lr_q16, real_units=real_units)
    exp = model.layers[-1].output_q.exp
    assert exp is not None
    before = [_xent(run.logits[2 * k], int(y[k]), exp) for k in range(N)]
    after = [_xent(run.logits[2 * k + 1], int(y[k]), exp) for k in range(N)]
    lower = sum(a < b for a, b in zip(after, before, strict=True))
    assert lower >= N - 1, f"loss went down on {lower}/{N} samples: {before} -> {after}"
    assert sum(after) < sum(before)


def test_training_refuses_models_without_power_of_two_scales(
    driver: Path, tmp_path: Path, samples: Samples
) -> None:
    x, y = samples
    model = _model()
    model.layers[3].weight_exp = None  # an imported model: arbitrary scales
    with pytest.raises(AssertionError, match=r"train init \(-12 unsupported\)"):
        train(driver, tmp_path, model, x[:1], y[:1], "bias")
    run = train(driver, tmp_path, model, x[:2], y[:2], "inference")  # inference still works
    np.testing.assert_array_equal(run.logits, forward_int8(model, model.quantize_input(x[:2])))


# ---- sgd-batch and the write policy --------------------------------------------------------


def sgd_batch_reference(
    model: Model,
    run: TrainRun,
    y: np.ndarray,
    lr_q16: int,
    batch: tuple[int, int],
    rho_min_q16: int,
    policy: Policy,
    joins: bool | None = None,
) -> tuple[dict[int, np.ndarray], int]:
    """Mini-batch SGD on the C run's own per-sample gradients (paper convention, no
    max-norm): every sample adds round(lr g 2^16 / LSB) to an int32 sum; a layer whose
    pseudo-batch (batch: conv, dense) is complete asks the write policy, then writes
    round(sum / 2^16) and empties its sum, or keeps it; under a budget a commit also
    carries the kept sums of layers whose pseudo-batch did not end at its sample (`joins`:
    None follows the policy). Returns the final weights and the number of commits."""  # fmt: skip
    assert run.grads is not None
    w = {i: lay.weights.reshape(lay.weights.shape[0], -1).astype(np.int64)  # type: ignore[union-attr]
         for i, lay in enumerate(model.layers) if lay.has_weights}  # fmt: skip
    acc = {i: np.zeros_like(v) for i, v in w.items()}
    pending = dict.fromkeys(w, 0)
    excess = dict.fromkeys(w, 0)
    kept = dict.fromkeys(w, False)
    commits = 0

    def offer(i: int, commits: int, samples: int, joining: bool) -> list[bool]:
        """Layer i's sum to the policy: [] kept, else [whether the write changed a cell]; a
        layer joining a commit is offered once per pseudo-batch."""
        kept[i] = not joining
        if not policy.due(excess[i], commits, samples):
            return []
        delta = round_shift(acc[i], 16)
        if np.count_nonzero(delta) < policy.min_cells(delta.size, rho_min_q16):
            return []
        new = np.clip(w[i] - delta, -128, 127)
        changed = bool(np.any(new != w[i]))
        w[i], acc[i], excess[i], kept[i] = new, np.zeros_like(acc[i]), 0, False
        return [changed]

    for k, per in enumerate(run.grads):
        for i in excess:
            excess[i] = policy.gate_update(excess[i], bool(run.preds[k] != y[k]))
        for i, (g, g_exp) in per.items():
            shift = -(g_exp + model.layers[i].weight_exp + 14)  # type: ignore[operator]
            acc[i] += round_shift(g * lr_q16, shift)
        wrote: list[bool] = []  # per layer written: did it change a cell (any(): a commit)
        for i in sorted(w):  # in blob order: a commit writes forwards
            pending[i] += 1
            if pending[i] < batch[model.layers[i].kind != "conv2d"]:
                if any(wrote) and kept[i] and (policy.joins if joins is None else joins):
                    wrote += offer(i, commits, k + 1, joining=True)  # the commit is open
                continue
            pending[i] = 0
            wrote += offer(i, commits, k + 1, joining=False)
        commits += any(wrote)
    return w, commits


@pytest.fixture(scope="module")
def stream24() -> Samples:
    from lrt.data import load_dataset

    ds = load_dataset("mnist5k", seed=0)
    return ds.x_online[:24], ds.y_online[:24].astype(np.int64)


@pytest.mark.parametrize(
    ("policy", "batch"),
    [(Policy(), (3, 3)), (Policy(1, 4, 0, 3277, 0, 0), (3, 3)), (Policy(1, 1, 0, 0, 6, 0), (3, 3)),
     (Policy(1, 1, 52429, 0, 0, 0), (3, 3)), (Policy(1, 1, 0, 0, 4, 0), (2, 7))],
    ids=["fixed", "gated-errors-cells", "gated-budget", "gated-error-excess",
         "gated-budget-joins"],
)  # fmt: skip
def test_sgd_batch_matches_the_reference_and_its_policy(
    driver: Path, tmp_path: Path, stream24: Samples, policy: Policy, batch: tuple[int, int]
) -> None:
    x, y = stream24
    model = _model()
    rho = 655
    cfg = [*batch, rho, policy.kind, policy.gate_errors, policy.gate_cells_q16,
           policy.samples_per_commit, policy.burst, policy.gate_rate_q16]  # fmt: skip
    run = train(driver, tmp_path, model, x, y, "sgd-batch", lr_q16=LR_SGD, batched=cfg)
    assert run.errors == int(np.sum(run.preds != y))
    want, commits = sgd_batch_reference(model, run, y, LR_SGD, batch, rho, policy)
    for i, wi in want.items():
        np.testing.assert_array_equal(weights_of(model, run.blob, i), wi, model.layers[i].name)
    assert run.flushes == commits == run.commits
    assert 0 < commits <= len(y) // min(batch)
    if batch == (2, 7):
        # the convs' short pseudo-batch takes every commit the budget allows; the dense layers
        # (pseudo-batch 7) are written by joining those commits, which changes their weights
        dense = [i for i in want if model.layers[i].kind == "dense"]
        assert all(run.stats[i].max_writes > 0 for i in dense), run.stats
        alone, _ = sgd_batch_reference(model, run, y, LR_SGD, batch, rho, policy, joins=False)
        assert any(not np.array_equal(alone[i], want[i]) for i in dense)
    if policy.samples_per_commit:
        assert commits <= policy.burst + len(y) // policy.samples_per_commit
    # no paper accounting outside per-sample sgd; the logical counters still count
    assert all(st.paper_max == 0 for st in run.stats)
    assert max(st.max_writes for st in run.stats) <= commits


def test_gated_policy_defers_what_the_fixed_one_writes(
    driver: Path, tmp_path: Path, stream24: Samples
) -> None:
    """The error gate turns a fixed schedule into fewer, larger writes."""
    x, y = stream24
    base = [2, 2, 655, 0, 0, 0, 0, 0]
    fixed = train(driver, tmp_path, _model(), x, y, "sgd-batch", lr_q16=LR_SGD, batched=base)
    gated = train(driver, tmp_path, _model(), x, y, "sgd-batch", lr_q16=LR_SGD,
                  batched=[2, 2, 655, 1, 3, 0, 0, 0])  # fmt: skip
    assert gated.flushes < fixed.flushes
    assert fixed.errors >= 3 and gated.flushes >= 1


# ---- classifier residual ---------------------------------------------------------------------


def head_reference(
    model: Model, run: TrainRun, x: np.ndarray, head_lr_q16: int
) -> tuple[np.ndarray, np.ndarray]:
    """The classifier residual on the C run's own per-sample gradients, with every other
    parameter fixed (bias scheme at lr 0): sample k is predicted with the classifier's
    weights W - R_k / 2^16, its bias lowered by round(R_k x / 2^16) (half away from zero),
    then R_{k+1} = R_k + round(head_lr g_k / LSB), saturated at +-2^26 (1,024 LSBs). Returns
    the logits of every sample and the final residual."""
    assert run.grads is not None
    last = len(model.layers) - 1
    lay = model.layers[last]
    assert lay.weights is not None and lay.bias is not None
    w = lay.weights.reshape(lay.weights.shape[0], -1).astype(np.int64)
    ins = forward_int8_layers(model, model.quantize_input(x))[last - 1]
    resid = np.zeros_like(w)
    logits = []
    for k, per in enumerate(run.grads):
        xin = ins[k].reshape(1, -1).astype(np.int64)
        share = round_shift((resid * (xin - lay.input_q.zero_point)).sum(axis=1), 16)
        shifted = copy.copy(lay)
        shifted.bias = (lay.bias.astype(np.int64) - share).astype(np.int32)
        logits.append(layer_forward(shifted, ins[k : k + 1])[0])
        if last in per:
            g, g_exp = per[last]
            shift = -(g_exp + lay.weight_exp + 14)  # type: ignore[operator]
            step = np.clip(round_shift(g * head_lr_q16, shift), 1 - 2**31, 2**31 - 1)  # per cell
            resid = np.clip(resid + step, -(2**26), 2**26)
    return np.stack(logits), resid


# bias scheme at lr 0: only the residual learns, so the twin needs no other state
HEAD_ONLY = [1, 1, 0, 0, 0, 0, 0, 0, 0]


SATURATING = 2**32 - 1


@pytest.mark.parametrize("head_lr_q16", [6554, SATURATING], ids=["lr0.1", "saturating"])
def test_classifier_residual_matches_its_reference(
    driver: Path, tmp_path: Path, stream24: Samples, head_lr_q16: int
) -> None:
    x, y = stream24
    model = _model()
    run = train(driver, tmp_path, model, x, y, "bias", lr_q16=0,
                batched=[*HEAD_ONLY, head_lr_q16])  # fmt: skip
    want, resid = head_reference(model, run, x, head_lr_q16)
    np.testing.assert_array_equal(run.logits, want)
    lay = model.layers[-1]
    assert lay.weights is not None
    w = lay.weights.reshape(lay.weights.shape[0], -1).astype(np.int64)
    # the residual moved the predictions, and wrote nothing: the blob is the model's own
    assert not np.array_equal(run.logits, forward_int8(model, model.quantize_input(x)))
    assert run.commits == 0 and run.n_writes == 0
    np.testing.assert_array_equal(weights_of(model, run.blob, len(model.layers) - 1), w)
    assert np.count_nonzero(resid) > 0
    saturated = np.count_nonzero(np.abs(resid) == 2**26)
    if head_lr_q16 == SATURATING:
        assert saturated > 0  # the saturation is exercised
    else:
        assert saturated == 0


def test_classifier_residual_leaves_the_nvm_path_alone(
    driver: Path, tmp_path: Path, stream24: Samples
) -> None:
    """With a residual, sgd-batch still writes exactly what its reference computes from the
    run's own gradients and predictions (the residual changes them, not the write rule)."""
    x, y = stream24
    model = _model()
    policy = Policy(1, 1, 0, 0, 0, 0)
    cfg = [3, 3, 655, policy.kind, policy.gate_errors, policy.gate_cells_q16,
           policy.samples_per_commit, policy.burst, policy.gate_rate_q16]  # fmt: skip
    plain = train(driver, tmp_path, model, x, y, "sgd-batch", lr_q16=LR_SGD, batched=cfg)
    run = train(driver, tmp_path, model, x, y, "sgd-batch", lr_q16=LR_SGD,
                batched=[*cfg, 6554])  # fmt: skip
    assert not np.array_equal(run.logits, plain.logits)
    want, commits = sgd_batch_reference(model, run, y, LR_SGD, (3, 3), 655, policy)
    for i, wi in want.items():
        np.testing.assert_array_equal(weights_of(model, run.blob, i), wi, model.layers[i].name)
    assert run.flushes == commits == run.commits > 0

"""lrt-emulate's bulk session (every request sent at once, replies read in bulk) gives the
same results, bit for bit, as the per-sample protocol: one request, wait for its reply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import PLAIN_ERROR_COUNT, built
from lrt import pipeline
from lrt.data import load_dataset, make_stream
from lrt.emulate import open_device
from lrt.report import OnlineResult

SAMPLES = 150
STATS_EVERY = 50


@pytest.mark.parametrize("scheme", ["lrt-maxnorm", "sgd"])
def test_bulk_session_equals_per_sample_protocol(tmp_path: Path, scheme: str) -> None:
    build = built(scheme, gate_rate=PLAIN_ERROR_COUNT)
    bulk_nvm, step_nvm = tmp_path / "bulk.img", tmp_path / "step.img"
    res = pipeline.emulate(build, samples=SAMPLES, stream="analog", nvm_path=bulk_nvm,
                           stats_every=STATS_EVERY, progress=False)  # fmt: skip

    # the same session, one round trip per request
    report, model = pipeline.load_build(build)
    cfg = report["config"]
    st = make_stream("analog", load_dataset(cfg["dataset"], seed=cfg["seed"]), SAMPLES,
                     seed=cfg["seed"])  # fmt: skip
    xq = model.quantize_input(st.x)
    kind, param = pipeline._drift_request("analog")  # type: ignore[misc]
    preds, curve = [], []
    with open_device(build, nvm_path=step_nvm, window=1) as dev:
        for i in range(SAMPLES):
            preds.append(dev.train(xq[i], int(st.y[i]))[1])
            done = i + 1
            if done % pipeline.DRIFT_PERIOD == 0 or done == SAMPLES:
                dev.drift(kind, (cfg["seed"] * 1_000_003 + done) & 0xFFFFFFFF, param)
                if done % STATS_EVERY < pipeline.DRIFT_PERIOD or done == SAMPLES:
                    s = dev.stats()
                    curve.append((done, max(la.max_writes for la in s.layers),
                                  max(la.paper_max_writes for la in s.layers)))  # fmt: skip
        stats = dev.stats()
        wear = dev.wear()
    want = OnlineResult.from_run(
        board=report["board"], scheme=cfg["scheme"], stream="analog", labels=st.y,
        preds=np.array(preds), stats=stats, layer_names=[la.name for la in model.weight_layers()],
        layer_cells=[la.n_weights for la in model.weight_layers()], seconds=1.0,
    )  # fmt: skip
    want.add_wear(wear, *pipeline._nvm_facts(report, model), cfg.get("sample_rate_hz", 1.0))
    assert res.online_accuracy == want.online_accuracy
    assert res.ema == want.ema  # per-sample correctness, sampled
    assert res.layers == want.layers  # write counters and physical programs per layer
    assert res.max_programs_per_cell == want.max_programs_per_cell
    assert res.flushes == want.flushes
    assert res.writes_curve == curve
    assert bulk_nvm.read_bytes() == step_nvm.read_bytes(), "final NVM images differ"
    assert max(la.max_writes for la in stats.layers) > 0  # the run really wrote weights


def test_inference_split_over_processes_keeps_the_rows(tmp_path: Path) -> None:
    """--dump-logits shards the inputs over emulator processes: same rows, same order."""
    build = built("inference")
    model = pipeline.load_build(build)[1]
    ds = load_dataset("mnist5k")
    x = model.quantize_input(np.concatenate([ds.x_test, ds.x_val])[:600])
    np.save(tmp_path / "x.npy", x)
    outs = []
    for jobs in (1, 2):
        out = tmp_path / f"y{jobs}.npy"
        assert pipeline.infer_file(build, tmp_path / "x.npy", out, jobs=jobs) == 600
        outs.append(np.load(out))
    assert np.array_equal(outs[0], outs[1])
    with open_device(build) as dev:  # the pipelined per-request client agrees
        assert np.array_equal(dev.infer_many(x)[0], outs[0])


@pytest.mark.slow  # a trained model: minutes on a fresh clone
@pytest.mark.parametrize(("stream", "stats_every"), [("analog", None), ("shift", 70)])
def test_a_stream_sent_in_windows_is_the_stream_sent_at_once(
    monkeypatch: pytest.MonkeyPatch, stream: str, stats_every: int | None
) -> None:
    """Long runs are made, held and sent a window at a time (bounded memory): the same
    requests in the same order, so the same predictions, counters and wear as one window."""
    build = built("lrt-maxnorm")
    runs = []
    for window in (10_000, 300):
        monkeypatch.setattr(pipeline, "STREAM_WINDOW", window)
        res = pipeline.emulate(build, samples=1000, stream=stream, segment=400, seed=5,
                               stats_every=stats_every, progress=False,
                               count_instructions=False).to_dict()  # fmt: skip
        for key in ("seconds", "samples_per_second"):
            res.pop(key)
        runs.append(res)
    assert runs[0] == runs[1]
    assert runs[0]["flushes"] > 0 and (stats_every is None or len(runs[0]["writes_curve"]) > 10)

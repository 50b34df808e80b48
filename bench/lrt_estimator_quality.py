"""Benchmark (not a test): how much of the exact pseudo-batch gradient the integer LRT
accumulator keeps on the real gradients of the offline-trained `mcu` model.

    .venv/bin/python bench/lrt_estimator_quality.py [--batches 5] [--seeds 2000] [--rank 4]

Per-sample weight gradients come from the firmware's own backward pass (harness/c/bp_driver.c,
lr 0 so the weights stay put) on the shift stream; each conv layer's pseudo-batches of
B = 10 samples go through lrt_lowrank.c exactly as the trainer feeds them (one block per
sample: left = I, right = G^T). Reported per conv layer: biased mode, the kept fraction
||estimate|| / ||exact sum|| and the relative error; unbiased mode, over `seeds` seeds run in
C, the relative error of the mean and the bound 3 / sqrt(seeds) times the single-run error
(`--seeds 0` skips it). Beside them the default's conv sums (lrt_lowrank_sum: the batch
summed in int16, one block step; biased mode) and the best rank-r approximation of the
exact sum (Eckart-Young), the most any rank-r state can keep.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.backprop import Reader, run_driver, write_net  # noqa: E402
from harness.backprop import build_driver as build_bp  # noqa: E402
from harness.buildcache import trained_model  # noqa: E402
from harness.cbuild import DRIVERS, compile_c  # noqa: E402
from harness.lowrank import (  # noqa: E402
    LIB_SOURCES,
    CConfig,
    Script,
    parse_states,
    run,
)
from lrt.data import load_dataset, make_stream  # noqa: E402
from lrt.model import Model  # noqa: E402


def sample_grads(tmp: Path, model: Model, count: int) -> list[dict[int, tuple[np.ndarray, int]]]:
    """Per sample: layer index -> (int32 weight gradient n x m, exponent)."""
    st = make_stream("shift", load_dataset("mnist5k"), count, seed=9)
    xq = model.quantize_input(st.x)
    stdin = np.array([count], "<i4").tobytes()
    for xi, yi in zip(xq, st.y, strict=True):
        stdin += xi.tobytes() + np.array([yi], "<i4").tobytes()
    r = Reader(run_driver(build_bp(tmp), write_net(tmp / "net.bin", model), ["grads"], stdin))
    out = []
    for _ in range(count):
        r.s8(model.num_classes)
        r.int32()
        grads = {}
        while (li := r.int32()) != -1:
            w_exp, _, n, m = r.int32(), r.int32(), r.int32(), r.int32()
            grads[li] = (r.arr32(n * m).reshape(n, m), w_exp)
            r.arr32(n)
        out.append(grads)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2000)
    ap.add_argument("--rank", type=int, default=4)
    args = ap.parse_args()
    model = Model.load(trained_model("mcu") / "ir")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        drv = compile_c([DRIVERS / "lowrank_driver.c", *LIB_SOURCES],
                        tmp / "lowrank_driver", extra=["-O2"], sanitize=False)  # fmt: skip
        grads = sample_grads(tmp, model, 10 * args.batches)
        convs = [i for i, lay in enumerate(model.layers) if lay.kind == "conv2d"]
        print(
            "| layer | n x m | kept (biased) | rel. error (biased) | unbiased: mean error "
            "| 3/sqrt(S) x single-run error | conv sums: kept, rel. error | best rank r: kept, "
            "rel. error |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for li in convs:
            n, m = grads[0][li][0].shape
            kept, err, mean_err, bound = [], [], [], []
            summed: list[tuple[float, float]] = []
            best: list[tuple[float, float]] = []
            for b in range(args.batches):
                batch = grads[10 * b : 10 * b + 10]
                exact = sum(g[li][0] * 2.0 ** g[li][1] for g in batch)
                norm = float(np.linalg.norm(exact))
                script = Script().init(n, m, CConfig(rank=args.rank, unbiased=False))
                for g in batch:
                    script.sum_add(g[li][0], g[li][1])
                e = parse_states(run(drv, script.cmd("P 0").cmd("D")), n, m, args.rank)[-1]
                est = e.estimate()
                summed.append((float(np.linalg.norm(est)) / norm,
                               float(np.linalg.norm(est - exact)) / norm))  # fmt: skip
                u, sv, vt = np.linalg.svd(exact, full_matrices=False)
                top = (u[:, : args.rank] * sv[: args.rank]) @ vt[: args.rank]
                best.append((float(np.linalg.norm(top)) / norm,
                             float(np.linalg.norm(top - exact)) / norm))  # fmt: skip
                for unbiased in (False, True) if args.seeds > 0 else (False,):
                    script = Script().init(n, m, CConfig(rank=args.rank, unbiased=unbiased))
                    for g in batch:
                        script.block(np.eye(n, dtype=np.int64), 0, g[li][0].T, g[li][1])
                        script.cmd("E")
                    if not unbiased:
                        est = parse_states(run(drv, script.cmd("D")), n, m, args.rank)[-1]
                        e = est.estimate()
                        kept.append(np.linalg.norm(e) / np.linalg.norm(exact))
                        err.append(np.linalg.norm(e - exact) / np.linalg.norm(exact))
                        continue
                    lines = run(drv, script.cmd(f"W {args.seeds}"))
                    mean = np.array(
                        [
                            float(x)
                            for x in next(ln for ln in lines if ln.startswith("wmean")).split()[1:]
                        ]
                    ).reshape(n, m)
                    spread = float(next(ln for ln in lines if ln.startswith("wvar")).split()[1])
                    d2 = float(np.sum((mean - exact) ** 2))
                    norm = float(np.linalg.norm(exact))
                    mean_err.append(math.sqrt(d2) / norm)
                    bound.append(3 / math.sqrt(args.seeds) * math.sqrt(d2 + spread) / norm)
            unb = f"{np.max(mean_err):.4f} | {np.min(bound):.4f}" if mean_err else "- | -"
            sk, se = np.mean(summed, axis=0)
            bk, be = np.mean(best, axis=0)
            print(f"| {model.layers[li].name} | {n} x {m} | {np.mean(kept):.3f} "
                  f"(min {np.min(kept):.3f}) | {np.mean(err):.3f} | {unb} "
                  f"| {sk:.3f}, {se:.3f} | {bk:.3f}, {be:.3f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

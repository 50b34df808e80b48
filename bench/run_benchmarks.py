"""Benchmarks (not tests): cost of a sample on the Cortex-M4 and on the host, in one run.

    PYTHONPATH=toolchain .venv/bin/python bench/run_benchmarks.py [--out bench/results]
        [--samples 1000] [--paper-samples 60] [--no-paper]

Side by side, for the `mcu` preset:
* Cortex-M4 instructions per sample per scheme on QEMU mps2-an386 (the board's SIMD
  kernels), counted exactly by the TCG plugin: (count(k2 samples) - count(k1)) / (k2 - k1),
  so boot and exit cancel; `inference` is the forward pass alone; beside it the sample that
  ends a conv pseudo-batch (count(20) - count(19)), where the summed layers take their step;
* the ideal SMLAD bound of the network: multiply-accumulates / 2 cycles (the M4 does two
  16-bit MACs per cycle), for the forward pass and for a training sample (forward plus the
  weight-gradient and input-gradient products);
* host samples/s per scheme through lrt-emulate's session, by wall clock and by the
  firmware process's CPU time (the CPU figure does not depend on what else the machine
  runs; the load average is recorded), against a TensorFlow per-sample (batch 1) SGD loop
  of the same network measured in the same run;
* the `paper` preset (128-channel convs) on the host: lrt-maxnorm samples/s beside its own
  TensorFlow loop. Its firmware starts from the untrained weights (--epochs 0), which costs
  the same per sample as trained ones and saves the offline training;
* static RAM per scheme (budget) and the M4 ELF's RAM.
Writes results.json and results.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness: not installed

from harness.buildcache import ROOT, built, cache_lock, firmware_key, trained_model
from lrt import pipeline
from lrt.boards import load_board
from lrt.data import load_dataset, make_stream
from lrt.emulate import protocol as P
from lrt.emulate.qemu import count_instructions
from lrt.model import Model

# (row label, scheme, build settings): every scheme at its defaults, and the default LRT
# scheme with the paper's one block step per sample (no conv sums) for comparison
VARIANTS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("inference", "inference", {}),
    ("bias", "bias", {}),
    ("sgd", "sgd", {}),
    ("lrt", "lrt", {}),
    ("lrt-maxnorm", "lrt-maxnorm", {}),
    ("lrt-maxnorm, a block step per sample (lrt_conv_sum=0)", "lrt-maxnorm", {"lrt_conv_sum": 0}),
)
M4 = "mps2-an386"


def macs(model: Model) -> dict[str, int]:
    """Multiply-accumulates per sample: forward, and what a training sample adds (weight
    gradients of the trainable layers, input gradients above the lowest trainable one)."""
    fwd: list[int] = []
    for lay in model.layers:
        if lay.kind == "conv2d" and lay.weights is not None:
            fwd.append(int(np.prod(lay.out_shape)) * int(np.prod(lay.weights.shape[1:])))
        elif lay.kind == "dense" and lay.weights is not None:
            fwd.append(int(lay.weights.size))
        else:
            fwd.append(0)
    trainable = [i for i, lay in enumerate(model.layers) if lay.has_weights and lay.trainable]
    first = trainable[0] if trainable else len(model.layers)
    weight_grad = sum(fwd[i] for i in trainable)
    input_grad = sum(fwd[i] for i in range(first + 1, len(model.layers)))
    return {
        "forward": sum(fwd),
        "training": sum(fwd) + weight_grad + input_grad,
    }


def insns_per_sample(build: Path, k1: int = 4, k2: int = 24) -> tuple[float, int]:
    """(mean instructions per sample over samples k1 + 1 .. k2, instructions of sample k2).

    k2 = 24 - 4 spans two conv pseudo-batches (B = 10), so the mean includes their block
    steps in proportion; sample 20 ends a pseudo-batch: its figure is the peak a summed
    layer's block step (and a flush, when the policy writes there) adds to one sample."""
    model = Model.load(build / "ir")
    st = make_stream("shift", load_dataset("mnist5k"), k2, seed=9)
    xq = model.quantize_input(st.x)
    elf = build / "out" / M4 / "fw.elf"

    def stream(k: int) -> bytes:
        frames = [P.hello_request()]
        frames += [P.train_request(xq[i].tobytes(), int(st.y[i])) for i in range(k)]
        frames.append(P.bye_request())
        return b"".join(frames)

    board = load_board(M4)
    a = count_instructions(board, elf, stream(k1)).total
    end = 20
    before_end = count_instructions(board, elf, stream(end - 1)).total
    at_end = count_instructions(board, elf, stream(end)).total
    b = at_end if k2 == end else count_instructions(board, elf, stream(k2)).total
    return (b - a) / (k2 - k1), at_end - before_end


def host_rates(build: Path, samples: int) -> tuple[float, float]:
    """(samples/s by wall clock, samples/s by the firmware's CPU time) of lrt-emulate."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = pipeline.emulate(build, samples=samples, stream="shift", progress=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(res.samples_per_second), samples / cpu if cpu > 0 else 0.0


def paper_build(scheme: str) -> Path:
    """The paper preset's firmware from its untrained weights (cached like the test builds)."""
    name = f"bench-paper-e0-{scheme}-host-{firmware_key()}"
    with cache_lock(name) as path:
        if not (path / "report.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            pipeline.build("host", path, preset="paper", scheme=scheme, epochs=0, progress=False)
        return path


def tf_rate(preset: str, samples: int) -> float:
    from lrt import tf_baseline

    st = make_stream("shift", load_dataset("mnist5k"), samples, seed=9)
    return float(tf_baseline.per_sample_training_rate(preset, st.x, st.y))


def timed(label: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    print(f"  {label}: {out} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    mac, rows = result["macs"], result["schemes"]
    inf = rows["inference"]["m4_insns_per_sample"]
    tf = result["tensorflow_per_sample_sgd_samples_per_s"]
    lines = [
        f"Cortex-M4 (QEMU {M4}, SIMD kernels), instructions per sample; host `lrt-emulate` "
        f"samples/s by wall clock and by firmware CPU time (load average "
        f"{result['load_average']:.1f} on {result['cpus']} CPUs during the run).",
        "",
        "| scheme | M4 instructions/sample | vs inference | vs SMLAD bound | pseudo-batch end "
        "sample | host samples/s (wall) | host samples/s (CPU) | wall rate vs TF loop | "
        "static RAM (budget) | of which training | M4 ELF RAM* |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scheme, r in rows.items():
        bound = mac["forward"] if scheme == "inference" else mac["training"]
        ins = r["m4_insns_per_sample"]
        lines.append(
            f"| {scheme} | {ins / 1e6:.2f} M | {ins / inf:.2f}x | {ins / (bound / 2):.1f}x | "
            f"{r['m4_insns_batch_end_sample'] / 1e6:.2f} M | "
            f"{r['host_samples_per_s']:.0f} | {r['host_cpu_samples_per_s']:.0f} | "
            f"{r['host_samples_per_s'] / tf:.1f}x | {r['ram_budget_bytes']:,d} B | "
            f"{r['training_ram_bytes']:,d} B | {r['m4_elf_ram_bytes']:,d} B |"
        )
    lines += [
        "",
        f"Network (`mcu`): {mac['forward']:,d} MACs forward, {mac['training']:,d} for a "
        f"training sample (forward + weight and input gradients). Ideal SMLAD bound "
        f"(MACs / 2 cycles): {mac['forward'] / 2e6:.2f} M cycles inference, "
        f"{mac['training'] / 2e6:.2f} M training; the training rows compare with the latter.",
        f"TensorFlow per-sample SGD loop (same QAT network, batch 1, tf.function): {tf:.0f} "
        "samples/s by wall clock, in the same run. *ELF RAM includes the emulator-only "
        "per-cell write counters (8 B per weight cell) where the board has room for them.",
    ]
    paper = result.get("paper")
    if paper:
        lines += [
            "",
            "| `paper` preset, host | samples/s (wall) | samples/s (CPU) | TF per-sample loop |",
            "|---|---|---|---|",
            f"| lrt-maxnorm | {paper['host_samples_per_s']:.1f} | "
            f"{paper['host_cpu_samples_per_s']:.1f} | "
            f"{paper['tensorflow_per_sample_sgd_samples_per_s']:.1f} |",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--samples", type=int, default=1000, help="host samples per scheme")
    ap.add_argument("--paper-samples", type=int, default=60)
    ap.add_argument("--no-paper", action="store_true", help="skip the paper preset")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = Model.load(trained_model() / "ir")
    rows: dict[str, dict[str, Any]] = {}
    for label, scheme, settings in VARIANTS:
        print(label, flush=True)
        host, arm = built(scheme, **settings), built(scheme, M4, **settings)
        rep = json.loads((host / "report.json").read_text())
        arm_rep = json.loads((arm / "report.json").read_text())
        wall, cpu = timed("host samples/s (wall, CPU)", partial(host_rates, host, args.samples))
        mean, at_end = timed("M4 insns (mean, batch end)", partial(insns_per_sample, arm))
        rows[label] = {
            "settings": settings,
            "m4_insns_per_sample": round(mean),
            "m4_insns_batch_end_sample": at_end,
            "host_samples_per_s": round(wall, 1),
            "host_cpu_samples_per_s": round(cpu, 1),
            "ram_budget_bytes": rep["budget"]["ram_bytes"],
            "training_ram_bytes": rep["budget"]["training_ram_bytes"],
            "m4_elf_ram_bytes": arm_rep["footprint"]["ram"],
            "m4_elf_flash_bytes": arm_rep["footprint"]["flash"],
            "exact_counters_in_elf": arm_rep["exact_write_counters"],
        }
    tf = timed("TF per-sample loop (mcu)", lambda: tf_rate("mcu", 300))
    result: dict[str, Any] = {
        "model": str(trained_model()),
        "load_average": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "macs": macs(model),
        "smlad_bound_cycles": {k: v / 2 for k, v in macs(model).items()},
        "tensorflow_per_sample_sgd_samples_per_s": round(tf, 1),
        "schemes": rows,
    }
    if not args.no_paper:
        build = timed("paper build", lambda: paper_build("lrt-maxnorm"))
        wall, cpu = timed("paper host samples/s", lambda: host_rates(build, args.paper_samples))
        result["paper"] = {
            "host_samples_per_s": round(wall, 2),
            "host_cpu_samples_per_s": round(cpu, 2),
            "tensorflow_per_sample_sgd_samples_per_s": round(
                timed("TF per-sample loop (paper)", lambda: tf_rate("paper", 50)), 2
            ),
        }
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (args.out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

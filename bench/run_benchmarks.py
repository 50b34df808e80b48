"""Benchmarks (not tests): throughput, instructions per sample, RAM per scheme.

    .venv/bin/python bench/run_benchmarks.py [--out bench/results] [--samples 1000]

* host emulator samples/s per scheme on the same shift stream, against a TensorFlow
  per-sample (batch 1) training loop of the same quantized network;
* instructions per sample on QEMU Cortex-M4 (mps2-an386) per scheme, counted exactly by the
  TCG plugin: (count(k2 samples) - count(k1 samples)) / (k2 - k1), so boot is excluded;
* static RAM per scheme (budget) and the ARM ELF's RAM (data + bss + stack).
Writes results.json and results.md into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e_support import built, trained_model  # noqa: E402
from lrt import pipeline  # noqa: E402
from lrt.boards import load_board  # noqa: E402
from lrt.data import load_dataset, make_stream  # noqa: E402
from lrt.emulate import protocol as P  # noqa: E402
from lrt.emulate.qemu import count_instructions  # noqa: E402
from lrt.model import Model  # noqa: E402

SCHEMES = ("inference", "bias", "sgd", "lrt", "lrt-maxnorm")


def host_rate(scheme: str, samples: int) -> float:
    res = pipeline.emulate(built(scheme), samples=samples, stream="shift", progress=False)
    return float(res.samples_per_second)


def insns_per_sample(scheme: str, k1: int = 4, k2: int = 24) -> float:
    build = built(scheme, "mps2-an386")
    model = Model.load(build / "ir")
    st = make_stream("shift", load_dataset("mnist5k"), k2, seed=9)
    xq = model.quantize_input(st.x)
    board = load_board("mps2-an386")
    elf = build / "out" / "mps2-an386" / "fw.elf"

    def stream(k: int) -> bytes:
        frames = [P.hello_request()]
        frames += [P.train_request(xq[i].tobytes(), int(st.y[i])) for i in range(k)]
        frames.append(P.bye_request())
        return b"".join(frames)

    a = count_instructions(board, elf, stream(k1)).total
    b = count_instructions(board, elf, stream(k2)).total
    return (b - a) / (k2 - k1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for scheme in SCHEMES:
        host = built(scheme)
        arm = built(scheme, "mps2-an386")
        rep = json.loads((host / "report.json").read_text())
        arm_rep = json.loads((arm / "report.json").read_text())
        rows[scheme] = {
            "host_samples_per_s": round(host_rate(scheme, args.samples), 1),
            "m4_insns_per_sample": round(insns_per_sample(scheme)),
            "ram_budget_bytes": rep["budget"]["ram_bytes"],
            "training_ram_bytes": rep["budget"]["training_ram_bytes"],
            "m4_elf_ram_bytes": arm_rep["footprint"]["ram"],
            "m4_elf_flash_bytes": arm_rep["footprint"]["flash"],
            "exact_counters_in_elf": arm_rep["exact_write_counters"],
        }
        print(scheme, rows[scheme], flush=True)
    from lrt import train

    ds = load_dataset("mnist5k")
    st = make_stream("shift", ds, 300, seed=9)
    t0 = time.perf_counter()
    tf_rate = train.per_sample_training_rate("mcu", st.x, st.y)
    tf_seconds = time.perf_counter() - t0
    result = {
        "model": str(trained_model()),
        "tensorflow_per_sample_sgd_samples_per_s": round(tf_rate, 1),
        "tensorflow_seconds": round(tf_seconds, 1),
        "schemes": rows,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "| scheme | host samples/s | vs TF per-sample loop | Cortex-M4 instructions/sample "
        "| static RAM (budget) | of which training | M4 ELF RAM* |",
        "|---|---|---|---|---|---|---|",
    ]
    for scheme, r in rows.items():
        lines.append(
            f"| {scheme} | {r['host_samples_per_s']:.0f} | "
            f"{r['host_samples_per_s'] / tf_rate:.1f}x | {r['m4_insns_per_sample'] / 1e6:.2f} M | "
            f"{r['ram_budget_bytes']:,d} B | {r['training_ram_bytes']:,d} B | "
            f"{r['m4_elf_ram_bytes']:,d} B |"
        )
    lines.append("")
    lines.append(
        f"TensorFlow per-sample SGD loop (same QAT network, batch 1, tf.function): "
        f"{tf_rate:.0f} samples/s. *ELF RAM includes the emulator-only per-cell write "
        "counters (8 B per weight cell) where the board has room for them."
    )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

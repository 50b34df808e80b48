"""Benchmark helper (not a test): where the Cortex-M4 instructions of one training sample go.

    PYTHONPATH=toolchain .venv/bin/python bench/profile_sample.py [--scheme lrt-maxnorm]
        [--k1 4] [--k2 14] [--top 40] [--set lrt_conv_sum=1]

Runs the `mcu` firmware of the scheme on QEMU mps2-an386 with k1 and with k2 samples of the
shift stream (the bench's stream, seed 9) under the counting plugin's per-address profile,
and prints (count(k2) - count(k1)) / (k2 - k1) per function. Unlike
`count_instructions(profile=True)`, which credits inlined code to the function it was inlined
into, every address is credited to the innermost function of its DWARF inline chain
(`addr2line -i`), so the static helpers of lrt_lowrank.c and lrt_backprop.c show up on their own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness: not installed

from harness.buildcache import built
from lrt.boards import load_board
from lrt.data import load_dataset, make_stream
from lrt.emulate import protocol as P
from lrt.emulate.qemu import QemuRunner, build_insncount_plugin
from lrt.model import Model

M4 = "mps2-an386"


def pc_counts(elf: Path, data: bytes) -> Counter[int]:
    board = load_board(M4)
    plugin = build_insncount_plugin()
    with tempfile.TemporaryDirectory(prefix="lrt-prof-") as tmp:
        out, prof = Path(tmp) / "count.txt", Path(tmp) / "prof.txt"
        QemuRunner(board, elf, plugin=plugin, plugin_args=[f"out={out}", f"prof={prof}"]).run(data)
        counts: Counter[int] = Counter()
        for line in prof.read_text().splitlines():
            pc, n = line.split()
            counts[int(pc, 16)] += int(n)
    return counts


def innermost(elf: Path, pcs: list[int]) -> dict[int, tuple[str, str]]:
    """pc -> (the innermost (possibly inlined) function at that address, its file:line)."""
    proc = subprocess.run(
        ["arm-none-eabi-addr2line", "-e", str(elf), "-f", "-i", "-a", *[f"{pc:#x}" for pc in pcs]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    names: dict[int, tuple[str, str]] = {}
    cur: int | None = None
    name = ""
    for line in proc.stdout.splitlines():
        if line.startswith("0x"):
            cur, name = int(line, 16), ""
        elif cur is not None and not name:
            name = line.strip()  # the first name after the address is the innermost
        elif cur is not None:
            names[cur] = (name, Path(line.split()[0]).name)
            cur = None
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="lrt-maxnorm")
    ap.add_argument("--k1", type=int, default=4)
    ap.add_argument("--k2", type=int, default=14)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--lines", metavar="FUNCTION", help="also per source line of FUNCTION")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="build settings (integers)"
    )
    args = ap.parse_args()
    overrides = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    build = built(args.scheme, M4, **overrides)
    elf = build / "out" / M4 / "fw.elf"
    model = Model.load(build / "ir")
    st = make_stream("shift", load_dataset("mnist5k"), args.k2, seed=9)
    xq = model.quantize_input(st.x)

    def stream(k: int) -> bytes:
        frames = [P.hello_request()]
        frames += [P.train_request(xq[i].tobytes(), int(st.y[i])) for i in range(k)]
        frames.append(P.bye_request())
        return b"".join(frames)

    a, b = pc_counts(elf, stream(args.k1)), pc_counts(elf, stream(args.k2))
    diff = {pc: b[pc] - a.get(pc, 0) for pc in b}
    names = innermost(elf, sorted(pc for pc, n in diff.items() if n))
    per: Counter[str] = Counter()
    files: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for pc, n in diff.items():
        name, where = names.get(pc, ("?", "?"))
        per[name] += n
        files[where.split(":")[0]] += n
        if args.lines and name in args.lines.split(","):
            lines[f"{name} {where}"] += n
    k = args.k2 - args.k1
    total = sum(per.values()) / k
    print(f"{elf}: {total / 1e6:.3f} M instructions per sample (samples {args.k1}..{args.k2})")
    for name, n in per.most_common(args.top):
        print(f"{n / k / 1e3:10.1f} k  {100 * n / k / total:5.1f} %  {name}")
    print("per source file:")
    for name, n in files.most_common(args.top):
        print(f"{n / k / 1e3:10.1f} k  {100 * n / k / total:5.1f} %  {name}")
    for where, n in sorted(lines.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{n / k / 1e3:10.1f} k  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""RAM / flash budget of the generated firmware, itemised, checked against the board.

All buffers are static, so the budget is known before compiling the firmware and before
training: it needs only the model's shapes. The sizes are not re-typed here. The budget asks
the C: it generates the firmware's main.c and lrt_model.c for the model (zero parameters are
enough), compiles them with the board's own compiler and flags (host cc, or
arm-none-eabi-gcc: struct sizes and padding follow the ABI) and reads every static object's
size from the symbol table (``nm -S``). Whatever main.c.j2 declares, sized by the library's
``LRT_*_SIZE`` macros and ``sizeof`` its structs, is counted as it is. Results are cached by
the hash of the generated sources and the compiler command.

On top of the measured objects the budget states two reserves the objects cannot show: the
stack, and the C runtime + board support code's own statics (newlib, semihosting, UART).
tests/emu/test_budget_elf.py checks the total against the linked ELF of every ARM board.

Flash is the model's constants (measured as above) plus everything else the image holds:
library code, main.c, the C runtime and the board support. That part barely depends on the
model, so it is measured once per board and config by linking the firmware of the `tiny`
preset with the board's own toolchain (cached like the objects).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrt import build, cflags, codegen, export, resources
from lrt.boards import Board
from lrt.bsp import write_bsp
from lrt.config import LRT_SCHEMES, BuildConfig
from lrt.errors import UserError
from lrt.model import Layer, Model

# bytes of stack on a board without a memory map (the host: the OS gives megabytes); a board
# with one reserves the stack its linker script reserves (`memory.stack_size`)
STACK_RESERVE = 4096
# statics of the C runtime and board support: newlib's reentrancy struct (1 KB) and malloc
# arena header (1 KB) and open-file table of the semihosted builds (measured 2.4 KB), UARTs
RUNTIME_RESERVE = 3072
CODE_ITEM = "code, C runtime and board support (linked, measured)"
# when not even the `tiny` image links on the board (its RAM is too small for the scheme's
# buffers; the model is refused for RAM then anyway): the largest code measured, 68 KB
CODE_FALLBACK = 70_000
CODE_FALLBACK_ITEM = "code, C runtime and board support (estimate)"

# Static objects of main.c / lrt_model.c -> budget item. Items starting "train:" are the
# training state. Objects matching nothing keep their own name (nothing is dropped).
SYMBOL_ITEMS: tuple[tuple[str, str | None], ...] = (
    (r"act_[ab]", "activations (2 ping-pong buffers, reused for gradients)"),
    (r"lrt_model_bias_\d+", "biases (RAM working copy)"),
    (r"lrt_model_bn_.*", "batch norm (state + tables)"),
    (r"app|app_frames", "protocol server (lrt_app: frame buffers)"),
    (r"dev|net", "device + network state (lrt_device, lrt_net)"),
    (r"nvm_work", "NVM commit window"),
    (r"nvm|nvm_cfg|nvm_(ram|file)_backend", "NVM store state"),
    # the host's NVM region image stands for the device's NVM, not its RAM
    (r"nvm_ram", None),
    (r"keep_\d+", "train: kept activations"),
    (r"scratch|delta_row", "train: scratch row + delta row"),
    (r"layer_state|acc_samples", "train: per-layer state"),
    (r"acc_state_\d+|acc_\d+", "train: LRT accumulators (QL, QR, struct)"),
    (r"lrt_work", "train: LRT shared work buffer"),
    (r"lrt_block", "train: LRT gradient block buffer"),
    (r"conv_sum_buf_\d+|conv_sum_\d+|conv_sum", "train: LRT conv gradient sums (int16)"),
    (r"dx_work", "train: input-gradient rows + sign bits"),
    (r"grad_acc", "train: sgd-batch gradient sums (n x m int32)"),
    (r"head_residual", "train: classifier residual (int32)"),
    (r"kernel_buf", "SIMD conv im2col buffer"),
)
# exact per-cell write counters: an emulator extra outside the budget (Budget.counter_ram)
COUNTER_OBJECTS = ("cell_writes", "paper_writes")
COUNTER_RAM_SHARE = 2  # per-cell write counters only when they use < 1/2 of the spare RAM
RAM_TYPES = set("bBdDcC")  # nm: bss, data, common
DATA_TYPES = set("dD")  # initialised RAM: its initial values sit in flash too
FLASH_TYPES = set("rRtT")


def lrt_step_ops(
    lay: Layer, rank: int, block: int, conv_sum: bool = False, batch: int = 1
) -> dict[str, float]:
    """Multiply-accumulates of one sample's LRT steps on a weight layer (the cost model).

    Per block of k columns: twice Gram-Schmidt of k columns against r + k basis columns on
    both sides, the core (P x P, P <= r + k, k products per entry), a one-sided Jacobi SVD
    (about 6 sweeps of P^2 / 2 pairs, 6 P each), the rotation of both bases ((n + m) P r).
    A narrow conv layer also forms its per-sample gradient (pixels x taps x n); with
    `conv_sum` it adds that gradient to its sum (n m) and takes one block step per
    pseudo-batch of `batch` samples.
    """
    n, m = lay.weight_matrix_shape()
    pixels = int(lay.out_shape[0] * lay.out_shape[1]) if lay.kind == "conv2d" else 1
    blocks: float
    if lay.kind == "dense":
        blocks, k, grad = 1, 1, 0
    elif n <= block:
        blocks, k, grad = 1, n, pixels * n * m
        if conv_sum:  # one step per pseudo-batch, n m additions per sample
            blocks, grad = 1 / batch, grad + n * m
    else:
        blocks, k, grad = -(-pixels // block), block, 0
    p = rank + k
    per_block = (
        2 * (n + m) * k * (rank + k)  # Gram-Schmidt, two passes
        + p * p * k  # core
        + 6 * (p * p // 2) * 6 * p  # Jacobi sweeps
        + (n + m) * p * rank  # basis rotation
    )
    return {"blocks": blocks, "k": k, "ops": round(grad + blocks * per_block)}



@dataclass
class Budget:
    """Bytes per item of RAM and flash, and the LRT cost per weight layer."""

    ram_items: dict[str, int] = field(default_factory=dict)
    flash_items: dict[str, int] = field(default_factory=dict)
    lrt_layers: list[dict[str, Any]] = field(default_factory=list)
    counter_ram: int = 0  # what the exact per-cell write counters would add (not in ram)

    @property
    def ram(self) -> int:
        return sum(self.ram_items.values())

    @property
    def flash(self) -> int:
        return sum(self.flash_items.values())

    def training_ram(self) -> int:
        return sum(v for k, v in self.ram_items.items() if k.startswith("train:"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ram_bytes": self.ram,
            "flash_bytes": self.flash,
            "training_ram_bytes": self.training_ram(),
            "ram_items": self.ram_items,
            "flash_items": self.flash_items,
            "lrt_cost": self.lrt_layers,
        }

    def table(self) -> str:
        rows = ["RAM budget (static buffers)"]
        for k, v in sorted(self.ram_items.items(), key=lambda kv: -kv[1]):
            rows.append(f"  {k:<34} {v:>9,d} B")
        rows.append(
            f"  {'total':<34} {self.ram:>9,d} B  (training state {self.training_ram():,d} B)"
        )
        rows.append("flash budget")
        for k, v in sorted(self.flash_items.items(), key=lambda kv: -kv[1]):
            rows.append(f"  {k:<34} {v:>9,d} B")
        rows.append(f"  {'total':<34} {self.flash:>9,d} B")
        if self.lrt_layers:
            rows.append("LRT cost per weight layer (bytes; block steps and MACs per sample)")
            rows.append(
                f"  {'layer':<12} {'n x m':>10} {'LRT state':>10} {'full acc':>10} "
                f"{'batch B':>10} {'blocks':>6} {'ops/sample':>11}"
            )
            for c in self.lrt_layers:
                rows.append(
                    f"  {c['layer']:<12} {c['n']:>4} x {c['m']:<4} {c['lrt_state']:>10,d} "
                    f"{c['full_accumulator']:>10,d} {c['stored_batch']:>10,d} "
                    f"{c['blocks_per_sample']:>6.3g} {c['ops_per_sample']:>11,d}"
                )
        return "\n".join(rows)

    def static_ram(self) -> int:
        """RAM of the measured static objects (the budget without its reserves)."""
        return self.ram - self.ram_items.get("stack reserve", 0) - self.ram_items.get(
            "C runtime + board support reserve", 0
        )

    def problems(self, board: Board) -> list[str]:
        """Why this budget does not fit the board (empty when it fits)."""
        problems = []
        if self.ram > board.ram_budget:
            top = ", ".join(
                f"{k} {v:,d} B"
                for k, v in sorted(self.ram_items.items(), key=lambda kv: -kv[1])[:3]
            )
            problems.append(
                f"RAM needs {self.ram:,d} B but board {board.name} has {board.ram_budget:,d} B "
                f"(over by {self.ram - board.ram_budget:,d} B; biggest: {top})"
            )
        if self.flash > board.flash_budget:
            problems.append(
                f"flash needs {self.flash:,d} B but board {board.name} has "
                f"{board.flash_budget:,d} B (over by {self.flash - board.flash_budget:,d} B)"
            )
        return problems

    def counters_fit(self, board: Board) -> bool:
        """Whether the exact per-cell write counters fit the RAM the budget leaves spare."""
        return self.counter_ram * COUNTER_RAM_SHARE <= max(board.ram_budget - self.ram, 0)

    def check(self, board: Board) -> None:
        problems = self.problems(board)
        if problems:
            raise UserError("model does not fit: " + "; ".join(problems))


@dataclass(frozen=True)
class StaticObject:
    name: str
    kind: str  # nm type letter
    size: int
    source: str  # object file stem: main or lrt_model


def _compiler(board: Board) -> tuple[str, str, list[str]]:
    """(cc, nm, cflags) the firmware build uses for this board."""
    if board.is_host:
        cc = os.environ.get("CC", "cc")
        return cc, "nm", cflags.host_cflags(board, cc=cc)
    return cflags.ARM_PREFIX + "gcc", cflags.ARM_PREFIX + "nm", cflags.arm_cflags(board)


def probe_static_objects(model: Model, cfg: BuildConfig, board: Board) -> list[StaticObject]:
    """Every static object of the firmware's main.c and lrt_model.c for this model, config and
    board, as the board's compiler lays it out (cached by source hash)."""
    cc, nm, flags = _compiler(board)
    for tool in (cc, nm):
        cflags.require_tool(tool)
    with tempfile.TemporaryDirectory(prefix="lrt-budget-") as tmp:
        src, bsp = Path(tmp) / "src", Path(tmp) / "bsp"
        # with the per-cell write counters, which the budget reports apart (counter_ram)
        codegen.generate(model, cfg, board, src, counters=True, strict=False)
        write_bsp(bsp, board, board.io)
        units = [src / "main.c", src / "lrt_model.c"]
        h = hashlib.sha256(json.dumps([cc, flags]).encode())
        for f in sorted([*src.glob("*.[ch]"), *bsp.glob("*.h")]):
            if f.suffix == ".h" or f in units:
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        cached = resources.cache_dir() / "budget-probe" / f"{h.hexdigest()[:24]}.json"
        if cached.is_file():
            return [StaticObject(**o) for o in json.loads(cached.read_text())]
        objects = build.compile_check(board, units, [src, bsp], Path(tmp) / "obj")
        found = [sym for obj in objects for sym in _symbols(obj, board)]
    _store_json(cached, [o.__dict__ for o in found])
    return found


def _store_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh)
    os.replace(part, path)  # concurrent builds may race here: last writer wins, same data


def probe_code_flash(cfg: BuildConfig, board: Board, with_store: bool) -> int | None:
    """Flash of an ARM image beyond its model's constants and initialised data: library code,
    main.c, C runtime, board support, vector table. Linked for the `tiny` preset with this
    config and board and, as the measured model, with or without the NVM weight store (the
    code is otherwise the same for every model; the model's own part is subtracted), cached
    by the hash of the generated sources and the compiler command. None when the `tiny`
    image does not link on this board."""
    small = export.architecture("tiny")
    small_cfg = dataclasses.replace(cfg, train_layers=())
    cc, _, flags = _compiler(board)
    with tempfile.TemporaryDirectory(prefix="lrt-code-") as tmp:
        gen = Path(tmp)
        codegen.generate(
            small, small_cfg, board, gen / "src", counters=False, strict=False,
            with_store=with_store,
        )  # fmt: skip
        # the key covers what is linked: the sources and the board support (startup code,
        # linker script) that build_firmware writes the same way
        write_bsp(gen / "bsp", board, board.io)
        h = hashlib.sha256(json.dumps([board.name, cc, flags]).encode())
        for f in sorted([*(gen / "src").glob("*.[ch]"), *(gen / "bsp").iterdir()]):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        path = resources.cache_dir() / "code-probe" / f"{h.hexdigest()[:24]}.json"
        if path.is_file():
            return int(json.loads(path.read_text()))
        try:
            fw = build.build_firmware(gen, board, check_budget=False)
        except UserError:
            return None
        assert fw.footprint is not None
        own = 0  # the tiny model's constants and initial data, as plan_budget counts them
        for obj in _symbols(fw.build_dir / "obj" / "src" / "lrt_model.o", board):
            if obj.kind in DATA_TYPES or obj.kind in FLASH_TYPES:
                own += obj.size
        for obj in _symbols(fw.build_dir / "obj" / "src" / "main.o", board):
            if obj.kind in DATA_TYPES:
                own += obj.size
        code = fw.footprint.text + fw.footprint.data - own
    _store_json(path, code)
    return code


def _symbols(obj: Path, board: Board) -> list[StaticObject]:
    """Sized symbols of an object file (``nm -S``)."""
    nm = _compiler(board)[1]
    out = subprocess.run([nm, "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            found.append(StaticObject(parts[3], parts[2], int(parts[1], 16), obj.stem))
    return found


def _item(name: str) -> str | None:
    for pattern, label in SYMBOL_ITEMS:
        if re.fullmatch(pattern, name):
            return label
    return f"other: {name}"


def stack_reserve(board: Board) -> int:
    """The stack the firmware links with on this board: the RAM that no static may use."""
    return board.memory.stack_size if board.memory is not None else STACK_RESERVE


def plan_budget(model: Model, cfg: BuildConfig, board: Board) -> Budget:
    """Static RAM/flash of the firmware for this model (its shapes), config and board."""
    b = Budget()
    objects = probe_static_objects(model, cfg, board)
    for obj in objects:
        if obj.name in COUNTER_OBJECTS:
            b.counter_ram += obj.size
            continue
        if obj.kind in RAM_TYPES:
            label = _item(obj.name)
            if label is not None:
                b.ram_items[label] = b.ram_items.get(label, 0) + obj.size
        if obj.kind in DATA_TYPES or (obj.kind in FLASH_TYPES and obj.source == "lrt_model"):
            label = (
                "initial values of RAM data" if obj.kind in DATA_TYPES
                else "model constants (weight blob, rescale and layer tables)"
            )
            b.flash_items[label] = b.flash_items.get(label, 0) + obj.size
    b.ram_items["stack reserve"] = stack_reserve(board)
    b.ram_items["C runtime + board support reserve"] = RUNTIME_RESERVE
    if not board.is_host:
        # only inference runs without the NVM store (its weights then stay in the image)
        geo = codegen.nvm_store(model, cfg, board)[0]
        with_store = cfg.scheme != "inference" or geo is not None
        code = probe_code_flash(cfg, board, with_store)
        if code is None:
            b.flash_items[CODE_FALLBACK_ITEM] = CODE_FALLBACK
        else:
            b.flash_items[CODE_ITEM] = code
    if cfg.scheme not in LRT_SCHEMES:
        return b
    sizes = {o.name: o.size for o in objects}
    for i, lay in enumerate(model.layers):
        if not (lay.has_weights and lay.trainable):
            continue
        n, m = lay.weight_matrix_shape()
        steps = int(lay.out_shape[0] * lay.out_shape[1]) if lay.kind == "conv2d" else 1
        batch = cfg.batch_conv if lay.kind == "conv2d" else cfg.batch_dense
        cost = lrt_step_ops(lay, cfg.rank, cfg.lrt_block, cfg.conv_sum, batch)
        b.lrt_layers.append(
            {
                "layer": lay.name,
                "n": n,
                "m": m,
                "lrt_state": sum(
                    sizes.get(f"{obj}_{i}", 0)
                    for obj in ("acc_state", "acc", "conv_sum_buf", "conv_sum")
                ),
                "full_accumulator": 4 * n * m,
                "stored_batch": batch * steps * (n + m),
                "ops_per_sample": cost["ops"],
                "blocks_per_sample": cost["blocks"],
                "block_columns": cost["k"],
            }
        )
    return b

"""RAM / flash budget of the generated firmware, itemised, checked against the board.

All buffers are static and their sizes follow from the IR and the config, so the budget is
known before compiling. The figures mirror the buffers codegen declares (see
firmware_templates/lrt_model.c.j2); ARM builds are cross-checked with the ELF's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lrt.config import BuildConfig
from lrt.errors import UserError
from lrt.model import Layer, Model

STACK_RESERVE = 4096  # bytes of stack assumed for the kernels' locals and the protocol


class _BoardLike(Protocol):
    name: str
    flash_budget: int
    ram_budget: int


def _act_size(layer: Layer) -> int:
    n = 1
    for d in layer.out_shape:
        n *= int(d)
    return n


def lrt_state_bytes(n: int, m: int, rank: int) -> int:
    """Bytes of one LRT accumulator: QL, QR int16 (q = rank + 1 columns) + cx + bookkeeping."""
    q = rank + 1
    return 2 * q * (n + m) + 4 * rank + 32


@dataclass
class Budget:
    ram_items: dict[str, int] = field(default_factory=dict)
    flash_items: dict[str, int] = field(default_factory=dict)
    lrt_layers: list[dict[str, Any]] = field(default_factory=list)

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
        rows.append(f"  {'total':<34} {self.ram:>9,d} B  (training state {self.training_ram():,d} B)")
        rows.append("flash budget")
        for k, v in sorted(self.flash_items.items(), key=lambda kv: -kv[1]):
            rows.append(f"  {k:<34} {v:>9,d} B")
        rows.append(f"  {'total':<34} {self.flash:>9,d} B")
        if self.lrt_layers:
            rows.append("LRT cost per weight layer (bytes; ops per accumulator step)")
            rows.append(
                f"  {'layer':<12} {'n x m':>10} {'LRT state':>10} {'full acc':>10} "
                f"{'batch B':>10} {'ops/step':>9}"
            )
            for c in self.lrt_layers:
                rows.append(
                    f"  {c['layer']:<12} {c['n']:>4} x {c['m']:<4} {c['lrt_state']:>10,d} "
                    f"{c['full_accumulator']:>10,d} {c['stored_batch']:>10,d} {c['ops_per_step']:>9,d}"
                )
        return "\n".join(rows)

    def check(self, board: _BoardLike) -> None:
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
        if problems:
            raise UserError("model does not fit: " + "; ".join(problems))


def plan_budget(model: Model, cfg: BuildConfig, board: _BoardLike) -> Budget:
    b = Budget()
    sizes = [int(model.input_shape[0] * model.input_shape[1] * model.input_shape[2])]
    sizes += [_act_size(lay) for lay in model.layers]
    biggest = max(sizes)
    b.ram_items["activations (2 ping-pong buffers)"] = 2 * biggest
    b.ram_items["biases (RAM working copy)"] = sum(
        4 * int(lay.bias.size) for lay in model.weight_layers()  # type: ignore[union-attr]
    )
    b.ram_items["stack reserve"] = STACK_RESERVE
    b.ram_items["protocol frame buffers"] = 2 * (2048 + 9)
    weights = sum(int(lay.weights.size) for lay in model.weight_layers())  # type: ignore[union-attr]
    b.flash_items["weights (factory set)"] = weights
    b.flash_items["code + tables (estimate)"] = 24_000 + sum(
        8 * int(lay.bias.size) for lay in model.weight_layers()  # type: ignore[union-attr]
    )
    if cfg.scheme == "inference":
        return b
    trainable = [lay for lay in model.weight_layers() if lay.trainable]
    first = min(model.layers.index(lay) for lay in trainable) if trainable else len(model.layers)
    keep = sum(_act_size(lay) for lay in model.layers[max(first - 1, 0) :])
    b.ram_items["train: kept activations"] = keep
    b.ram_items["train: gradient buffers (2)"] = 2 * biggest
    b.ram_items["train: softmax scratch"] = 4 * model.num_classes
    b.flash_items["weights (second NVM slot)"] = weights
    if cfg.scheme in ("lrt", "lrt-maxnorm"):
        lrt_total = 0
        patch = 0
        for lay in trainable:
            n, m = lay.weight_matrix_shape()
            state = lrt_state_bytes(n, m, cfg.rank)
            lrt_total += state
            patch = max(patch, m + n)
            steps = 1
            if lay.kind == "conv2d":
                steps = int(lay.out_shape[0] * lay.out_shape[1])
            q = cfg.rank + 1
            b.lrt_layers.append(
                {
                    "layer": lay.name,
                    "n": n,
                    "m": m,
                    "lrt_state": state,
                    "full_accumulator": 4 * n * m,
                    "stored_batch": (cfg.batch_conv if lay.kind == "conv2d" else cfg.batch_dense)
                    * steps
                    * (n + m),
                    "ops_per_step": (n + m) * q * q + q**3,
                    "steps_per_sample": steps,
                }
            )
        b.ram_items["train: LRT accumulators"] = lrt_total
        b.ram_items["train: LRT patch scratch"] = 2 * patch
    return b

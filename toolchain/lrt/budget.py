"""RAM / flash budget of the generated firmware, itemised, checked against the board.

All buffers are static and their sizes follow from the IR and the config, so the budget is
known before compiling. The figures mirror the buffers codegen declares (see
firmware_templates/lrt_model.c.j2); ARM builds are cross-checked with the ELF's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lrt.config import BuildConfig
from lrt.errors import UserError
from lrt.model import Layer, Model

STACK_RESERVE = 4096  # bytes of stack assumed for the kernels' locals and the protocol


class _BoardLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def flash_budget(self) -> int: ...
    @property
    def ram_budget(self) -> int: ...
    @property
    def simd(self) -> bool: ...


def _act_size(layer: Layer) -> int:
    n = 1
    for d in layer.out_shape:
        n *= int(d)
    return n


def lrt_state_bytes(n: int, m: int, rank: int) -> int:
    """Bytes of one LRT accumulator: QL, QR int16 (rank columns) + the struct."""
    return 2 * rank * (n + m) + LRT_STRUCT_BYTES


def lrt_work_bytes(rank: int, block: int) -> int:
    """Bytes of the shared LRT work buffer (LRT_LOWRANK_WORK_SIZE): the core and its SVD
    (P x P each, P = rank + block) and the coefficients, reused for the truncation weights
    (P x max(rank, block) each)."""
    p = rank + block
    return 8 * p * (p + max(rank, block))


def lrt_block_words(layers: list[Layer], block: int) -> int:
    """int32 words of the trainer's block buffer (lrt_train_lrt_block_size / 4)."""
    words = 1
    for lay in layers:
        n, m = lay.weight_matrix_shape()
        if lay.kind == "dense":
            w = n + m
        elif n <= block:
            w = n * n + n * m
        else:
            w = block * (n + m)
        words = max(words, w)
    return words


def lrt_step_ops(lay: Layer, rank: int, block: int) -> dict[str, int]:
    """Multiply-accumulates of one sample's LRT steps on a weight layer (the cost model).

    Per block of k columns: twice Gram-Schmidt of k columns against r + k basis columns on
    both sides, the core (P x P, P <= r + k, k products per entry), a one-sided Jacobi SVD
    (about 6 sweeps of P^2 / 2 pairs, 6 P each), the rotation of both bases ((n + m) P r).
    A narrow conv layer also forms its per-sample gradient (pixels x taps x n).
    """
    n, m = lay.weight_matrix_shape()
    pixels = int(lay.out_shape[0] * lay.out_shape[1]) if lay.kind == "conv2d" else 1
    if lay.kind == "dense":
        blocks, k, grad = 1, 1, 0
    elif n <= block:
        blocks, k, grad = 1, n, pixels * n * m
    else:
        blocks, k, grad = -(-pixels // block), block, 0
    p = rank + k
    per_block = (
        2 * (n + m) * k * (rank + k)  # Gram-Schmidt, two passes
        + p * p * k  # core
        + 6 * (p * p // 2) * 6 * p  # Jacobi sweeps
        + (n + m) * p * rank  # basis rotation
    )
    return {"blocks": blocks, "k": k, "ops": grad + blocks * per_block}


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
                    f"{c['blocks_per_sample']:>6,d} {c['ops_per_sample']:>11,d}"
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


def conv_buffer_bytes(k: int) -> int:
    """lrt_conv2d_s8_get_buffer_size of the SIMD kernel for a filter of k taps (lrt_kernels.h):
    two int16 im2col columns and two int8 patches (k rounded up to 4 each)."""
    return 4 * k + 2 * ((k + 3) // 4 * 4)


def kernel_buffer_size(model: Model, simd: bool) -> int:
    """lrt_net_kernel_buffer_size: the largest conv layer's buffer, 0 without SIMD kernels."""
    if not simd:
        return 0
    return max(
        [
            conv_buffer_bytes(int(np.prod(lay.weights.shape[1:])))
            for lay in model.layers
            if lay.kind == "conv2d" and lay.weights is not None
        ]
        or [0]
    )


def dx_work_bytes(layer: Layer) -> int:
    """lrt_bp_input_grad_work_size: kernel-height rows of in_w*in_c int32 sums (dense: the
    whole input) and one sign bit per input element, in words."""
    assert layer.weights is not None
    in_size = int(np.prod(layer.in_shape))
    if layer.kind == "conv2d":
        rows = int(layer.weights.shape[1]) * int(layer.in_shape[1]) * int(layer.in_shape[2])
    else:
        rows = in_size
    return 4 * rows + 4 * ((in_size + 31) // 32)


def train_buffer_sizes(model: Model) -> dict[str, Any]:
    """Buffer sizes of the trainer, mirroring lrt_train.c's size helpers (checked at boot)."""
    layers = model.layers
    sizes = [int(np.prod(model.input_shape)), model.num_classes]
    for lay in layers:
        sizes += [int(np.prod(lay.in_shape)), int(np.prod(lay.out_shape))]
    trainable = [i for i, lay in enumerate(layers) if lay.has_weights and lay.trainable]
    first = trainable[0] if trainable else len(layers)

    def m_of(lay: Layer) -> int:
        assert lay.weights is not None
        return int(np.prod(lay.weights.shape[1:]))

    def keep_needed(i: int) -> bool:
        if i == len(layers) - 1:
            return True
        if layers[i].kind == "flatten":
            return False
        j = i + 1
        while j < len(layers) and layers[j].kind == "flatten":
            j += 1
        if j < len(layers) and layers[j].kind == "batchnorm":
            return True  # its statistics are updated from its input
        return first < len(layers) and j >= first

    return {
        "act_size": max(sizes),
        "scratch_size": max([m_of(layers[i]) for i in trainable] or [1]),
        # lrt_train_dx_work_size: the layers that back-propagate into their input
        "dx_work_size": max(
            [dx_work_bytes(lay) for lay in layers[first + 1 :] if lay.has_weights] or [0]
        ),
        "cell_count": sum(layers[i].n_weights for i in trainable) or 1,
        "trainable": trainable,
        "keep": [
            {"index": i, "size": int(np.prod(lay.out_shape))}
            for i, lay in enumerate(layers)
            if keep_needed(i)
        ],
    }


BN_BYTES_PER_CHANNEL = 30  # gamma, beta, mean, msq, bias, mu, std_q (int32), w, shift (int8)
BN_STRUCT_BYTES = 44  # sizeof(lrt_bn) on Cortex-M (10 pointers + batch, padded)
TRAIN_LAYER_STATE_BYTES = 80  # sizeof(lrt_train_layer_state) on Cortex-M and host
LRT_STRUCT_BYTES = 160  # sizeof(lrt_lowrank) without its buffers


def plan_budget(model: Model, cfg: BuildConfig, board: _BoardLike) -> Budget:
    """Static RAM/flash of the firmware main.c declares (same sizes as codegen uses)."""
    b = Budget()
    sizes = train_buffer_sizes(model)
    act = (
        sizes["act_size"]
        if cfg.scheme != "inference"
        else max([int(np.prod(model.input_shape))] + [_act_size(lay) for lay in model.layers])
    )
    b.ram_items["activations (2 ping-pong buffers, reused for gradients)"] = 2 * act
    b.ram_items["biases (RAM working copy)"] = sum(4 * lay.n_bias for lay in model.weight_layers())
    bn_channels = sum(int(lay.out_shape[-1]) for lay in model.layers if lay.kind == "batchnorm")
    if bn_channels:
        n_bn = sum(lay.kind == "batchnorm" for lay in model.layers)
        # state (gamma, beta, mean, msq), forward tables (w, shift, bias, mu, std_q), pow
        b.ram_items["batch norm (state + tables)"] = (
            BN_BYTES_PER_CHANNEL * bn_channels + (4 + BN_STRUCT_BYTES) * n_bn
        )
    kbuf = kernel_buffer_size(model, board.simd)
    if kbuf:
        b.ram_items["SIMD conv im2col buffer"] = kbuf
    b.ram_items["stack reserve"] = STACK_RESERVE
    b.ram_items["protocol frame buffers"] = 2 * (2048 + 9) + 256
    weights = sum(lay.n_weights for lay in model.weight_layers())
    b.flash_items["weights (factory set)"] = weights
    b.flash_items["code + tables (estimate)"] = 24_000 + sum(
        8 * lay.n_bias for lay in model.weight_layers()
    )
    if bn_channels:
        # initial values of the RAM arrays and the factory snapshot in the weight blob
        b.flash_items["batch norm (init + snapshot)"] = (
            2 * BN_BYTES_PER_CHANNEL * bn_channels
        )
    if cfg.scheme == "inference":
        return b
    b.ram_items["train: kept activations"] = sum(k["size"] for k in sizes["keep"])
    b.ram_items["train: scratch row + delta row"] = 3 * sizes["scratch_size"]
    if sizes["dx_work_size"]:
        b.ram_items["train: input-gradient rows + sign bits"] = sizes["dx_work_size"]
    b.ram_items["train: per-layer state"] = TRAIN_LAYER_STATE_BYTES * len(model.layers)
    trainable = [lay for lay in model.weight_layers() if lay.trainable]
    if cfg.scheme in ("lrt", "lrt-maxnorm"):
        lrt_total = 0
        work = 0
        for lay in trainable:
            n, m = lay.weight_matrix_shape()
            state = lrt_state_bytes(n, m, cfg.rank)
            lrt_total += state
            work = max(work, lrt_work_bytes(cfg.rank, cfg.lrt_block))
            steps = int(lay.out_shape[0] * lay.out_shape[1]) if lay.kind == "conv2d" else 1
            batch = cfg.batch_conv if lay.kind == "conv2d" else cfg.batch_dense
            cost = lrt_step_ops(lay, cfg.rank, cfg.lrt_block)
            b.lrt_layers.append(
                {
                    "layer": lay.name,
                    "n": n,
                    "m": m,
                    "lrt_state": state,
                    "full_accumulator": 4 * n * m,
                    "stored_batch": batch * steps * (n + m),
                    "ops_per_sample": cost["ops"],
                    "blocks_per_sample": cost["blocks"],
                    "block_columns": cost["k"],
                }
            )
        b.ram_items["train: LRT accumulators (QL, QR, cx)"] = lrt_total
        b.ram_items["train: LRT shared work buffer"] = work
        b.ram_items["train: LRT gradient block buffer"] = 4 * lrt_block_words(
            trainable, cfg.lrt_block
        )
    if cfg.scheme == "sgd-batch":
        # the exact sum: one int32 per trainable weight (lrt_train.h, buffers.grad_acc)
        b.ram_items["train: sgd-batch gradient sums (n x m int32)"] = 4 * sizes["cell_count"]
    return b

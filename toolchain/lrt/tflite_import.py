"""Full-integer .tflite -> IR (lrt.model.Model), without TensorFlow.

Reads the flatbuffer with the schema bindings that ship with ai-edge-litert and maps a
sequential int8 graph onto the IR. Supported operators:

  CONV_2D, MAX_POOL_2D, FULLY_CONNECTED  -> conv2d / maxpool2d / dense layers;
  fused activations NONE, RELU, RELU6, RELU_N1_TO_1 -> the layer's int8 clamp;
  RESHAPE                                 -> flatten (a no-op on NHWC data), or folded into
                                             the input shape when it comes first; int32 ops
                                             that only compute a RESHAPE's target shape
                                             (SHAPE, STRIDED_SLICE, PACK, ... as emitted for
                                             a dynamic-batch Keras Flatten) are skipped;
  RELU, RELU6 (standalone)                -> folded into the previous layer's clamp, when
                                             input and output quantization are identical;
  DEPTHWISE_CONV_2D (1x1, depth multiplier 1, stride 1, per-channel int8 filter, no
  activation) carrying lrt's "lrt_batchnorm" metadata -> batchnorm (the streaming batch norm
                                             lrt exports, lrt.batchnorm; the metadata holds
                                             the state its tables derive from, checked);
  QUANTIZE (first op, float32 -> int8)    -> dropped: the firmware takes int8 input;
  DEQUANTIZE (last op, int8 -> float32)   -> dropped: the firmware returns int8 logits.

So both int8-I/O models and float-I/O models with int8 inside are accepted; the IR and
the firmware always work on int8 tensors. Anything else raises lrt.errors.UserError naming
the operator and its position.

The per-channel rescale (out_multiplier/out_shift) is recomputed from the scales the same
way the TFLite kernels do in their Prepare step, so lrt's forward pass is bit-exact with the
interpreter's reference kernels (tests/golden).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from lrt import batchnorm
from lrt.errors import UserError
from lrt.model import META_FIELD_ACCURACY, META_TEST_ACCURACY, Layer, Model, QParams
from lrt.quant import BIAS_EXP, exp_of, quantize_multipliers
from lrt.reference import output_size

SUPPORTED = (
    "CONV_2D, MAX_POOL_2D, FULLY_CONNECTED, RESHAPE (flatten), RELU, RELU6, "
    "DEPTHWISE_CONV_2D (only lrt's batch-norm export: 1x1 with lrt_batchnorm metadata), "
    "QUANTIZE (float input -> int8, first op only), DEQUANTIZE (int8 -> float output, last op "
    "only); fused activations NONE/RELU/RELU6/RELU_N1_TO_1"
)
OP_NAMES: dict[int, str] = {
    v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")
}
TYPE_NAMES: dict[int, str] = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
ACT_NAMES: dict[int, str] = {
    v: k for k, v in vars(fb.ActivationFunctionType).items() if not k.startswith("_")
}
Shape = tuple[int, ...]
# int32 shape arithmetic that may feed a RESHAPE's shape input (see _shape_plumbing)
_SHAPE_OPS = frozenset(
    {"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE", "SQUEEZE",
     "EXPAND_DIMS", "REDUCE_PROD", "MUL"}
)
_DTYPES = {fb.TensorType.INT8: np.int8, fb.TensorType.INT32: np.int32}


@dataclass(frozen=True)
class _Tensor:
    index: int
    name: str
    type: int
    shape: tuple[int, ...]
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    buffer: int

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))


def _fail(label: str, message: str) -> UserError:
    return UserError(f"{label}: {message}")


def _parse(data: bytes, label: str) -> Any:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise _fail(label, "not a TensorFlow Lite model (flatbuffer identifier 'TFL3' missing)")
    try:
        model = fb.ModelT.InitFromPackedBuf(data, 0)
        # Touch every tensor buffer now, so a truncated file fails here and not later.
        for buf in model.buffers or []:
            if buf.data is not None:
                np.asarray(buf.data)
    except Exception as exc:  # the flatbuffer reader raises anything on garbage
        raise _fail(
            label, f"corrupt or truncated .tflite flatbuffer ({type(exc).__name__}: {exc})"
        ) from exc
    return model


def _op_name(model: Any, op: Any) -> str:
    try:
        code = model.operatorCodes[op.opcodeIndex]
    except (IndexError, TypeError) as exc:
        raise UserError(f"operator code index {op.opcodeIndex} out of range") from exc
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == fb.BuiltinOperator.CUSTOM:
        custom = code.customCode
        if isinstance(custom, bytes):
            custom = custom.decode(errors="replace")
        return f"CUSTOM({custom})"
    return OP_NAMES.get(builtin, f"builtin #{builtin}")


def _round_away(x: np.floating[Any]) -> int:
    """std::round (half away from zero), the TfLiteRound of the activation-range code."""
    v = float(x)
    return int(np.sign(v) * np.floor(abs(v) + 0.5))


def activation_range(activation: int, q: QParams) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for an int8 output (float32 arithmetic)."""
    scale = np.float32(q.scale)

    def quantize(f: float) -> int:
        return q.zero_point + _round_away(np.float32(f) / scale)

    if activation == fb.ActivationFunctionType.NONE:
        return -128, 127
    if activation == fb.ActivationFunctionType.RELU:
        return max(-128, quantize(0.0)), 127
    if activation == fb.ActivationFunctionType.RELU6:
        return max(-128, quantize(0.0)), min(127, quantize(6.0))
    if activation == fb.ActivationFunctionType.RELU_N1_TO_1:
        return max(-128, quantize(-1.0)), min(127, quantize(1.0))
    raise UserError(f"unsupported fused activation {ACT_NAMES.get(activation, activation)}")


def rescale_multipliers(
    input_scale: float, weight_scales: Sequence[float] | np.ndarray, output_scale: float,
    n_out: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) of CONV_2D / FULLY_CONNECTED, expanded to n_out.

    The real scale is double(in) * double(w[c]) / double(out) with float32 operands, as in
    TFLite's PopulateConvolutionQuantizationParams and its reference FULLY_CONNECTED kernels
    (checked against the interpreter: a float32 product of the two scales, which older
    TFLite used for per-tensor FULLY_CONNECTED, gives different results).
    """
    ws = np.asarray(weight_scales, dtype=np.float32).astype(np.float64)
    reals = (np.float64(np.float32(input_scale)) * ws) / np.float64(np.float32(output_scale))
    m, s = quantize_multipliers(np.broadcast_to(reals, (n_out,)) if ws.size == 1 else reals)
    return m.astype(np.int32), s.astype(np.int8)


class _Importer:
    def __init__(self, model: Any, data: bytes, label: str) -> None:
        self.model = model
        self.data = data
        self.label = label
        subgraphs = model.subgraphs or []
        if len(subgraphs) != 1:
            raise self.fail(
                f"{len(subgraphs)} subgraphs; only single-subgraph models are supported"
            )
        self.graph = subgraphs[0]
        self.ops = list(self.graph.operators or [])
        self.n_ops = len(self.ops)
        self.tensors = [self._tensor(i, t) for i, t in enumerate(self.graph.tensors or [])]
        self.layers: list[Layer] = []
        self.counts: dict[str, int] = {}
        self.used: set[str] = set()
        self.out_name = ""  # the output tensor of the operator being imported
        self.shape: Shape = ()  # current activation shape, no batch
        self.input_shape: Shape = ()
        self.plumbing = self._shape_plumbing()
        self.handlers: dict[str, Callable[[Any, _Tensor, _Tensor, str], None]] = {
            "CONV_2D": self.conv2d,
            "FULLY_CONNECTED": self.dense,
            "MAX_POOL_2D": self.maxpool,
            "RESHAPE": self.reshape,
            "RELU": self.relu,
            "RELU6": self.relu,
            "DEPTHWISE_CONV_2D": self.depthwise,
        }
        self.bn_records = self._bn_metadata()
        self.bn_count = 0

    def _metadata(self, wanted: str) -> bytes | None:
        """The bytes of the metadata entry named `wanted`, or None if there is none."""
        for meta in self.model.metadata or []:
            name = meta.name
            name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            if name != wanted:
                continue
            buffers = self.model.buffers or []
            if not 0 < meta.buffer < len(buffers) or buffers[meta.buffer].data is None:
                raise self.fail(f"metadata '{name}' has no data")
            return np.asarray(buffers[meta.buffer].data).tobytes()
        return None

    def _bn_metadata(self) -> list[dict[str, Any]] | None:
        """The batch-norm state records of lrt's metadata entry, or None."""
        data = self._metadata(batchnorm.METADATA_NAME)
        try:
            return None if data is None else batchnorm.parse_metadata(data)
        except ValueError as exc:
            raise self.fail(str(exc)) from None

    def model_metadata(self) -> dict[str, Any]:
        """What lrt's training measured of the model (MODEL_METADATA_KEYS), from its
        metadata entry; {} for models from elsewhere."""
        data = self._metadata(MODEL_METADATA_NAME)
        if data is None:
            return {}
        try:
            record = json.loads(data.decode())
        except (UnicodeDecodeError, ValueError):
            record = None
        def valid(key: str, value: Any) -> bool:
            if isinstance(value, bool) or key not in MODEL_METADATA_KEYS:
                return False
            if key == "epochs":
                return isinstance(value, int) and value >= 0
            return isinstance(value, int | float) and 0.0 <= value <= 1.0  # (NaN fails too)

        if not isinstance(record, dict) or not all(valid(k, v) for k, v in record.items()):
            raise self.fail(f"malformed {MODEL_METADATA_NAME} metadata")
        return record

    def _shape_plumbing(self) -> set[int]:
        """Ops that only compute the target shape of a RESHAPE (Keras' dynamic-batch Flatten
        emits SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE). The importer uses the static shape of
        the reshaped tensor instead, so these ops are skipped."""
        consumers: dict[int, list[tuple[int, int]]] = {}
        for i, op in enumerate(self.ops):
            for pos, t in enumerate(op.inputs if op.inputs is not None else []):
                consumers.setdefault(int(t), []).append((i, pos))
        plumbing: set[int] = set()
        for i in range(len(self.ops) - 1, -1, -1):
            op = self.ops[i]
            if _op_name(self.model, op) not in _SHAPE_OPS or op.outputs is None:
                continue
            outs = [int(t) for t in op.outputs]
            if all(
                0 <= t < len(self.tensors)
                and self.tensors[t].type == fb.TensorType.INT32
                and consumers.get(t)
                and all(
                    j in plumbing
                    or (_op_name(self.model, self.ops[j]) == "RESHAPE" and pos == 1)
                    for j, pos in consumers[t]
                )
                for t in outs
            ):
                plumbing.add(i)
        return plumbing

    def fail(self, message: str) -> UserError:
        return _fail(self.label, message)

    def _tensor(self, index: int, t: Any) -> _Tensor:
        q = t.quantization
        scales: tuple[float, ...] = ()
        zps: tuple[int, ...] = ()
        qdim = 0
        if q is not None and q.scale is not None:
            scales = tuple(float(s) for s in np.asarray(q.scale, dtype=np.float32))
            zps = tuple(int(z) for z in np.asarray(q.zeroPoint if q.zeroPoint is not None else []))
            qdim = int(q.quantizedDimension)
        name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        return _Tensor(index, name, int(t.type), shape, scales, zps, qdim, int(t.buffer))

    # ---- tensor helpers -------------------------------------------------------------------
    def tensor(self, index: int, where: str) -> _Tensor:
        if not 0 <= index < len(self.tensors):
            raise self.fail(f"{where}: tensor index {index} out of range")
        return self.tensors[index]

    def const(self, t: _Tensor, where: str) -> np.ndarray:
        dtype = _DTYPES.get(t.type)
        if dtype is None:
            raise self.fail(f"{where}: constant tensor '{t.name}' has type {t.type_name}")
        buffers = self.model.buffers or []
        if not 0 < t.buffer < len(buffers):
            raise self.fail(f"{where}: tensor '{t.name}' has no constant data")
        buf = buffers[t.buffer]
        if buf.data is not None:
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
        elif buf.offset > 1:  # large models keep buffers after the flatbuffer
            raw = self.data[buf.offset : buf.offset + buf.size]
        else:
            raise self.fail(f"{where}: tensor '{t.name}' has no constant data")
        count = int(np.prod(t.shape)) if t.shape else 1
        if len(raw) != count * np.dtype(dtype).itemsize:
            raise self.fail(
                f"{where}: tensor '{t.name}' holds {len(raw)} bytes, shape {list(t.shape)} "
                f"needs {count * np.dtype(dtype).itemsize} (corrupt or truncated file)"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(t.shape).copy()

    def act_q(self, t: _Tensor, where: str) -> QParams:
        if t.type != fb.TensorType.INT8:
            raise self.fail(
                f"{where}: tensor '{t.name}' is {t.type_name}; the model is not fully "
                "int8-quantized (convert with full-integer quantization: "
                "representative dataset + TFLITE_BUILTINS_INT8)"
            )
        if len(t.scales) != 1 or len(t.zero_points) != 1:
            raise self.fail(f"{where}: activation '{t.name}' needs one scale and zero point")
        scale = t.scales[0]
        if not scale > 0:
            raise self.fail(f"{where}: activation '{t.name}' has scale {scale}")
        return QParams(scale=scale, zero_point=t.zero_points[0], exp=exp_of(scale))

    def name(self, kind: str, own: bool = True) -> str:
        """The layer's name. lrt's own export names every operator's output '<layer>/out', so
        a pulled or exported model keeps the names `--train-layers` and reports use; other
        models get Keras-style names (conv2d, conv2d_1, ...)."""
        mine = self.out_name[: -len("/out")] if own and self.out_name.endswith("/out") else ""
        if mine and "/" not in mine and mine not in self.used:
            self.used.add(mine)
            return mine
        while True:
            k = self.counts.get(kind, 0)
            self.counts[kind] = k + 1
            name = kind if k == 0 else f"{kind}_{k}"
            if name not in self.used:
                self.used.add(name)
                return name

    # ---- the walk -------------------------------------------------------------------------
    def run(self, model_name: str, digest: str) -> Model:
        inputs = list(self.graph.inputs if self.graph.inputs is not None else [])
        outputs = list(self.graph.outputs if self.graph.outputs is not None else [])
        if len(inputs) != 1 or len(outputs) != 1:
            raise self.fail(
                f"{len(inputs)} inputs and {len(outputs)} outputs; "
                "only single-input single-output models are supported"
            )
        if self.n_ops == 0:
            raise self.fail("the graph has no operators")
        cur = self.tensor(inputs[0], "graph input")
        first, last = 0, self.n_ops
        if (
            _op_name(self.model, self.ops[0]) == "QUANTIZE"
            and cur.type == fb.TensorType.FLOAT32
            and list(self.ops[0].inputs if self.ops[0].inputs is not None else []) == [cur.index]
        ):
            cur = self.tensor(self.ops[0].outputs[0], "QUANTIZE at position 0")
            first = 1
        graph_out = outputs[0]
        if (
            last > first
            and _op_name(self.model, self.ops[-1]) == "DEQUANTIZE"
            and self.tensor(self.ops[-1].outputs[0], "DEQUANTIZE").type == fb.TensorType.FLOAT32
        ):
            graph_out = self.ops[-1].inputs[0]
            last -= 1
        in_q = self.act_q(cur, "graph input")
        self.shape = self.input_shape = self.batchless(cur, "graph input")
        for i in range(first, last):
            if i in self.plumbing:
                continue
            op = self.ops[i]
            name = _op_name(self.model, op)
            where = f"{name} at position {i}"
            op_inputs = list(op.inputs if op.inputs is not None else [])
            op_outputs = list(op.outputs if op.outputs is not None else [])
            handler = self.handlers.get(name)
            if handler is None:
                raise self.fail(
                    f"unsupported operator {name} at position {i} (op {i + 1} of {self.n_ops})"
                    f"{_hint(name, i, self.n_ops)}; supported: {SUPPORTED}"
                )
            if not op_inputs or op_inputs[0] != cur.index or len(op_outputs) != 1:
                raise self.fail(
                    f"{where} does not consume the previous operator's output; only sequential "
                    "(single-chain) models are supported"
                )
            out = self.tensor(op_outputs[0], where)
            self.out_name = out.name
            handler(op, cur, out, where)
            cur = out
        if cur.index != graph_out:
            raise self.fail("the graph output is not produced by the last operator")
        if not self.layers:
            raise self.fail("the model has no layers")
        if len(self.input_shape) not in (1, 3):
            raise self.fail(f"input shape {list(self.input_shape)} is neither HWC nor a vector")
        return Model(
            name=model_name,
            input_shape=tuple(self.input_shape),
            input_q=in_q,
            num_classes=int(np.prod(self.layers[-1].out_shape)),
            layers=self.layers,
            preset=None,
            meta={**self.model_metadata(), "source": "tflite", "tflite_sha256": digest},
        )

    def batchless(self, t: _Tensor, where: str) -> tuple[int, ...]:
        if len(t.shape) < 2 or t.shape[0] != 1:
            raise self.fail(
                f"{where}: tensor '{t.name}' has shape {list(t.shape)}, expected batch 1"
            )
        return tuple(t.shape[1:])

    # ---- operators ------------------------------------------------------------------------
    def weights_and_scales(
        self, op: Any, where: str, n_out: int
    ) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
        w_t = self.tensor(op.inputs[1], where)
        if w_t.type != fb.TensorType.INT8:
            raise self.fail(f"{where}: weights '{w_t.name}' are {w_t.type_name}, expected INT8")
        if len(w_t.scales) not in (1, n_out) or len(w_t.zero_points) != len(w_t.scales):
            raise self.fail(f"{where}: weights '{w_t.name}' have {len(w_t.scales)} scales")
        if len(w_t.scales) > 1 and w_t.quantized_dimension != 0:
            raise self.fail(f"{where}: weights quantized along axis {w_t.quantized_dimension}")
        if any(z != 0 for z in w_t.zero_points):
            raise self.fail(f"{where}: weights '{w_t.name}' have a non-zero zero point")
        w = self.const(w_t, where)
        bias_idx = op.inputs[2] if len(op.inputs) > 2 else -1
        if bias_idx < 0:
            bias = np.zeros(n_out, dtype=np.int32)
        else:
            b_t = self.tensor(bias_idx, where)
            if b_t.type != fb.TensorType.INT32:
                raise self.fail(f"{where}: bias '{b_t.name}' is {b_t.type_name}, expected INT32")
            bias = self.const(b_t, where).reshape(-1)
            if bias.size != n_out:
                raise self.fail(f"{where}: bias has {bias.size} entries for {n_out} outputs")
        return w, w_t.scales, bias

    def add_weight_layer(
        self,
        kind: str,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        in_q: QParams,
        out_q: QParams,
        w: np.ndarray,
        scales: tuple[float, ...],
        bias: np.ndarray,
        mult: np.ndarray,
        shift: np.ndarray,
        activation: int,
        **extra: Any,
    ) -> None:
        n_out = int(w.shape[0])
        ws = np.array(scales if len(scales) > 1 else scales * n_out, dtype=np.float64)
        wexp = exp_of(float(ws[0])) if np.all(ws == ws[0]) else None
        lo, hi = activation_range(activation, out_q)
        self.layers.append(
            Layer(
                kind=kind,  # type: ignore[arg-type]
                name=self.name(kind),
                in_shape=in_shape,
                out_shape=out_shape,
                input_q=in_q,
                output_q=out_q,
                weights=w,
                bias=bias.astype(np.int32),
                weight_scales=ws,
                out_multiplier=mult,
                out_shift=shift,
                act_min=lo,
                act_max=hi,
                relu=activation != fb.ActivationFunctionType.NONE,
                weight_exp=wexp,
                # a power-of-two layer can train on device: its biases then use the paper's
                # 16-bit format (LSB 2^-12, the firmware rounds to the coarser of that and
                # the accumulator LSB)
                bias_exp=BIAS_EXP if (wexp is not None and in_q.exp is not None) else None,
                **extra,
            )
        )

    def conv2d(self, op: Any, cur: _Tensor, out: _Tensor, where: str) -> None:
        shape = self.shape
        opt = op.builtinOptions
        if not isinstance(opt, fb.Conv2DOptionsT):
            raise self.fail(f"{where}: missing Conv2D options")
        if opt.dilationHFactor != 1 or opt.dilationWFactor != 1:
            raise self.fail(f"{where}: dilated convolution is not supported")
        if len(shape) != 3:
            raise self.fail(f"{where}: input shape {list(shape)} is not HWC")
        out_shape = self.batchless(out, where)
        if len(out_shape) != 3:
            raise self.fail(f"{where}: output shape {list(out_shape)} is not HWC")
        n_out = out_shape[2]
        w, scales, bias = self.weights_and_scales(op, where, n_out)
        if w.ndim != 4 or w.shape[0] != n_out or w.shape[3] != shape[2]:
            raise self.fail(
                f"{where}: filter shape {list(w.shape)} does not match input {list(shape)} and "
                f"{n_out} output channels (grouped convolution is not supported)"
            )
        padding = _padding(opt.padding, where, self)
        stride = (int(opt.strideH), int(opt.strideW))
        _check_out_shape(self, where, shape, out_shape, (w.shape[1], w.shape[2]), stride, padding)
        in_q, out_q = self.act_q(cur, where), self.act_q(out, where)
        mult, shift = rescale_multipliers(in_q.scale, scales, out_q.scale, n_out)
        self.add_weight_layer(
            "conv2d", shape, out_shape, in_q, out_q, w, scales, bias, mult, shift,
            int(opt.fusedActivationFunction), stride=stride, padding=padding,
        )
        self.shape = out_shape

    def dense(self, op: Any, cur: _Tensor, out: _Tensor, where: str) -> None:
        shape = self.shape
        opt = op.builtinOptions
        if not isinstance(opt, fb.FullyConnectedOptionsT):
            raise self.fail(f"{where}: missing FullyConnected options")
        if opt.weightsFormat != fb.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise self.fail(f"{where}: shuffled weight format is not supported")
        n_in = int(np.prod(shape))
        if out.shape[-1:] == () or int(np.prod(out.shape)) != out.shape[-1]:
            raise self.fail(f"{where}: output shape {list(out.shape)} is not [1, n]")
        n_out = int(out.shape[-1])
        w, scales, bias = self.weights_and_scales(op, where, n_out)
        if w.shape != (n_out, n_in):
            raise self.fail(f"{where}: weight shape {list(w.shape)}, expected [{n_out}, {n_in}]")
        in_q, out_q = self.act_q(cur, where), self.act_q(out, where)
        if len(shape) != 1:  # FULLY_CONNECTED flattens its input itself
            self.add_flatten(shape, in_q, own_name=False)
        mult, shift = rescale_multipliers(in_q.scale, scales, out_q.scale, n_out)
        self.add_weight_layer(
            "dense", (n_in,), (n_out,), in_q, out_q, w, scales, bias, mult, shift,
            int(opt.fusedActivationFunction),
        )
        self.shape = (n_out,)

    def add_flatten(self, shape: tuple[int, ...], q: QParams, own_name: bool = True) -> None:
        """A flatten layer; own_name=False inside another operator (its output names that)."""
        n = int(np.prod(shape))
        self.layers.append(
            Layer(kind="flatten", name=self.name("flatten", own_name), in_shape=shape,
                  out_shape=(n,), input_q=q, output_q=q)
        )

    def maxpool(self, op: Any, cur: _Tensor, out: _Tensor, where: str) -> None:
        shape = self.shape
        opt = op.builtinOptions
        if not isinstance(opt, fb.Pool2DOptionsT):
            raise self.fail(f"{where}: missing Pool2D options")
        if len(shape) != 3:
            raise self.fail(f"{where}: input shape {list(shape)} is not HWC")
        in_q, out_q = self.act_q(cur, where), self.act_q(out, where)
        if (in_q.scale, in_q.zero_point) != (out_q.scale, out_q.zero_point):
            raise self.fail(f"{where}: input and output quantization differ")
        out_shape = self.batchless(out, where)
        pool = (int(opt.filterHeight), int(opt.filterWidth))
        stride = (int(opt.strideH), int(opt.strideW))
        padding = _padding(opt.padding, where, self)
        _check_out_shape(self, where, shape, out_shape, pool, stride, padding)
        lo, hi = activation_range(int(opt.fusedActivationFunction), out_q)
        self.layers.append(
            Layer(kind="maxpool2d", name=self.name("maxpool2d"), in_shape=shape,
                  out_shape=out_shape, input_q=in_q, output_q=out_q, act_min=lo, act_max=hi,
                  relu=opt.fusedActivationFunction != fb.ActivationFunctionType.NONE,
                  stride=stride, padding=padding, pool=pool, trainable=False)
        )
        self.shape = out_shape

    def reshape(self, op: Any, cur: _Tensor, out: _Tensor, where: str) -> None:
        shape = self.shape
        in_q, out_q = self.act_q(cur, where), self.act_q(out, where)
        if (in_q.scale, in_q.zero_point) != (out_q.scale, out_q.zero_point):
            raise self.fail(f"{where}: input and output quantization differ")
        new = self.batchless(out, where)
        if int(np.prod(new)) != int(np.prod(shape)):
            raise self.fail(f"{where}: reshape {list(shape)} -> {list(new)} changes the size")
        if not self.layers:  # a leading reshape only re-labels the input
            self.shape = self.input_shape = new
            return
        if new == shape:
            return
        if len(new) == 1:
            self.add_flatten(shape, in_q)
            self.shape = new
            return
        raise self.fail(
            f"{where}: reshape {list(shape)} -> {list(new)} is not a flatten; only flattening "
            "reshapes are supported"
        )

    def depthwise(self, op: Any, cur: _Tensor, out: _Tensor, where: str) -> None:
        """lrt's batch-norm export (lrt.batchnorm); every other depthwise conv is refused."""
        shape = self.shape
        opt = op.builtinOptions
        only = (
            f"{where}: DEPTHWISE_CONV_2D is supported only as lrt's batch-norm export (1x1 "
            "kernel, depth multiplier 1, stride 1, no activation, per-channel int8 filter, "
            f"with '{batchnorm.METADATA_NAME}' metadata); "
        )
        if not isinstance(opt, fb.DepthwiseConv2DOptionsT):
            raise self.fail(f"{where}: missing DepthwiseConv2D options")
        if len(shape) != 3:
            raise self.fail(f"{where}: input shape {list(shape)} is not HWC")
        c = shape[2]
        w_t = self.tensor(op.inputs[1], where) if len(op.inputs) > 1 else None
        if (
            w_t is None
            or w_t.shape != (1, 1, 1, c)
            or int(opt.strideH) != 1
            or int(opt.strideW) != 1
            or int(opt.dilationHFactor) != 1
            or int(opt.dilationWFactor) != 1
            or int(opt.depthMultiplier) not in (0, 1)
            or opt.fusedActivationFunction != fb.ActivationFunctionType.NONE
            or self.batchless(out, where) != shape
        ):
            raise self.fail(only + "this one is a general depthwise convolution")
        if self.bn_records is None or self.bn_count >= len(self.bn_records):
            raise self.fail(only + "this model has no batch-norm state for it")
        if w_t.type != fb.TensorType.INT8 or len(w_t.scales) != c or w_t.quantized_dimension != 3:
            raise self.fail(only + f"filter '{w_t.name}' is not per-channel int8")
        record = self.bn_records[self.bn_count]
        self.bn_count += 1
        in_q, out_q = self.act_q(cur, where), self.act_q(out, where)
        if in_q.exp is None or out_q.exp is None:
            raise self.fail(f"{where}: batch norm needs power-of-two input and output scales")
        state = {k: np.asarray(record[k], dtype=np.int64) for k in ("gamma", "beta", "mean", "msq")}
        if any(v.shape != (c,) for v in state.values()):
            raise self.fail(f"{where}: batch-norm state has the wrong number of channels")
        layer = Layer(
            kind="batchnorm", name=self.name("batchnorm"), in_shape=shape, out_shape=shape,
            input_q=in_q, output_q=out_q, trainable=True,
            bn_gamma=state["gamma"].astype(np.int32), bn_beta=state["beta"].astype(np.int32),
            bn_mean=state["mean"].astype(np.int32), bn_msq=state["msq"].astype(np.int32),
            bn_pow_q30=int(record["pow_q30"]),
        )  # fmt: skip
        try:
            tables = batchnorm.layer_tables(layer)
        except ValueError as exc:
            raise self.fail(f"{where}: {exc}") from None
        w = self.const(w_t, where).reshape(-1)
        bias_idx = op.inputs[2] if len(op.inputs) > 2 else -1
        bias = (
            self.const(self.tensor(bias_idx, where), where).reshape(-1)
            if bias_idx >= 0
            else np.zeros(c, np.int32)
        )
        scales = np.asarray(w_t.scales, dtype=np.float64)
        expect = 2.0 ** tables.weight_exps(in_q.exp, out_q.exp).astype(np.float64)
        if not (
            np.array_equal(w, tables.w)
            and np.array_equal(bias, tables.bias)
            and np.array_equal(scales, expect)
        ):
            raise self.fail(
                f"{where}: the batch-norm state in the metadata does not reproduce this layer's "
                "filter, bias and scales (edited file?)"
            )
        self.layers.append(layer)

    def relu(self, op: Any, cur: _Tensor, out: _Tensor, where: str) -> None:
        in_q, out_q = self.act_q(cur, where), self.act_q(out, where)
        if (in_q.scale, in_q.zero_point) != (out_q.scale, out_q.zero_point):
            raise self.fail(
                f"{where}: standalone activation changes the quantization (scale {in_q.scale} "
                f"zp {in_q.zero_point} -> scale {out_q.scale} zp {out_q.zero_point}); only an "
                "activation with identical input and output quantization can be folded into "
                "the previous layer"
            )
        target = next((lay for lay in reversed(self.layers) if lay.kind != "flatten"), None)
        if target is None:
            raise self.fail(f"{where}: no previous layer to fold the activation into")
        six = _op_name(self.model, op) == "RELU6"
        act = fb.ActivationFunctionType.RELU6 if six else fb.ActivationFunctionType.RELU
        lo, hi = activation_range(act, out_q)
        target.act_min = max(target.act_min, lo)
        target.act_max = min(target.act_max, hi)
        target.relu = True



def _hint(name: str, i: int, n: int) -> str:
    if name == "SOFTMAX" and i >= n - 2:
        return " (drop the final softmax: the firmware takes the argmax of the logits)"
    if name == "QUANTIZE":
        return " (QUANTIZE is only accepted as the float32 -> int8 input boundary)"
    if name in ("MUL", "ADD", "SUB"):
        return (
            " (per-channel affine layers such as batch norm are supported only as lrt exports "
            "them: a 1x1 DEPTHWISE_CONV_2D with lrt_batchnorm metadata, e.g. --preset mcu-bn)"
        )
    if name == "DEQUANTIZE":
        return " (DEQUANTIZE is only accepted as the int8 -> float32 output boundary)"
    return ""


def _padding(code: int, where: str, imp: _Importer) -> Literal["valid", "same"]:
    if code == fb.Padding.SAME:
        return "same"
    if code == fb.Padding.VALID:
        return "valid"
    raise imp.fail(f"{where}: unknown padding {code}")


def _check_out_shape(
    imp: _Importer,
    where: str,
    shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: str,
) -> None:
    if min(stride) < 1 or min(kernel) < 1:
        raise imp.fail(f"{where}: kernel {list(kernel)} / stride {list(stride)} must be >= 1")
    oh = output_size(shape[0], kernel[0], stride[0], padding)
    ow = output_size(shape[1], kernel[1], stride[1], padding)
    if (oh, ow) != tuple(out_shape[:2]) or oh < 1 or ow < 1:
        raise imp.fail(
            f"{where}: output shape {list(out_shape)} does not follow from input {list(shape)}, "
            f"kernel {list(kernel)}, stride {list(stride)}, {padding} padding"
        )


def import_tflite(source: Path | str | bytes, name: str | None = None) -> Model:
    """Parse a full-integer .tflite (path or bytes) into the IR. Raises UserError."""
    if isinstance(source, bytes | bytearray):
        data, label = bytes(source), "<tflite bytes>"
        default_name = "imported"
    else:
        path = Path(source)
        label = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{label}: cannot read: {exc.strerror or exc}") from exc
        default_name = path.stem
    model = _parse(data, label)
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        return _Importer(model, data, label).run(name or default_name, digest)
    except UserError:
        raise
    except Exception as exc:  # the lazy flatbuffer reader fails deep inside on damaged files
        raise UserError(
            f"{label}: not a valid .tflite model ({type(exc).__name__}: {exc})"
        ) from None


# ---- export: IR -> .tflite ---------------------------------------------------------------
# The inverse direction lets the TFLite interpreter check models lrt built itself (and the
# importer round-trip). TFLite recomputes every rescale from the scales, so the IR's
# out_multiplier/out_shift must be the ones the scales imply; to_tflite checks that.
_OP_VERSIONS = {
    "CONV_2D": 3, "MAX_POOL_2D": 2, "FULLY_CONNECTED": 4, "RESHAPE": 1, "DEPTHWISE_CONV_2D": 3,
}  # fmt: skip


def _activation_code(layer: Layer) -> int:
    """The fused activation whose int8 clamp TFLite derives to exactly (act_min, act_max).

    A ReLU on an output with zero point -128 clamps nothing, so the relu flag decides.
    """
    relus = (
        fb.ActivationFunctionType.RELU,
        fb.ActivationFunctionType.RELU6,
        fb.ActivationFunctionType.RELU_N1_TO_1,
    )
    none = (fb.ActivationFunctionType.NONE,)
    for code in relus + none if layer.relu else none + relus:
        if activation_range(code, layer.output_q) == (layer.act_min, layer.act_max):
            return int(code)
    raise ValueError(
        f"layer {layer.name}: clamp [{layer.act_min}, {layer.act_max}] is no TFLite activation"
    )


def _quant(scales: Sequence[float] | np.ndarray, zero_points: Sequence[int]) -> Any:
    q = fb.QuantizationParametersT()
    q.scale = [float(s) for s in scales]
    q.zeroPoint = [int(z) for z in zero_points]
    q.quantizedDimension = 0
    return q


def to_tflite(model: Model) -> bytes:
    """Write the IR as a full-int8 .tflite (int8 input and output, batch 1)."""
    m = fb.ModelT()
    m.version = 3
    m.description = f"lrt export of {model.name}"
    m.buffers = [fb.BufferT()]
    m.operatorCodes = []
    g = fb.SubGraphT()
    g.tensors, g.operators = [], []
    opcodes: dict[str, int] = {}

    def tensor(name: str, shape: Sequence[int], ttype: int, quant: Any = None,
               data: np.ndarray | None = None) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type, t.quantization = name, list(shape), ttype, quant
        t.buffer = 0
        if data is not None:
            b = fb.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            m.buffers.append(b)
            t.buffer = len(m.buffers) - 1
        g.tensors.append(t)
        return len(g.tensors) - 1

    def operator(name: str, inputs: list[int], outputs: list[int], opt_type: int,
                 options: Any) -> None:
        if name not in opcodes:
            code = fb.OperatorCodeT()
            builtin = getattr(fb.BuiltinOperator, name)
            code.builtinCode, code.deprecatedBuiltinCode = builtin, min(builtin, 127)
            code.version = _OP_VERSIONS[name]
            m.operatorCodes.append(code)
            opcodes[name] = len(m.operatorCodes) - 1
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcodes[name], inputs, outputs
        op.builtinOptionsType, op.builtinOptions = opt_type, options
        g.operators.append(op)

    q_in = model.input_q
    cur = tensor("input", (1, *model.input_shape), fb.TensorType.INT8,
                 _quant([q_in.scale], [q_in.zero_point]))
    g.inputs = [cur]
    for layer in model.layers:
        oq = layer.output_q
        out = tensor(f"{layer.name}/out", (1, *layer.out_shape), fb.TensorType.INT8,
                     _quant([oq.scale], [oq.zero_point]))
        if layer.kind == "flatten":
            # -1 batch: lets the interpreter run a whole batch after resize_tensor_input
            new_shape = [-1, int(np.prod(layer.out_shape))]
            shape = tensor(f"{layer.name}/shape", (2,), fb.TensorType.INT32,
                           data=np.array(new_shape, dtype="<i4"))
            opt = fb.ReshapeOptionsT()
            opt.newShape = new_shape
            operator("RESHAPE", [cur, shape], [out], fb.BuiltinOptions.ReshapeOptions, opt)
        elif layer.kind == "batchnorm":
            assert layer.input_q.exp is not None and layer.output_q.exp is not None
            t = batchnorm.layer_tables(layer)
            e = t.weight_exps(layer.input_q.exp, layer.output_q.exp)
            c = int(t.w.size)
            fq = _quant([2.0 ** int(k) for k in e], [0] * c)
            fq.quantizedDimension = 3
            w = tensor(f"{layer.name}/filter", (1, 1, 1, c), fb.TensorType.INT8, fq,
                       t.w.reshape(1, 1, 1, c).astype(np.int8))
            b = tensor(f"{layer.name}/bias", (c,), fb.TensorType.INT32,
                       _quant([layer.input_q.scale * 2.0 ** int(k) for k in e], [0] * c),
                       t.bias.astype("<i4"))
            dopt = fb.DepthwiseConv2DOptionsT()
            dopt.padding = fb.Padding.VALID
            dopt.strideH = dopt.strideW = dopt.depthMultiplier = 1
            dopt.fusedActivationFunction = fb.ActivationFunctionType.NONE
            operator("DEPTHWISE_CONV_2D", [cur, w, b], [out],
                     fb.BuiltinOptions.DepthwiseConv2DOptions, dopt)
        elif layer.kind == "maxpool2d":
            opt = fb.Pool2DOptionsT()
            opt.padding = fb.Padding.SAME if layer.padding == "same" else fb.Padding.VALID
            opt.strideH, opt.strideW = layer.stride
            opt.filterHeight, opt.filterWidth = layer.pool
            opt.fusedActivationFunction = _activation_code(layer)
            operator("MAX_POOL_2D", [cur], [out], fb.BuiltinOptions.Pool2DOptions, opt)
        else:
            assert layer.weights is not None and layer.bias is not None
            assert layer.weight_scales is not None
            assert layer.out_multiplier is not None and layer.out_shift is not None
            ws = np.asarray(layer.weight_scales, dtype=np.float32)
            per_tensor = layer.kind == "dense" and bool(np.all(ws == ws[0]))
            scales = ws[:1] if per_tensor else ws
            expect = rescale_multipliers(layer.input_q.scale, scales, oq.scale, len(ws))
            if not (
                np.array_equal(expect[0], layer.out_multiplier)
                and np.array_equal(expect[1], layer.out_shift)
            ):
                raise ValueError(
                    f"layer {layer.name}: out_multiplier/out_shift do not follow from the "
                    "scales, so TFLite would compute a different rescale"
                )
            w = tensor(f"{layer.name}/weights", layer.weights.shape, fb.TensorType.INT8,
                       _quant(scales, [0] * len(scales)), layer.weights.astype(np.int8))
            bias_scales = np.float32(layer.input_q.scale) * scales.astype(np.float32)
            b = tensor(f"{layer.name}/bias", (len(layer.bias),), fb.TensorType.INT32,
                       _quant(bias_scales, [0] * len(bias_scales)),
                       np.asarray(layer.bias, dtype="<i4"))
            act = _activation_code(layer)
            if layer.kind == "conv2d":
                copt = fb.Conv2DOptionsT()
                copt.padding = fb.Padding.SAME if layer.padding == "same" else fb.Padding.VALID
                copt.strideH, copt.strideW = layer.stride
                copt.fusedActivationFunction = act
                operator("CONV_2D", [cur, w, b], [out], fb.BuiltinOptions.Conv2DOptions, copt)
            else:
                fopt = fb.FullyConnectedOptionsT()
                fopt.fusedActivationFunction = act
                operator("FULLY_CONNECTED", [cur, w, b], [out],
                         fb.BuiltinOptions.FullyConnectedOptions, fopt)
        cur = out
    g.outputs = [cur]
    m.subgraphs = [g]
    batchnorm.add_metadata(m, model.layers)
    add_model_metadata(m, model.meta)
    return pack_tflite(m)


# What lrt's training measured of a model, carried by its .tflite so that a build importing
# it gets the same write policy (the error gate's reference is the held-out error) as the
# build that trained it.
MODEL_METADATA_NAME = "lrt_model"
MODEL_METADATA_KEYS = ("epochs", META_TEST_ACCURACY, META_FIELD_ACCURACY)


def add_metadata_entry(model_t: Any, name: str, data: bytes) -> None:
    """Append a named metadata entry (its own buffer) to a schema ModelT."""
    buf = fb.BufferT()
    buf.data = np.frombuffer(data, dtype=np.uint8)
    model_t.buffers.append(buf)
    entry = fb.MetadataT()
    entry.name = name
    entry.buffer = len(model_t.buffers) - 1
    model_t.metadata = [*(model_t.metadata or []), entry]


def add_model_metadata(model_t: Any, meta: dict[str, Any]) -> None:
    """The MODEL_METADATA_KEYS of a model's meta as lrt's model metadata entry (none if the
    model has none of them)."""
    record = {
        k: meta[k] for k in MODEL_METADATA_KEYS if meta.get(k) is not None and meta[k] == meta[k]
    }  # (not NaN: an accuracy measured on no test sample)
    if record:
        data = json.dumps(record, sort_keys=True).encode()
        add_metadata_entry(model_t, MODEL_METADATA_NAME, data)


def pack_tflite(model: Any) -> bytes:
    """Serialise a schema ModelT to .tflite bytes (with the 'TFL3' identifier)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

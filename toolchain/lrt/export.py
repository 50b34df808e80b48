"""Export of a trained QAT model: the integer IR (:class:`lrt.model.Model`, the source of
truth) and the .tflite built from it.

The .tflite: a float Keras model with the dequantized weights goes through the standard
converter, then the flatbuffer is rewritten so every scale, zero point, weight and bias equals
the IR's, and serialised by ``tflite_import.pack_tflite`` (the one .tflite writer).
:func:`architecture` gives a preset's IR with zero parameters, without TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lrt import batchnorm, quant
from lrt.model import Layer, Model, QParams
from lrt.presets import INPUT_EXP, INPUT_ZERO_POINT, LayerPlan, NetSpec, get_spec, plan_layers
from lrt.reference import layer_forward
from lrt.tfkeras import convert_keras_int8, tf_keras
from lrt.tflite_import import add_model_metadata, pack_tflite

# ---- IR ----------------------------------------------------------------------------------


def _pot(exp: int) -> float:
    return float(2.0**exp)


BN_STATS_SAMPLES = 512  # training images whose statistics a batch-norm layer exports


def _bn_layer(p: LayerPlan, kl: Any, in_q: QParams, out_q: QParams, x: np.ndarray | None) -> Layer:
    """IR batch-norm layer: gamma/beta of the QAT layer in the 16-bit format; statistics of
    its integer input x (the exact integer forward of the layers below on training images)
    or, without x, the QAT layer's running averages. Offline statistics are warmed up
    (eta**step = 0)."""
    ps = 2.0 ** (-batchnorm.PARAM_EXP)
    lo, hi = batchnorm.PARAM_MIN, batchnorm.PARAM_MAX
    gamma = np.clip(np.round(np.asarray(kl.gamma.numpy(), np.float64) * ps), lo, hi)
    beta = np.clip(np.round(np.asarray(kl.beta.numpy(), np.float64) * ps), lo, hi)
    if x is not None:
        mean, msq = batchnorm.population_stats(x, in_q.zero_point)
    else:
        mu, var = (np.asarray(v.numpy(), np.float64) for v in kl.statistics())
        lsb = 2.0**-p.in_exp  # real -> input LSBs
        mean = np.round(mu * lsb * 2.0**batchnorm.MEAN_FRAC)
        msq = np.round((var + mu * mu) * lsb * lsb * 2.0**batchnorm.MSQ_FRAC)
    return Layer(
        kind="batchnorm",
        name=p.name,
        in_shape=p.in_shape,
        out_shape=p.out_shape,
        input_q=in_q,
        output_q=out_q,
        trainable=True,
        bn_gamma=gamma.astype(np.int32),
        bn_beta=beta.astype(np.int32),
        bn_mean=np.asarray(mean).astype(np.int32),
        bn_msq=np.asarray(msq).astype(np.int32),
        bn_pow_q30=0,
    )


def export_ir(
    qat_model: Any,
    spec: NetSpec,
    meta: dict[str, Any] | None = None,
    stats_x: np.ndarray | None = None,
) -> Model:
    """Integer IR of a trained QAT model (the same integers its forward pass used).

    ``stats_x`` (float images in [0, 1]): the batch-norm layers' exported statistics are the
    exact integer statistics of their input on these images (else the QAT running averages).
    """
    layers: list[Layer] = []
    plans = plan_layers(spec)
    n_stats = max([i + 1 for i, p in enumerate(plans) if p.kind == "batchnorm"] or [0])
    cur: np.ndarray | None = None  # integer input of the current layer (batch-norm stats)
    if stats_x is not None and n_stats:
        xs = np.asarray(stats_x, dtype=np.float64)[:BN_STATS_SAMPLES]
        cur = np.clip(np.round(xs / 2.0**INPUT_EXP) + INPUT_ZERO_POINT, -128, 127)
        cur = cur.astype(np.int8)
    for i, p in enumerate(plans):
        in_q = QParams(_pot(p.in_exp), p.in_zero_point, p.in_exp)
        out_q = QParams(_pot(p.out_exp), p.out_zero_point, p.out_exp)
        if layers and cur is not None and i < n_stats:
            cur = layer_forward(layers[-1], cur)
        if p.kind == "batchnorm":
            layers.append(_bn_layer(p, qat_model.get_layer(p.name), in_q, out_q, cur))
            continue
        common: dict[str, Any] = {
            "kind": p.kind,
            "name": p.name,
            "in_shape": p.in_shape,
            "out_shape": p.out_shape,
            "input_q": in_q,
            "output_q": out_q,
        }
        if not p.has_weights:
            stride = (2, 2) if p.kind == "maxpool2d" else (1, 1)
            layers.append(Layer(**common, stride=stride, trainable=False))
            continue
        kl = qat_model.get_layer(p.name)
        w = np.asarray(kl.kernel.numpy(), dtype=np.float32)
        b = np.asarray(kl.bias.numpy(), dtype=np.float32)
        lim = 2 ** (quant.BIAS_BITS - 1)
        w_int = np.clip(np.round(w * np.float32(2.0 ** (-quant.WEIGHT_EXP))), -128, 127)
        b_int = np.clip(np.round(b * np.float32(2.0 ** (-quant.BIAS_EXP))), -lim, lim - 1)
        if p.kind == "conv2d":
            weights = w_int.astype(np.int8).transpose(3, 0, 1, 2)  # HWIO -> OHWI
        else:
            weights = w_int.astype(np.int8).T  # [in, out] -> [out, in]
        n_out = p.out_shape[-1]
        bias = b_int.astype(np.int64) << (quant.BIAS_EXP - p.acc_exp)
        mult, shift = quant.quantize_multipliers(np.full(n_out, 2.0 ** (p.acc_exp - p.out_exp)))
        lo, hi = p.out_int_range
        layers.append(
            Layer(
                **common,
                weights=np.ascontiguousarray(weights),
                bias=bias.astype(np.int32),
                weight_scales=np.full(n_out, 2.0**p.weight_exp, dtype=np.float64),
                out_multiplier=mult,
                out_shift=shift,
                act_min=lo + p.out_zero_point,
                act_max=hi + p.out_zero_point,
                relu=p.relu,
                weight_exp=p.weight_exp,
                bias_exp=quant.BIAS_EXP,
            )
        )
    return Model(
        name=spec.name,
        input_shape=tuple(spec.input_shape),
        input_q=QParams(_pot(INPUT_EXP), INPUT_ZERO_POINT, INPUT_EXP),
        num_classes=spec.num_classes,
        layers=layers,
        preset=spec.name,
        meta=dict(meta or {}),
    )


class _Zeros:
    """A parameter tensor of zeros with Keras's ``numpy()`` accessor."""

    def __init__(self, *shape: int) -> None:
        self.value = np.zeros(shape, dtype=np.float32)

    def numpy(self) -> np.ndarray:
        return self.value


class _ZeroLayer:
    """Stands in for a trained Keras layer of a plan: every parameter zero."""

    def __init__(self, p: LayerPlan) -> None:
        c = p.out_shape[-1]
        if p.kind == "conv2d":
            self.kernel = _Zeros(p.kernel, p.kernel, p.in_shape[-1], c)  # HWIO
        elif p.kind == "dense":
            self.kernel = _Zeros(p.in_shape[-1], c)
        self.bias = self.gamma = self.beta = _Zeros(c)

    def statistics(self) -> tuple[_Zeros, _Zeros]:
        return self.gamma, self.gamma


class _ZeroModel:
    def __init__(self, spec: NetSpec) -> None:
        self.layers = {p.name: _ZeroLayer(p) for p in plan_layers(spec)}

    def get_layer(self, name: str) -> _ZeroLayer:
        return self.layers[name]


def architecture(preset: str | NetSpec) -> Model:
    """The IR of ``preset`` with every parameter zero: the shapes, formats and layer table
    of the model training would produce, without TensorFlow (what the RAM/flash budget and
    the board checks need before anything is trained)."""
    spec = get_spec(preset)
    return export_ir(_ZeroModel(spec), spec, meta={"architecture_only": True})


# ---- .tflite -------------------------------------------------------------------------------


def _float_keras_from_ir(model: Model) -> Any:
    """Plain float Keras model with the IR's dequantized weights (batch size 1)."""
    _, keras = tf_keras()
    x = inp = keras.Input(model.input_shape, batch_size=1, name="image")
    for lay in model.layers:
        if lay.kind == "conv2d":
            assert lay.weights is not None and lay.weight_scales is not None
            kh, kw = int(lay.weights.shape[1]), int(lay.weights.shape[2])
            conv = keras.layers.Conv2D(
                int(lay.weights.shape[0]),
                (kh, kw),
                strides=lay.stride,
                padding=lay.padding,
                activation="relu" if lay.relu else None,
                name=lay.name,
            )
            x = conv(x)
            conv.set_weights(_dequantized(lay, (1, 2, 3, 0)))
        elif lay.kind == "dense":
            assert lay.weights is not None
            dense = keras.layers.Dense(
                int(lay.weights.shape[0]),
                activation="relu" if lay.relu else None,
                name=lay.name,
            )
            x = dense(x)
            dense.set_weights(_dequantized(lay, (1, 0)))
        elif lay.kind == "maxpool2d":
            x = keras.layers.MaxPooling2D(
                lay.pool, strides=lay.stride, padding=lay.padding, name=lay.name
            )(x)
        elif lay.kind == "batchnorm":
            # the per-channel affine the tables encode, as the converter's DEPTHWISE_CONV_2D
            dw = keras.layers.DepthwiseConv2D(1, use_bias=True, name=lay.name)
            x = dw(x)
            w, b, _ = _bn_dequantized(lay)
            dw.set_weights([w.reshape(1, 1, -1, 1).astype(np.float32), b.astype(np.float32)])
        else:
            x = keras.layers.Flatten(name=lay.name)(x)
    return keras.Model(inp, x, name=f"{model.name}_float")


def _bn_dequantized(lay: Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real depthwise weights [C], real bias [C], filter scale exponents [C])."""
    assert lay.input_q.exp is not None and lay.output_q.exp is not None
    t = batchnorm.layer_tables(lay)
    e = t.weight_exps(lay.input_q.exp, lay.output_q.exp)
    w = t.w.astype(np.float64) * 2.0**e
    b = t.bias.astype(np.float64) * 2.0 ** (lay.input_q.exp + e)
    return w, b, e


def _dequantized(lay: Layer, perm: tuple[int, ...]) -> list[np.ndarray]:
    assert lay.weights is not None and lay.bias is not None and lay.weight_scales is not None
    scales = np.asarray(lay.weight_scales, dtype=np.float64)
    shape = (-1,) + (1,) * (lay.weights.ndim - 1)
    w = (lay.weights.astype(np.float64) * scales.reshape(shape)).transpose(perm)
    b = lay.bias.astype(np.float64) * lay.input_q.scale * scales
    return [w.astype(np.float32), b.astype(np.float32)]


_TFLITE_OPS = {
    "conv2d": "CONV_2D",
    "maxpool2d": "MAX_POOL_2D",
    "flatten": "RESHAPE",
    "dense": "FULLY_CONNECTED",
    "batchnorm": "DEPTHWISE_CONV_2D",
}


def tflite_op_names(tflite: bytes) -> list[str]:
    """Builtin operator names of the main subgraph, in execution order."""
    m = schema.ModelT.InitFromPackedBuf(tflite, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in m.subgraphs[0].operators:
        oc = m.operatorCodes[op.opcodeIndex]
        out.append(names[max(oc.builtinCode, oc.deprecatedBuiltinCode)])
    return out


def export_tflite(model: Model, representative: np.ndarray) -> bytes:
    """Full-int8 .tflite whose integers and scales equal the IR's (power-of-two models)."""
    if not model.power_of_two:
        raise ValueError("export_tflite needs a power-of-two IR (a model trained by lrt)")
    raw = convert_keras_int8(_float_keras_from_ir(model), representative)
    return _rewrite_flatbuffer(raw, model)


def _rewrite_flatbuffer(raw: bytes, model: Model) -> bytes:
    fb = schema.ModelT.InitFromPackedBuf(raw, 0)
    if len(fb.subgraphs) != 1:
        raise RuntimeError(f"converter emitted {len(fb.subgraphs)} subgraphs, expected 1")
    g = fb.subgraphs[0]
    ops = tflite_op_names(raw)
    expected = [_TFLITE_OPS[lay.kind] for lay in model.layers]
    if ops != expected:
        raise RuntimeError(f"converter emitted ops {ops}, expected {expected}")

    def set_q(t_index: int, scales: list[float], zps: list[int], dim: int = 0) -> None:
        qp = schema.QuantizationParametersT()
        qp.scale = [float(s) for s in scales]
        qp.zeroPoint = [int(z) for z in zps]
        qp.quantizedDimension = dim
        g.tensors[t_index].quantization = qp

    def new_buffer(data: np.ndarray) -> int:
        buf = schema.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
        fb.buffers.append(buf)
        return len(fb.buffers) - 1

    def bias_tensor(op: Any, lay: Layer, n_out: int) -> int:
        b_idx = int(op.inputs[2]) if len(op.inputs) > 2 else -1
        if b_idx < 0:  # the converter drops an all-zero bias: add it back
            bt = schema.TensorT()
            bt.name = f"{lay.name}/bias".encode()
            bt.shape = np.array([n_out], dtype=np.int32)
            g.tensors.append(bt)
            b_idx = len(g.tensors) - 1
            inputs = [int(i) for i in op.inputs]
            op.inputs = np.array([*inputs[:2], b_idx], dtype=np.int32)
        else:
            replaced.add(int(g.tensors[b_idx].buffer))
        return b_idx

    replaced: set[int] = set()
    set_q(int(g.inputs[0]), [model.input_q.scale], [model.input_q.zero_point])
    for op, lay in zip(g.operators, model.layers, strict=True):
        x_t, y_t = int(op.inputs[0]), int(op.outputs[0])
        # the importer names a layer after its output tensor '<layer>/out' (lrt's own
        # export's convention), so an imported build keeps the names --train-layers takes
        g.tensors[y_t].name = f"{lay.name}/out".encode()
        set_q(x_t, [lay.input_q.scale], [lay.input_q.zero_point])
        set_q(y_t, [lay.output_q.scale], [lay.output_q.zero_point])
        if lay.kind == "batchnorm":
            t = batchnorm.layer_tables(lay)
            _, _, e = _bn_dequantized(lay)
            c = int(t.w.size)
            w_t = int(op.inputs[1])
            wt = g.tensors[w_t]
            if tuple(int(d) for d in wt.shape) != (1, 1, 1, c):
                raise RuntimeError(f"{lay.name}: tflite filter {list(wt.shape)} != [1, 1, 1, {c}]")
            replaced.add(int(wt.buffer))
            wt.buffer = new_buffer(t.w.reshape(1, 1, 1, c).astype(np.int8))
            wt.type = schema.TensorType.INT8
            set_q(w_t, [2.0 ** int(k) for k in e], [0] * c, 3)
            b_idx = bias_tensor(op, lay, c)
            bt = g.tensors[b_idx]
            bt.type = schema.TensorType.INT32
            bt.buffer = new_buffer(t.bias.astype("<i4"))
            set_q(b_idx, [lay.input_q.scale * 2.0 ** int(k) for k in e], [0] * c, 0)
            op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.NONE
            continue
        if not lay.has_weights:
            continue
        assert lay.weights is not None and lay.bias is not None
        assert lay.weight_scales is not None
        n_out = int(lay.weights.shape[0])
        w_t = int(op.inputs[1])
        wt = g.tensors[w_t]
        if tuple(int(d) for d in wt.shape) != tuple(lay.weights.shape):
            raise RuntimeError(f"{lay.name}: tflite weight shape {list(wt.shape)} != IR")
        replaced.add(int(wt.buffer))
        wt.buffer = new_buffer(lay.weights.astype(np.int8))
        wt.type = schema.TensorType.INT8
        set_q(w_t, list(lay.weight_scales), [0] * n_out, 0)
        bias_scales = [lay.input_q.scale * float(s) for s in lay.weight_scales]
        b_idx = bias_tensor(op, lay, n_out)
        bt = g.tensors[b_idx]
        bt.type = schema.TensorType.INT32
        bt.buffer = new_buffer(lay.bias.astype("<i4"))
        set_q(b_idx, bias_scales, [0] * n_out, 0)
        opt = op.builtinOptions
        opt.fusedActivationFunction = (
            schema.ActivationFunctionType.RELU if lay.relu else schema.ActivationFunctionType.NONE
        )
    # Free the converter's weight/bias buffers (they may have been shared between tensors).
    used = {int(t.buffer) for t in g.tensors}
    for i in replaced - used:
        fb.buffers[i].data = None
    batchnorm.add_metadata(fb, model.layers)
    add_model_metadata(fb, model.meta)
    return pack_tflite(fb)

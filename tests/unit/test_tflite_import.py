"""lrt.tflite_import: what it accepts, and the errors it gives for what it does not.

Models are written with the flatbuffer schema (lrt.tflite_import.to_tflite, then edited),
so no TensorFlow is needed; every edited model is first run by the TFLite interpreter to
show it is a valid model that the importer, not TFLite, refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from lrt import reference as ref
from lrt.errors import UserError
from lrt.model import Layer, Model, QParams
from lrt.tflite_import import (
    activation_range,
    import_tflite,
    pack_tflite,
    rescale_multipliers,
    to_tflite,
)


def small_model(relu: bool = True) -> Model:
    """conv 3x3 (ReLU) -> maxpool 2x2 -> flatten -> dense: 8x8x2 -> 3 classes."""
    rng = np.random.default_rng(0)
    q_in, q1, q2 = QParams(0.02, -5), QParams(0.05, -128), QParams(0.1, 3)
    ws1 = rng.uniform(0.005, 0.01, 4)
    ws2 = rng.uniform(0.005, 0.01, 3)
    m1, s1 = rescale_multipliers(q_in.scale, ws1, q1.scale, 4)
    m2, s2 = rescale_multipliers(q1.scale, ws2, q2.scale, 3)
    lo, hi = activation_range(1 if relu else 0, q1)
    conv = Layer("conv2d", "conv", (8, 8, 2), (6, 6, 4), q_in, q1,
                 weights=rng.integers(-127, 128, (4, 3, 3, 2)).astype(np.int8),
                 bias=rng.integers(-500, 500, 4).astype(np.int32), weight_scales=ws1,
                 out_multiplier=m1, out_shift=s1, act_min=lo, act_max=hi, relu=relu)
    pool = Layer("maxpool2d", "pool", (6, 6, 4), (3, 3, 4), q1, q1, stride=(2, 2))
    flat = Layer("flatten", "flat", (3, 3, 4), (36,), q1, q1)
    dense = Layer("dense", "dense", (36,), (3,), q1, q2,
                  weights=rng.integers(-127, 128, (3, 36)).astype(np.int8),
                  bias=rng.integers(-500, 500, 3).astype(np.int32), weight_scales=ws2,
                  out_multiplier=m2, out_shift=s2)
    return Model("small", (8, 8, 2), q_in, 3, [conv, pool, flat, dense])


def flat_model(model: Model) -> Any:
    return fb.ModelT.InitFromPackedBuf(to_tflite(model), 0)


def run_interpreter(data: bytes, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    return np.asarray(it.get_tensor(out["index"]))


def add_opcode(m: Any, name: str, version: int = 1) -> int:
    code = fb.OperatorCodeT()
    code.builtinCode = getattr(fb.BuiltinOperator, name)
    code.deprecatedBuiltinCode = min(code.builtinCode, 127)
    code.version = version
    m.operatorCodes.append(code)
    return len(m.operatorCodes) - 1


def add_tensor(m: Any, like: int, ttype: int | None = None, quant: Any = "same") -> int:
    g = m.subgraphs[0]
    src = g.tensors[like]
    t = fb.TensorT()
    t.name = b"extra%d" % len(g.tensors)
    t.shape = list(src.shape)
    t.type = src.type if ttype is None else ttype
    t.quantization = src.quantization if quant == "same" else quant
    g.tensors.append(t)
    return len(g.tensors) - 1


def x_for(model: Model, n: int = 64) -> np.ndarray:
    return np.random.default_rng(5).integers(-128, 128, (n, *model.input_shape)).astype(np.int8)


# ---- accepted -------------------------------------------------------------------------------


def test_import_matches_interpreter_and_names(tmp_path: Path) -> None:
    model = small_model()
    path = tmp_path / "net.tflite"
    path.write_bytes(to_tflite(model))
    got = import_tflite(path)
    assert got.name == "net" and got.meta["source"] == "tflite"
    x = x_for(model)
    assert np.array_equal(ref.forward_int8(got, x), run_interpreter(path.read_bytes(), x))
    assert import_tflite(path.read_bytes(), name="other").name == "other"


def test_lrt_exports_keep_their_layer_names_and_others_get_keras_names() -> None:
    """A pulled or exported model keeps the names --train-layers selects by; a model from
    elsewhere (tensor names not '<layer>/out') gets conv2d, maxpool2d, ... as before."""
    model = small_model()
    assert [lay.name for lay in import_tflite(to_tflite(model)).layers] == [
        "conv", "pool", "flat", "dense"]  # fmt: skip
    m = flat_model(model)
    for t in m.subgraphs[0].tensors:
        t.name = t.name.replace(b"/out", b"_output")
    assert [lay.name for lay in import_tflite(pack_tflite(m)).layers] == [
        "conv2d", "maxpool2d", "flatten", "dense"]  # fmt: skip


def test_power_of_two_scales_get_exponents() -> None:
    model = small_model()
    q_in, q1, q2 = QParams(2.0**-7, -128), QParams(2.0**-5, -128), QParams(2.0**-3, 0)
    for lay, (qi, qo), ws in zip(
        model.weight_layers(), [(q_in, q1), (q1, q2)], [2.0**-9, 2.0**-8], strict=True
    ):
        n = lay.weights.shape[0]  # type: ignore[union-attr]
        lay.input_q, lay.output_q, lay.weight_scales = qi, qo, np.full(n, ws)
        lay.out_multiplier, lay.out_shift = rescale_multipliers(qi.scale, [ws], qo.scale, n)
        lay.act_min, lay.act_max = activation_range(1 if lay.relu else 0, qo)
    for lay in model.layers[1:3]:
        lay.input_q = lay.output_q = q1
    model.input_q = q_in
    got = import_tflite(to_tflite(model))
    assert got.input_q.exp == -7
    assert [lay.output_q.exp for lay in got.layers] == [-5, -5, -5, -3]
    assert [lay.weight_exp for lay in got.weight_layers()] == [-9, -8]
    # power-of-two layers are trainable on device: biases in the paper's 16-bit format
    assert all(lay.bias_exp == -12 for lay in got.weight_layers())
    assert got.power_of_two
    # scales that are not powers of two have no exponent
    plain = import_tflite(to_tflite(small_model()))
    assert plain.input_q.exp is None and plain.layers[0].weight_exp is None
    assert plain.layers[0].bias_exp is None and not plain.power_of_two


def test_float_io_boundaries_are_dropped() -> None:
    """QUANTIZE (float->int8) first and DEQUANTIZE (int8->float) last: int8 IR inside."""
    model = small_model()
    m = flat_model(model)
    g = m.subgraphs[0]
    f_in = add_tensor(m, g.inputs[0], fb.TensorType.FLOAT32, quant=None)
    f_out = add_tensor(m, g.outputs[0], fb.TensorType.FLOAT32, quant=None)
    q_op, dq_op = fb.OperatorT(), fb.OperatorT()
    q_op.opcodeIndex, q_op.inputs, q_op.outputs = add_opcode(m, "QUANTIZE"), [f_in], [g.inputs[0]]
    dq_op.opcodeIndex, dq_op.inputs = add_opcode(m, "DEQUANTIZE"), [g.outputs[0]]
    dq_op.outputs = [f_out]
    g.operators = [q_op, *g.operators, dq_op]
    g.inputs, g.outputs = [f_in], [f_out]
    data = pack_tflite(m)
    got = import_tflite(data)
    assert [lay.kind for lay in got.layers] == [lay.kind for lay in model.layers]
    x = x_for(model)
    real_in = (x.astype(np.float32) - model.input_q.zero_point) * np.float32(model.input_q.scale)
    real_out = run_interpreter(data, real_in)
    logits = ref.forward_int8(got, x)
    q = model.output_q
    assert np.array_equal((logits.astype(np.float32) - q.zero_point) * np.float32(q.scale),
                          real_out)


def test_standalone_relu_is_folded() -> None:
    model = small_model(relu=False)
    m = flat_model(model)
    g = m.subgraphs[0]
    conv_out = g.operators[0].outputs[0]
    relu_out = add_tensor(m, conv_out)
    relu = fb.OperatorT()
    relu.opcodeIndex, relu.inputs, relu.outputs = add_opcode(m, "RELU"), [conv_out], [relu_out]
    g.operators[1].inputs = [relu_out]
    g.operators.insert(1, relu)
    data = pack_tflite(m)
    got = import_tflite(data)
    assert len(got.layers) == 4 and got.layers[0].relu
    assert got.layers[0].act_min == got.layers[0].output_q.zero_point == -128
    x = x_for(model)
    assert np.array_equal(ref.forward_int8(got, x), run_interpreter(data, x))


def test_leading_reshape_sets_input_shape() -> None:
    model = small_model()
    m = flat_model(model)
    g = m.subgraphs[0]
    vec = add_tensor(m, g.inputs[0])
    g.tensors[vec].shape = [1, 128]
    shape_t = add_tensor(m, g.inputs[0], fb.TensorType.INT32, quant=None)
    g.tensors[shape_t].shape = [4]
    buf = fb.BufferT()
    buf.data = np.frombuffer(np.array([-1, 8, 8, 2], "<i4").tobytes(), np.uint8)
    m.buffers.append(buf)
    g.tensors[shape_t].buffer = len(m.buffers) - 1
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = add_opcode(m, "RESHAPE"), [vec, shape_t], g.inputs
    g.operators.insert(0, op)
    g.inputs = [vec]
    got = import_tflite(pack_tflite(m))
    assert got.input_shape == (8, 8, 2) and len(got.layers) == 4


# ---- refused --------------------------------------------------------------------------------


def test_unsupported_operator_is_named_with_its_position() -> None:
    m = flat_model(small_model())
    pool_code = m.subgraphs[0].operators[1].opcodeIndex
    m.operatorCodes[pool_code].builtinCode = fb.BuiltinOperator.AVERAGE_POOL_2D
    m.operatorCodes[pool_code].deprecatedBuiltinCode = fb.BuiltinOperator.AVERAGE_POOL_2D
    data = pack_tflite(m)
    run_interpreter(data, x_for(small_model(), 2))  # a valid model for TFLite
    with pytest.raises(UserError) as err:
        import_tflite(data)
    msg = str(err.value)
    assert "unsupported operator AVERAGE_POOL_2D at position 1 (op 2 of 4)" in msg
    assert "supported: CONV_2D, MAX_POOL_2D, FULLY_CONNECTED" in msg


def test_add_operator_is_refused() -> None:
    m = flat_model(small_model())
    g = m.subgraphs[0]
    out = g.outputs[0]
    added = add_tensor(m, out)
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = add_opcode(m, "ADD"), [out, out], [added]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.AddOptions, fb.AddOptionsT()
    g.operators.append(op)
    g.outputs = [added]
    data = pack_tflite(m)
    run_interpreter(data, x_for(small_model(), 2))
    with pytest.raises(UserError, match=r"unsupported operator ADD at position 4 \(op 5 of 5\)"):
        import_tflite(data)


def test_final_softmax_gets_a_hint() -> None:
    m = flat_model(small_model())
    g = m.subgraphs[0]
    out = g.outputs[0]
    probs = add_tensor(m, out, quant=None)
    g.tensors[probs].quantization = fb.QuantizationParametersT()
    g.tensors[probs].quantization.scale, g.tensors[probs].quantization.zeroPoint = [1 / 256], [-128]
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = add_opcode(m, "SOFTMAX"), [out], [probs]
    op.builtinOptionsType = fb.BuiltinOptions.SoftmaxOptions
    op.builtinOptions = fb.SoftmaxOptionsT()
    op.builtinOptions.beta = 1.0
    g.operators.append(op)
    g.outputs = [probs]
    with pytest.raises(UserError, match=r"SOFTMAX at position 4.*drop the final softmax"):
        import_tflite(pack_tflite(m))


def float_model(model: Model) -> bytes:
    """The same network with float32 tensors and weights (no quantization at all)."""
    m = flat_model(model)
    g = m.subgraphs[0]
    for t in g.tensors:
        q = t.quantization
        if t.buffer > 0 and t.type in (fb.TensorType.INT8, fb.TensorType.INT32) and q:
            ints = np.frombuffer(bytes(m.buffers[t.buffer].data),
                                 np.int8 if t.type == fb.TensorType.INT8 else "<i4")
            scales = np.asarray(q.scale, np.float32)
            vals = ints.reshape(len(scales), -1) * scales[:, None]
            m.buffers[t.buffer].data = np.frombuffer(vals.astype("<f4").tobytes(), np.uint8)
        if t.type == fb.TensorType.INT8 or (t.type == fb.TensorType.INT32 and q):
            t.type = fb.TensorType.FLOAT32
        t.quantization = None
    for code in m.operatorCodes:
        code.version = 1
    return pack_tflite(m)


def test_float_model_is_refused() -> None:
    model = small_model()
    data = float_model(model)
    out = run_interpreter(data, x_for(model, 2).astype(np.float32))
    assert out.dtype == np.float32
    with pytest.raises(UserError, match="FLOAT32; the model is not fully int8-quantized"):
        import_tflite(data)


def test_garbage_is_not_a_tflite_file(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a model" * 10)
    with pytest.raises(UserError, match="not a TensorFlow Lite model"):
        import_tflite(path)
    with pytest.raises(UserError, match="not a TensorFlow Lite model"):
        import_tflite(b"")
    with pytest.raises(UserError, match="cannot read"):
        import_tflite(tmp_path / "missing.tflite")


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_truncated_file_is_refused(fraction: float) -> None:
    data = to_tflite(small_model())
    with pytest.raises(UserError, match=r"corrupt or truncated \.tflite"):
        import_tflite(data[: int(len(data) * fraction)])


def test_corrupted_bytes_never_crash() -> None:
    """Random byte flips: either a valid import or a UserError, never another exception."""
    data = bytearray(to_tflite(small_model()))
    rng = np.random.default_rng(9)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(200):
        bad = bytearray(data)
        for pos in rng.integers(8, len(bad), 4):
            bad[pos] = int(rng.integers(0, 256))
        try:
            import_tflite(bytes(bad))
            outcomes["ok"] += 1
        except UserError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


def test_multiple_inputs_and_subgraphs_are_refused() -> None:
    m = flat_model(small_model())
    g = m.subgraphs[0]
    g.inputs = [g.inputs[0], add_tensor(m, g.inputs[0])]
    with pytest.raises(UserError, match="2 inputs and 1 outputs"):
        import_tflite(pack_tflite(m))
    m = flat_model(small_model())
    m.subgraphs.append(m.subgraphs[0])
    with pytest.raises(UserError, match="2 subgraphs"):
        import_tflite(pack_tflite(m))


def test_relu_that_requantizes_is_refused() -> None:
    model = small_model(relu=False)
    m = flat_model(model)
    g = m.subgraphs[0]
    conv_out = g.operators[0].outputs[0]
    relu_out = add_tensor(m, conv_out, quant=None)
    q = fb.QuantizationParametersT()
    q.scale, q.zeroPoint = [0.07], [-128]
    g.tensors[relu_out].quantization = q
    relu = fb.OperatorT()
    relu.opcodeIndex, relu.inputs, relu.outputs = add_opcode(m, "RELU"), [conv_out], [relu_out]
    g.operators[1].inputs = [relu_out]
    g.operators.insert(1, relu)
    with pytest.raises(UserError, match="RELU at position 1: standalone activation changes"):
        import_tflite(pack_tflite(m))


def test_dilated_conv_and_asymmetric_weights_are_refused() -> None:
    m = flat_model(small_model())
    m.subgraphs[0].operators[0].builtinOptions.dilationHFactor = 2
    with pytest.raises(UserError, match="CONV_2D at position 0: dilated"):
        import_tflite(pack_tflite(m))
    m = flat_model(small_model())
    g = m.subgraphs[0]
    g.tensors[g.operators[0].inputs[1]].quantization.zeroPoint = [1, 0, 0, 0]
    with pytest.raises(UserError, match="non-zero zero point"):
        import_tflite(pack_tflite(m))


def test_to_tflite_refuses_inconsistent_rescale() -> None:
    model = small_model()
    mult = model.layers[0].out_multiplier
    assert mult is not None
    model.layers[0].out_multiplier = mult + 1
    with pytest.raises(ValueError, match="do not follow from the scales"):
        to_tflite(model)


def test_what_training_measured_travels_with_the_tflite() -> None:
    """An lrt .tflite carries the held-out accuracies its training measured, so a build that
    imports it gets the same error gate (gate_rate) as the build that trained it; a
    .tflite from elsewhere carries none, and a damaged record is refused."""
    from lrt.config import BuildConfig
    from lrt.policy import held_out_error, policy_of
    from lrt.tflite_import import MODEL_METADATA_NAME, add_metadata_entry, pack_tflite

    model = small_model()
    model.meta = {"epochs": 3, "int8_accuracy": 0.98, "int8_field_accuracy": 0.91,
                  "float_accuracy": float("nan"), "seed": 0}  # fmt: skip
    got = import_tflite(to_tflite(model))
    assert {k: got.meta[k] for k in ("epochs", "int8_accuracy", "int8_field_accuracy")} == {
        "epochs": 3, "int8_accuracy": 0.98, "int8_field_accuracy": 0.91}  # fmt: skip
    assert "seed" not in got.meta and "float_accuracy" not in got.meta
    assert held_out_error(got.meta) == held_out_error(model.meta) == pytest.approx(0.09)
    cfg = BuildConfig()
    assert policy_of(cfg, 10**6, 2, held_out_error(got.meta)).gate_rate_q16 == policy_of(
        cfg, 10**6, 2, held_out_error(model.meta)).gate_rate_q16 > 0  # fmt: skip
    assert "int8_accuracy" not in import_tflite(to_tflite(small_model())).meta
    for bad in (b'{"int8_accuracy": "high"}', b'{"int8_accuracy": NaN}',
                b'{"int8_accuracy": 7.5}', b'{"epochs": -1}', b'{"epochs": true}',
                b'{"seed": 3}', b"[0.9]", b"\xff"):  # fmt: skip
        m = flat_model(small_model())
        add_metadata_entry(m, MODEL_METADATA_NAME, bad)
        with pytest.raises(UserError, match="malformed lrt_model metadata"):
            import_tflite(pack_tflite(m))

"""Streaming batch norm on the Python side: layer plan, IR, .tflite export/import, codegen,
budget (no TensorFlow; the C side is tests/c/test_batchnorm_c.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb

from harness.backprop import random_preset_model
from lrt import batchnorm, codegen, presets, quant
from lrt import reference as ref
from lrt.boards import load_board
from lrt.budget import plan_budget, probe_static_objects
from lrt.config import BuildConfig
from lrt.errors import UserError
from lrt.model import Model
from lrt.tflite_import import import_tflite, pack_tflite, to_tflite


@pytest.fixture(scope="module")
def model() -> Model:
    return random_preset_model("mcu-bn", seed=4)


def test_plan_puts_batch_norm_after_each_pool() -> None:
    plans = presets.plan_layers(presets.PRESETS["mcu-bn"])
    kinds = [p.kind for p in plans]
    assert kinds == [
        "conv2d", "conv2d", "maxpool2d", "batchnorm", "conv2d", "conv2d", "maxpool2d",
        "batchnorm", "flatten", "dense", "dense",
    ]  # fmt: skip
    by_name = {p.name: p for p in plans}
    assert by_name["bn2"].out_exp == batchnorm.OUT_EXP == -6
    assert by_name["bn2"].out_zero_point == 0 and by_name["bn2"].out_int_range == (-128, 127)
    # the layers reading a batch-norm output take signed input, LSB 2**-6, zero point 0
    for name in ("conv3", "flatten", "dense1"):
        assert (by_name[name].in_exp, by_name[name].in_zero_point) == (-6, 0), name
        if by_name[name].has_weights:
            assert by_name[name].acc_exp <= quant.BIAS_EXP  # 16-bit biases still exact
    # without batch norm nothing changes (the ablation)
    assert [p.out_shape for p in presets.plan_layers(presets.PRESETS["mcu"])] == [
        p.out_shape for p in plans if p.kind != "batchnorm"
    ]


def test_no_statistics_means_no_normalisation() -> None:
    """pow = 2**30 (no sample seen): y = gamma x + beta in real units."""
    gamma = np.array([4096, 8192, -2048])
    beta = np.array([0, 1024, -512])
    t = batchnorm.derive(gamma, beta, np.zeros(3), np.zeros(3), batchnorm.POW_ONE, -7, -6)
    x = np.arange(0, 256, 5)[:, None]  # input LSBs (2**-7)
    got = (x * t.w + t.bias.astype(np.int64)) * 2.0 ** t.f.astype(np.float64)  # output LSBs
    want = (gamma / 4096 * x * 2**-7 + beta / 4096) / 2**-6
    assert np.allclose(got, want, atol=0.02 * np.abs(want).max())


def test_statistics_update_is_an_ema() -> None:
    rng = np.random.default_rng(0)
    mean, msq, p = np.zeros(4), np.zeros(4), batchnorm.POW_ONE
    xs = rng.integers(-128, 128, (60, 3, 3, 4))
    for x in xs:
        mean, msq, p = batchnorm.update_stats(mean, msq, p, x, -128, 10)
    real = (xs.astype(np.float64) + 128).reshape(60, -1, 4).mean(1)  # per-sample means
    eta = 0.9
    ema = sum((1 - eta) * eta ** (59 - k) * real[k] for k in range(60))
    assert np.allclose(mean / 2**16, ema, rtol=1e-3)
    assert p == 0 or p < batchnorm.POW_ONE * eta**59 * 1.01


def test_ir_round_trip(model: Model, tmp_path: Path) -> None:
    model.save(tmp_path / "ir")
    back = Model.load(tmp_path / "ir")
    assert back.fingerprint() == model.fingerprint()
    for a, b in zip(model.layers, back.layers, strict=True):
        if a.kind == "batchnorm":
            assert np.array_equal(a.bn_msq, b.bn_msq) and a.bn_pow_q30 == b.bn_pow_q30  # type: ignore[arg-type]
    lay = next(la for la in back.layers if la.kind == "batchnorm")
    assert lay.bn_mean is not None
    lay.bn_mean = lay.bn_mean + 1
    assert back.fingerprint() != model.fingerprint()  # the state belongs to the model
    assert model.power_of_two and model.weight_layers() == [
        la for la in model.layers if la.kind in ("conv2d", "dense")
    ]


def test_tflite_export_import_and_interpreter(model: Model) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    tfl = to_tflite(model)
    back = import_tflite(tfl)
    assert [la.kind for la in back.layers] == [la.kind for la in model.layers]
    x = np.random.default_rng(1).integers(-128, 128, (64, 28, 28, 1)).astype(np.int8)
    it = Interpreter(model_content=tfl, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    got = it.get_tensor(out["index"])
    assert np.array_equal(got, ref.forward_int8(model, x))
    assert np.array_equal(ref.forward_int8(back, x), got)


def _mutated(model: Model, edit: str) -> bytes:
    m = fb.ModelT.InitFromPackedBuf(to_tflite(model), 0)
    g = m.subgraphs[0]
    codes = {i: max(c.builtinCode, c.deprecatedBuiltinCode) for i, c in enumerate(m.operatorCodes)}
    dw = next(
        op for op in g.operators
        if codes[op.opcodeIndex] == fb.BuiltinOperator.DEPTHWISE_CONV_2D
    )  # fmt: skip
    if edit == "no-metadata":
        m.metadata = []
    elif edit == "stride":
        dw.builtinOptions.strideH = 2
    elif edit == "tampered":
        meta = next(md for md in m.metadata if md.name in (b"lrt_batchnorm", "lrt_batchnorm"))
        doc = json.loads(bytes(np.asarray(m.buffers[meta.buffer].data)).decode())
        doc["layers"][0]["gamma"][0] += 3000
        m.buffers[meta.buffer].data = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    elif edit == "mul":
        code = fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.MUL
        code.version = 1
        m.operatorCodes.append(code)
        dw.opcodeIndex = len(m.operatorCodes) - 1
    return pack_tflite(m)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("no-metadata", "no batch-norm state"),
        ("stride", "general depthwise convolution"),
        ("tampered", "does not reproduce"),
        ("mul", "unsupported operator MUL at position 3"),
    ],
)
def test_import_refuses_other_affine_layers(model: Model, edit: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        import_tflite(_mutated(model, edit))
    if edit == "mul":
        assert "DEPTHWISE_CONV_2D" in str(info.value)  # tells how batch norm is supported


def test_codegen_blob_and_budget(model: Model, tmp_path: Path) -> None:
    layout = codegen.blob_layout(model)
    blob = codegen.blob_bytes(model, layout)
    for i, lay in enumerate(model.layers):
        if lay.kind == "batchnorm":
            c = lay.out_shape[-1]
            words = np.frombuffer(blob, "<i4", 4 * c + 1, layout.b_offset[i])
            assert np.array_equal(words[:c], lay.bn_gamma)  # type: ignore[arg-type]
            assert np.array_equal(words[3 * c : 4 * c], lay.bn_msq)  # type: ignore[arg-type]
            assert layout.b_offset[i] + batchnorm.snapshot_size(c) <= layout.size
    snapshots = sum(
        batchnorm.snapshot_size(la.out_shape[-1]) for la in model.layers if la.kind == "batchnorm"
    )
    biases = sum(4 * la.n_bias for la in model.weight_layers())
    assert layout.size == layout.weights_bytes + biases + snapshots
    cfg = BuildConfig(scheme="lrt-maxnorm", batch_conv=7)
    board = load_board("host")
    codegen.generate(model, cfg, board, tmp_path)
    src = (tmp_path / "lrt_model.c").read_text()
    for i, lay in enumerate(model.layers):
        if lay.kind == "batchnorm":
            assert f".bn = &lrt_model_bn_{i}" in src
            assert f"lrt_model_bn_std_{i}, 7u" in src  # B = the build's batch_conv
    # the pool outputs feed the statistics: kept even when only the classifier trains
    for lay in model.weight_layers()[:-1]:
        lay.trainable = False
    # main.c declares keep_<i> where the library's rule says so (compiled, as the budget sees it)
    objects = probe_static_objects(model, cfg, board)
    keep = {int(o.name[5:]) for o in objects if re.fullmatch(r"keep_\d+", o.name)}
    pools = {i - 1 for i, la in enumerate(model.layers) if la.kind == "batchnorm"}
    assert pools <= keep
    b = plan_budget(model, cfg, board)
    # 30 B a channel (gamma, beta, mean, msq, bias, mu, std_q int32; w, shift int8) for the
    # 24 channels, plus two small lrt_bn structs, as the compiler laid them out
    assert 30 * 24 < b.ram_items["batch norm (state + tables)"] < 30 * 24 + 2 * 128

"""Bit-exactness of the int8 forward pass on random IR models (no TensorFlow needed).

Three implementations must agree on every logit:
  * the TFLite reference interpreter (ai-edge-litert, OpResolverType.BUILTIN_REF) running
    lrt.tflite_import.to_tflite(model),
  * lrt.reference.forward_int8 (numpy),
  * the C library (lrt_net.c + lrt_kernels.c, ASan/UBSan) over a layer table generated here.
Models have arbitrary float scales (like imported ones) or power-of-two scales (like the
toolchain's own), where TFLite's double rounding differs most from a single rounding.

The helpers (c_table_source, build_net_driver, run_net_driver, interpreter_logits) are also
used by test_bitexact_keras.py.
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from harness.cbuild import LIB_DIR, compile_c
from lrt import reference as ref
from lrt.model import Layer, Model, QParams
from lrt.quant import exp_of
from lrt.tflite_import import activation_range, import_tflite, rescale_multipliers, to_tflite

N_INPUTS = 1000
KIND = {"conv2d": 1, "maxpool2d": 2, "dense": 3, "flatten": 4}  # lrt_layer_kind
RELU, RELU6, NONE = 1, 3, 0  # TFLite ActivationFunctionType

# ---- TFLite interpreter --------------------------------------------------------------------


def interpreter_logits(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """int8 outputs of the TFLite reference kernels for a batch of int8 inputs."""
    it = Interpreter(model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    return np.asarray(it.get_tensor(out["index"])).reshape(x.shape[0], -1)


# ---- minimal C layer table + host driver ---------------------------------------------------


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (1, 1, shape[0])


def _arr(values: np.ndarray) -> str:
    return ", ".join(str(int(v)) for v in np.asarray(values).ravel())


def c_table_source(model: Model, symbol: str = "test_net") -> str:
    """A C file defining `const lrt_net <symbol>` for the model (weights in one blob)."""
    blob = bytearray()
    offsets: list[int] = []
    for layer in model.layers:
        offsets.append(len(blob))
        if layer.weights is not None:
            blob += np.ascontiguousarray(layer.weights, dtype=np.int8).tobytes()
            blob += bytes(-len(blob) % 4)
    lines = ['#include "lrt_net.h"', ""]
    blob_vals = np.frombuffer(bytes(blob) or b"\0", dtype=np.int8)
    # the union aligns the blob to 4 bytes, as the NVM slot does
    lines.append(f"static const union {{ int8_t b[{blob_vals.size}]; uint32_t align; }} "
                 f"blob = {{{{{_arr(blob_vals)}}}}};")
    entries = []
    for i, layer in enumerate(model.layers):
        in_h, in_w, in_c = _hwc(layer.in_shape)
        out_h, out_w, out_c = _hwc(layer.out_shape)
        kh = kw = 1
        top = left = 0
        if layer.kind == "conv2d":
            assert layer.weights is not None
            kh, kw = int(layer.weights.shape[1]), int(layer.weights.shape[2])
        elif layer.kind == "maxpool2d":
            kh, kw = layer.pool
        if layer.kind in ("conv2d", "maxpool2d"):
            _, _, top, _, left, _ = ref.pad_amounts(
                in_h, in_w, kh, kw, layer.stride, layer.padding
            )
        bias = mult = shift = "NULL"
        if layer.has_weights:
            assert layer.bias is not None and layer.out_multiplier is not None
            assert layer.out_shift is not None
            lines.append(f"static int32_t bias_{i}[] = {{{_arr(layer.bias)}}};")
            lines.append(f"static const int32_t mult_{i}[] = {{{_arr(layer.out_multiplier)}}};")
            lines.append(f"static const int8_t shift_{i}[] = {{{_arr(layer.out_shift)}}};")
            bias, mult, shift = f"bias_{i}", f"mult_{i}", f"shift_{i}"
        w_size = int(layer.weights.size) if layer.weights is not None else 0
        entries.append(
            f"{{ .kind = {KIND[layer.kind]}, .relu = {int(layer.relu)}, "
            f".in_h = {in_h}, .in_w = {in_w}, .in_c = {in_c}, "
            f".out_h = {out_h}, .out_w = {out_w}, .out_c = {out_c}, "
            f".kernel_h = {kh}, .kernel_w = {kw}, "
            f".stride_h = {layer.stride[0]}, .stride_w = {layer.stride[1]}, "
            f".pad_top = {top}, .pad_left = {left}, "
            f".input_offset = {-layer.input_q.zero_point}, "
            f".output_offset = {layer.output_q.zero_point}, "
            f".act_min = {layer.act_min}, .act_max = {layer.act_max}, "
            f".w_offset = {offsets[i] if w_size else 0}u, .w_size = {w_size}u, "
            f".bias = {bias}, .out_multiplier = {mult}, .out_shift = {shift}, "
            f".in_exp = 127, .out_exp = 127, .weight_exp = 127, .bias_exp = 127 }}"
        )
    lines.append("static const lrt_layer layers[] = {\n    " + ",\n    ".join(entries) + "\n};")
    in_h, in_w, in_c = _hwc(tuple(model.input_shape))
    lines.append(
        f"const lrt_net {symbol} = {{ .layers = layers, .blob = blob.b, "
        f".blob_size = {len(blob)}u, .n_layers = {len(model.layers)}, "
        f".in_h = {in_h}, .in_w = {in_w}, .in_c = {in_c}, .n_classes = {model.num_classes} }};"
    )
    return "\n".join(lines) + "\n"


DRIVER_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lrt_net.h"

extern const lrt_net test_net;

static void put_i32(int32_t v) { fwrite(&v, 4, 1, stdout); }

/* Invalid calls and inconsistent tables must be refused with the right lrt_err. */
static void check_errors(const lrt_net *net, int8_t *in, int8_t *logits, int8_t *a, int8_t *b)
{
    lrt_net bad = *net;
    lrt_layer layers[64];
    memcpy(layers, net->layers, net->n_layers * sizeof(lrt_layer));
    bad.layers = layers;
    memset(in, 0, (size_t)net->in_h * net->in_w * net->in_c);
    put_i32(lrt_net_forward(net, in, logits, a, b, NULL));
    put_i32(lrt_net_forward(NULL, in, logits, a, b, NULL));
    put_i32(lrt_net_forward(net, NULL, logits, a, b, NULL));
    put_i32(lrt_net_forward(net, in, logits, a, NULL, NULL));
    bad.n_classes = (uint16_t)(net->n_classes + 1);
    put_i32(lrt_net_forward(&bad, in, logits, a, b, NULL));
    bad.n_classes = net->n_classes;
    layers[0].w_size += 1; /* table and blob disagree */
    put_i32(lrt_net_forward(&bad, in, logits, a, b, NULL));
    layers[0].w_size -= 1;
    bad.blob_size = 3; /* weights would be read past the blob */
    put_i32(lrt_net_forward(&bad, in, logits, a, b, NULL));
    bad.blob_size = net->blob_size;
    layers[0].kind = 9;
    put_i32(lrt_net_forward(&bad, in, logits, a, b, NULL));
}

int main(int argc, char **argv)
{
    const lrt_net *net = &test_net;
    const uint32_t in_size = (uint32_t)net->in_h * net->in_w * net->in_c;
    const uint32_t act = lrt_net_act_buffer_size(net);
    const int keep_mode = argc > 1 && strcmp(argv[1], "keep") == 0;
    int8_t *in = malloc(in_size), *logits = malloc(net->n_classes);
    int8_t *a = malloc(act), *b = malloc(act);
    int8_t **keep = calloc(net->n_layers, sizeof(int8_t *));
    int rc = 0;
    uint8_t i;
    if (!in || !logits || !a || !b || !keep) return 4;
    for (i = 0; keep_mode && i < net->n_layers; i++) {
        keep[i] = malloc(lrt_layer_out_size(&net->layers[i]));
        if (!keep[i]) return 4;
    }
    if (argc > 1 && strcmp(argv[1], "errors") == 0) {
        check_errors(net, in, logits, a, b);
    } else {
        while (rc == 0 && fread(in, 1, in_size, stdin) == in_size) {
            int err = lrt_net_forward(net, in, logits, a, b, keep_mode ? keep : NULL);
            if (err != LRT_OK) {
                fprintf(stderr, "forward: %d\n", err);
                rc = 3;
                break;
            }
            fwrite(logits, 1, net->n_classes, stdout);
            put_i32(lrt_argmax_s8(logits, net->n_classes));
            for (i = 0; keep_mode && i < net->n_layers; i++)
                fwrite(keep[i], 1, lrt_layer_out_size(&net->layers[i]), stdout);
        }
    }
    for (i = 0; i < net->n_layers; i++) free(keep[i]);
    free(keep), free(in), free(logits), free(a), free(b);
    return rc;
}
"""


def build_net_driver(model: Model, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    table = workdir / "table.c"
    table.write_text(c_table_source(model))
    main = workdir / "main.c"
    main.write_text(DRIVER_MAIN)
    libs = [LIB_DIR / f for f in ("lrt_net.c", "lrt_kernels.c", "lrt_fixmath.c", "lrt_common.c")]
    return compile_c([main, table, *libs], workdir / "net_driver")


def run_net_driver(
    exe: Path, model: Model, x: np.ndarray, keep: bool = False
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(logits [N, classes], argmax [N], kept layer outputs [N, ...] per layer if keep)."""
    args = [str(exe), "keep"] if keep else [str(exe)]
    proc = subprocess.run(args, input=np.ascontiguousarray(x, np.int8).tobytes(),
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    sizes = [int(np.prod(layer.out_shape)) for layer in model.layers] if keep else []
    rec = model.num_classes + 4 + sum(sizes)
    n = x.shape[0]
    assert len(proc.stdout) == n * rec
    raw = np.frombuffer(proc.stdout, dtype=np.uint8).reshape(n, rec)
    logits = raw[:, : model.num_classes].view(np.int8)
    argmax = raw[:, model.num_classes : model.num_classes + 4].copy().view("<i4")[:, 0]
    kept, pos = [], model.num_classes + 4
    for layer, size in zip(model.layers if keep else [], sizes, strict=True):
        kept.append(raw[:, pos : pos + size].view(np.int8).reshape(n, *layer.out_shape))
        pos += size
    return logits, argmax, kept


# ---- random models -------------------------------------------------------------------------


def _scale(rng: np.random.Generator, pow2: bool, lo: float, hi: float) -> float:
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return 2.0 ** round(np.log2(s)) if pow2 else float(np.float32(s))


def random_model(rng: np.random.Generator, arch: str, pow2: bool) -> Model:
    """Random weights/biases/scales; architectures cover every padding/stride/pool path."""
    specs: list[tuple] = {
        # conv+relu, conv stride 2 same (relu6), maxpool, flatten, dense relu, dense
        "cnn": [("conv", 6, (3, 3), (1, 1), "valid", RELU), ("conv", 8, (3, 3), (2, 2), "same",
                 RELU6), ("pool", (2, 2), (2, 2), "valid"), ("flatten",), ("dense", 16, RELU),
                ("dense", 10, NONE)],
        # even kernel with same padding, 3x3/2 same pool, strided valid conv, no activation
        "odd": [("conv", 5, (2, 2), (1, 1), "same", NONE), ("pool", (3, 3), (2, 2), "same"),
                ("conv", 7, (3, 3), (2, 2), "valid", RELU), ("flatten",), ("dense", 6, NONE)],
    }[arch]
    input_shape: tuple[int, ...] = (14, 14, 1) if arch == "cnn" else (11, 9, 3)
    zp = -128 if pow2 else int(rng.integers(-128, 0))
    in_q = QParams(_scale(rng, pow2, 0.004, 0.02), zp)
    in_q = replace(in_q, exp=exp_of(in_q.scale))
    model_in_q, shape, layers = in_q, input_shape, []
    cal = rng.integers(-128, 128, (200, *input_shape)).astype(np.int8)
    for n, spec in enumerate(specs):
        name = f"{spec[0]}_{n}"
        out: tuple[int, ...]
        if spec[0] == "flatten":
            out = (int(np.prod(shape)),)
            layers.append(Layer("flatten", name, shape, out, in_q, in_q))
            cal = cal.reshape(len(cal), -1)
            shape = out
            continue
        if spec[0] == "pool":
            _, pool, stride, padding = spec
            oh, ow, *_ = ref.pad_amounts(shape[0], shape[1], pool[0], pool[1], stride, padding)
            out = (oh, ow, shape[2])
            layers.append(Layer("maxpool2d", name, shape, out, in_q, in_q, stride=stride,
                                padding=padding, pool=pool, trainable=False))
            cal = ref.layer_forward(layers[-1], cal)
            shape = out
            continue
        if spec[0] == "conv":
            _, c_out, k, stride, padding, act = spec
            oh, ow, *_ = ref.pad_amounts(shape[0], shape[1], k[0], k[1], stride, padding)
            out, wshape = (oh, ow, c_out), (c_out, *k, shape[2])
        else:
            _, c_out, act = spec
            out, wshape = (c_out,), (c_out, int(np.prod(shape)))
            stride, padding = (1, 1), "valid"
        if pow2:
            ws = np.full(c_out, _scale(rng, True, 0.002, 0.02))
        else:
            ws = np.array([_scale(rng, False, 0.002, 0.02) for _ in range(c_out)])
        w = rng.integers(-127, 128, wshape).astype(np.int8)
        # calibrate bias and output scale on real accumulators: outputs use the int8 range
        # and still depend on the input
        acc = (
            ref.conv2d_acc(cal, w, None, -in_q.zero_point, stride, padding)
            if spec[0] == "conv"
            else ref.dense_acc(cal.reshape(len(cal), -1), w, None, -in_q.zero_point)
        )
        flat = acc.reshape(-1, c_out)
        # centre every channel (else one class wins on every input), plus some offset
        bias = np.round(-flat.mean(axis=0) + rng.normal(0, 0.3, c_out) * (flat.std(axis=0) + 1))
        bias = bias.astype(np.int32)
        acc = acc + bias
        real = acc * in_q.scale * ws
        span = float(np.percentile(np.maximum(real, 0) if act != NONE else np.abs(real), 99))
        target = span / (250 if act != NONE else 125) * rng.uniform(0.7, 1.3)
        out_q = QParams(_scale(rng, pow2, target, target * 1.0001),
                        -128 if act != NONE else int(rng.integers(-10, 10)))
        out_q = replace(out_q, exp=exp_of(out_q.scale))
        mult, shift = rescale_multipliers(in_q.scale, ws, out_q.scale, c_out)
        lo, hi = activation_range(act, out_q)
        layer = Layer(
            "conv2d" if spec[0] == "conv" else "dense", name, shape, out, in_q, out_q,
            weights=w, bias=bias, weight_scales=ws, out_multiplier=mult,
            out_shift=shift, act_min=lo, act_max=hi, relu=act != NONE, stride=stride,
            padding=padding, weight_exp=exp_of(float(ws[0])) if pow2 else None,
        )
        layers.append(layer)
        cal = ref.layer_forward(layer, cal)
        in_q, shape = out_q, out
    return Model(name=f"random_{arch}_{'pow2' if pow2 else 'float'}", input_shape=input_shape,
                 input_q=model_in_q, num_classes=int(np.prod(shape)), layers=layers)


CASES = [("cnn", False), ("cnn", True), ("odd", False), ("odd", True)]


@pytest.fixture(scope="module", params=CASES,
                ids=[f"{a}-{'pow2' if p else 'float'}" for a, p in CASES])
def case(request: pytest.FixtureRequest) -> tuple[Model, np.ndarray, bytes]:
    arch, pow2 = request.param
    rng = np.random.default_rng(100 + CASES.index(request.param))
    model = random_model(rng, arch, pow2)
    x = rng.integers(-128, 128, (N_INPUTS, *model.input_shape)).astype(np.int8)
    return model, x, to_tflite(model)


def test_reference_matches_interpreter(case: tuple[Model, np.ndarray, bytes]) -> None:
    model, x, tflite = case
    expect = interpreter_logits(tflite, x)
    got = ref.forward_int8(model, x)
    exact = int(np.sum(np.all(got == expect, axis=1)))
    assert exact == N_INPUTS, f"{exact}/{N_INPUTS} inputs bit-exact"
    # the outputs are not degenerate: several classes win and logits spread
    assert len(np.unique(np.argmax(expect, axis=1))) > 2
    assert len(np.unique(expect)) > 20


def test_c_forward_matches_reference(case: tuple[Model, np.ndarray, bytes],
                                     tmp_path: Path) -> None:
    model, x, _ = case
    exe = build_net_driver(model, tmp_path)
    logits, argmax, _ = run_net_driver(exe, model, x)
    expect = ref.forward_int8(model, x)
    assert int(np.sum(np.all(logits == expect, axis=1))) == N_INPUTS
    assert np.array_equal(argmax, np.argmax(expect, axis=1))  # lowest index on ties
    # keep buffers hold every layer's output (what backprop reads)
    logits_k, _, kept = run_net_driver(exe, model, x[:50], keep=True)
    assert np.array_equal(logits_k, expect[:50])
    for got, want in zip(kept, ref.forward_int8_layers(model, x[:50]), strict=True):
        assert np.array_equal(got, want.reshape(got.shape))


def test_import_round_trip(case: tuple[Model, np.ndarray, bytes]) -> None:
    model, _, tflite = case
    back = import_tflite(tflite)
    assert back.input_shape == model.input_shape and back.num_classes == model.num_classes
    assert back.input_q == model.input_q
    assert [lay.kind for lay in back.layers] == [lay.kind for lay in model.layers]
    for a, b in zip(model.layers, back.layers, strict=True):
        assert (a.in_shape, a.out_shape, a.act_min, a.act_max, a.relu) == (
            b.in_shape, b.out_shape, b.act_min, b.act_max, b.relu)
        assert a.output_q == b.output_q
        if a.has_weights:
            assert (a.stride, a.padding, a.weight_exp) == (b.stride, b.padding, b.weight_exp)
            for key in ("weights", "bias", "out_multiplier", "out_shift"):
                assert np.array_equal(getattr(a, key), getattr(b, key)), key
            assert np.allclose(a.weight_scales, b.weight_scales, rtol=1e-7)  # type: ignore[arg-type]
            # power-of-two layers come back trainable (paper's 16-bit bias format)
            pow2 = b.weight_exp is not None and b.input_q.exp is not None
            assert b.bias_exp == (-12 if pow2 else None)
        if a.kind == "maxpool2d":
            assert (a.pool, a.stride, a.padding) == (b.pool, b.stride, b.padding)


def _tiny_model(kind: str, weights: np.ndarray, scales: np.ndarray) -> Model:
    """One 1x1 conv or 1-input dense layer with power-of-two rescales 2**-1 .. 2**-4."""
    n = len(scales)
    in_q, out_q = QParams(1.0, 0, 0), QParams(1.0, 0, 0)
    mult, shift = rescale_multipliers(1.0, scales, 1.0, n)
    if kind == "conv2d":
        in_shape: tuple[int, ...] = (16, 16, 1)
        out_shape: tuple[int, ...] = (16, 16, n)
        w: np.ndarray = weights.reshape(n, 1, 1, 1)
    else:
        in_shape, out_shape, w = (1,), (n,), weights.reshape(n, 1)
    layer = Layer(kind, kind, in_shape, out_shape, in_q, out_q,  # type: ignore[arg-type]
                  weights=w.astype(np.int8), bias=np.zeros(n, np.int32), weight_scales=scales,
                  out_multiplier=mult, out_shift=shift)
    return Model(f"tiny_{kind}", in_shape, in_q, int(np.prod(out_shape)), [layer])


def test_rounding_variants_are_told_apart() -> None:
    """Which rescale does each TFLite reference kernel use? Only one variant fits each.

    Every int8 input times weights +-1, +-3 with scales 2**-1 .. 2**-4: lots of exact
    half-way cases, where the variants differ.
    """
    scales = np.array([0.5, 0.25, 0.125, 0.0625])
    weights = np.array([1, -1, 3, -3])
    x_all = np.arange(-128, 128, dtype=np.int8)
    mismatches: dict[tuple[str, str], int] = {}
    for kind in ("conv2d", "dense"):
        model = _tiny_model(kind, weights, scales)
        layer = model.layers[0]
        x: np.ndarray = x_all.reshape(1, 16, 16, 1) if kind == "conv2d" else x_all.reshape(256, 1)
        expect = interpreter_logits(to_tflite(model), x).reshape(-1)
        for rounding in ("double", "single", "away"):
            if kind == "conv2d":
                got = ref.conv2d_s8(x, layer.weights, None, layer.out_multiplier,  # type: ignore[arg-type]
                                    layer.out_shift, 0, 0, rounding=rounding)  # type: ignore[arg-type]
            else:
                got = ref.dense_s8(x, layer.weights, None, layer.out_multiplier,  # type: ignore[arg-type]
                                   layer.out_shift, 0, 0, rounding=rounding)  # type: ignore[arg-type]
            mismatches[kind, rounding] = int(np.sum(got.reshape(-1) != expect))
    assert mismatches == {
        ("conv2d", "double"): 0,
        ("conv2d", "single"): mismatches["conv2d", "single"] or -1,
        ("conv2d", "away"): mismatches["conv2d", "away"] or -1,
        ("dense", "double"): mismatches["dense", "double"] or -1,
        ("dense", "single"): mismatches["dense", "single"] or -1,
        ("dense", "away"): 0,
    }, mismatches


def test_net_forward_refuses_bad_tables(tmp_path: Path) -> None:
    model = random_model(np.random.default_rng(3), "cnn", pow2=False)
    exe = build_net_driver(model, tmp_path)
    proc = subprocess.run([str(exe), "errors"], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    codes = list(struct.unpack(f"<{len(proc.stdout) // 4}i", proc.stdout))
    ok, arg, size, unsupported = 0, -1, -2, -12  # lrt_err
    assert codes == [ok, arg, arg, arg, size, size, size, unsupported]

"""Float gradient oracles of the on-device backward pass (lrt_backprop.c / lrt_train.c), for
the tests: TensorFlow's autodiff at the operating point of the integer forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from lrt import batchnorm
from lrt.model import Model, QParams
from lrt.reference import forward_int8_layers
from lrt.tfkeras import tf_keras


def float_gradients(model: Model, x: np.ndarray, y: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Float64 gradients of softmax cross-entropy wrt each weight layer's dequantized weights
    and biases, one gradient per sample.

    The network is the IR's dequantized network taken at the operating point of the integer
    forward pass: every layer's forward value is its dequantized int8 output from
    ``lrt.reference`` (TFLite arithmetic), and the fused clamp passes gradients where the
    int8 output q satisfies act_min < q < act_max (clipped straight-through estimator, the
    firmware's rule). Max-pool routes gradients to the first maximum of each window.

    ``x``: float images in [0, 1] (N x input_shape) or int8 model inputs; ``y``: N labels.
    Returns one dict per weight layer (``model.weight_layers()`` order) holding
    ``"weights"`` [N, *layer.weights.shape] (IR layout: OHWI / [out, in]) and ``"bias"``
    [N, out_c], both dL/d(real value).
    """
    grads = float_gradients_all(model, x, y)
    return [grads[lay.name] for lay in model.weight_layers()]


def float_gradients_all(
    model: Model, x: np.ndarray, y: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """:func:`float_gradients` for every layer with parameters, by layer name: weight layers
    give ``"weights"`` and ``"bias"``, batch-norm layers ``"gamma"`` and ``"beta"`` [N, C]
    (dL/d of the real gamma and beta).

    A batch-norm layer is y = gamma (x - mu) / std + beta with the running statistics mu,
    std of its current state as constants (the paper's streaming batch norm: no gradient
    flows into the statistics), with the float gamma / std (not the forward's 8-bit gain).
    """
    tf, _ = tf_keras()
    x = np.asarray(x)
    xq = x if x.dtype == np.int8 else model.quantize_input(x)
    labels = np.asarray(y).astype(np.int64).reshape(-1)
    if xq.shape[0] != labels.shape[0]:
        raise ValueError(f"{xq.shape[0]} inputs but {labels.shape[0]} labels")
    outs = forward_int8_layers(model, xq)
    players = [lay for lay in model.layers if lay.has_weights or lay.kind == "batchnorm"]
    variables = []
    consts: dict[str, tuple[Any, Any]] = {}  # batch norm: (mu, std), real units
    keys = {}
    for lay in players:
        if lay.kind == "batchnorm":
            assert lay.bn_gamma is not None and lay.bn_beta is not None
            assert lay.input_q.exp is not None
            t = batchnorm.layer_tables(lay)
            ps = 2.0**batchnorm.PARAM_EXP
            mu = t.mu.astype(np.float64) * 2.0 ** (lay.input_q.exp - batchnorm.MEAN_FRAC)
            std = t.std_q.astype(np.float64) * 2.0 ** (lay.input_q.exp - batchnorm.STD_FRAC)
            consts[lay.name] = (tf.constant(mu), tf.constant(std))
            g = lay.bn_gamma.astype(np.float64) * ps
            b = lay.bn_beta.astype(np.float64) * ps
            keys[lay.name] = ("gamma", "beta")
        else:
            assert lay.weights is not None and lay.bias is not None
            assert lay.weight_scales is not None
            scales = np.asarray(lay.weight_scales, dtype=np.float64)
            g = lay.weights.astype(np.float64) * scales.reshape(
                (-1,) + (1,) * (lay.weights.ndim - 1)
            )
            g = g.transpose(1, 2, 3, 0) if lay.kind == "conv2d" else g.T  # TF layouts
            b = lay.bias.astype(np.float64) * lay.input_q.scale * scales
            keys[lay.name] = ("weights", "bias")
        variables += [tf.Variable(g, dtype=tf.float64), tf.Variable(b, dtype=tf.float64)]

    def deq(q: np.ndarray, qp: QParams) -> Any:
        return tf.constant((q.astype(np.float64) - qp.zero_point) * qp.scale)[None]

    per_layer: dict[str, dict[str, list[np.ndarray]]] = {
        lay.name: {k: [] for k in keys[lay.name]} for lay in players
    }
    for i in range(xq.shape[0]):
        with tf.GradientTape() as tape:
            h = deq(xq[i], model.input_q)
            k = 0
            for li, lay in enumerate(model.layers):
                q = outs[li][i]
                if lay.kind in ("conv2d", "dense", "batchnorm"):
                    w_t, b_t = variables[2 * k], variables[2 * k + 1]
                    k += 1
                    if lay.kind == "conv2d":
                        z = tf.nn.conv2d(h, w_t, strides=lay.stride, padding=lay.padding.upper())
                    elif lay.kind == "dense":
                        z = tf.matmul(tf.reshape(h, [1, -1]), w_t)
                    else:
                        mu_t, std_t = consts[lay.name]
                        z = w_t * (h - mu_t) / std_t
                    z = z + b_t
                    mask = ((q > lay.act_min) & (q < lay.act_max)).astype(np.float64)
                    # forward value: the int8 output; derivative: the clamp's STE mask
                    h = deq(q, lay.output_q) + tf.constant(mask)[None] * (z - tf.stop_gradient(z))
                elif lay.kind == "maxpool2d":
                    h = tf.nn.max_pool2d(
                        h, ksize=lay.pool, strides=lay.stride, padding=lay.padding.upper()
                    )
                else:
                    h = tf.reshape(h, [1, -1])
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.constant(labels[i : i + 1]), logits=tf.reshape(h, [1, -1])
            )
        grads = tape.gradient(loss, variables)
        for k, lay in enumerate(players):
            ga = np.asarray(grads[2 * k].numpy(), dtype=np.float64)
            if lay.kind == "conv2d":
                ga = ga.transpose(3, 0, 1, 2)
            elif lay.kind == "dense":
                ga = ga.T
            first, second = keys[lay.name]
            per_layer[lay.name][first].append(ga)
            per_layer[lay.name][second].append(np.asarray(grads[2 * k + 1].numpy(), np.float64))
    return {name: {key: np.stack(v) for key, v in d.items()} for name, d in per_layer.items()}

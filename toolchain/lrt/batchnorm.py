"""The paper's streaming batch norm in integers: state, forward tables, statistics (numpy).

Bit-exact twin of the firmware (lrt_net.c lrt_net_bn_refresh, lrt_train.c statistics
update); see lrt_net.h for the same text from the C side.

A batch-norm layer follows a max-pool (the paper: "streaming batch norm after each pool"),
is per channel, and keeps this state (int32 per channel unless noted):

* ``gamma``, ``beta``: the affine parameters, LSB 2**-12, 16-bit range [-8, 8) (the paper's
  bias format; they train every sample like biases).
* ``mean``: running mean of the input in input LSBs (x_int = x - zero point), Q16.
* ``msq``: running mean of x_int**2, Q8.
* ``pow_q30`` (one per layer): eta**step in Q30, eta = 1 - 1/B. 2**30 means no statistics
  yet; the exported models carry 0 (offline statistics, fully warmed up).

Statistics of one sample (P = H*W pixels, per channel): mu_i = round(sum x_int * 2**16 / P),
msq_i = round(sum x_int**2 * 2**8 / P); then mean <- round((mean (B-1) + mu_i) / B),
msq likewise, pow <- floor(pow (B-1) / B). Rounding is half away from zero throughout.

Forward tables (recomputed whenever the state changes): with c = 2**30 - pow,
mu = round(mean 2**30 / c) (Q16), var = round(msq 2**38 / c) - round(mu**2 / 2**16) (Q16
of x_int**2), or mu = 0, var = 1 (real) while c = 0. v = max(var, 0) + eps (eps = 2**-10
real), std_q = isqrt(v 2**28) = std in input LSBs times 2**22. The output gain per input
LSB, G = gamma_real / std_real * 2**(in_exp - out_exp) = |gamma| 2**(10 - out_exp) / std_q,
is written as w 2**f with w an int8 and f the largest exponent in [F_MIN, F_MAX] = [-20, -1] with
round(G 2**-f) >= 64 (so |w| in [64, 127] whenever the range allows; 128 moves to f + 1),
and the offset as an int32 bias in accumulator units,
bias = round((beta 2**(16 + PARAM_EXP - out_exp - f) - w mu) / 2**16), so that
G (x_int - mu) + beta = 2**f (x_int w + bias) up to rounding. The layer then computes
exactly a per-channel 1x1 depthwise convolution:

    y = clamp(MultiplyByQuantizedMultiplier((x - zp) * w + bias, 2**30, f + 1) + zp_out)

which is TFLite's DEPTHWISE_CONV_2D (per-channel int8 filter scale 2**(f + out_exp -
in_exp), int32 bias) and runs bit-exact in its reference kernels. Output: signed 8 bit in
[-2, 2), LSB 2**-6, zero point 0 (the paper's signed activation after batch norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrt import quant
from lrt.model import Layer

PARAM_EXP = quant.BIAS_EXP  # gamma / beta LSB
PARAM_MIN, PARAM_MAX = -(1 << 15), (1 << 15) - 1
OUT_EXP = -6  # signed 8 bit in [-2, 2)
OUT_ZERO_POINT = 0
MEAN_FRAC = 16
MSQ_FRAC = 8
POW_ONE = 1 << 30
EPS_EXP = -10  # variance floor eps = 2**-10 (real units)
STD_FRAC = 22  # std_q = std in input LSBs * 2**STD_FRAC
F_MIN, F_MAX = -20, -1
W_NORM = 64  # smallest normalized |w|
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def div_round(a: int, b: int) -> int:
    """a / b rounded half away from zero (b > 0), exact integers."""
    assert b > 0
    q = (abs(a) + b // 2) // b
    return -q if a < 0 else q


@dataclass
class BnTables:
    """Forward tables of one batch-norm layer (all per channel)."""

    w: np.ndarray  # int8 gain mantissa
    f: np.ndarray  # gain exponent: G = w * 2**f output LSBs per input LSB
    bias: np.ndarray  # int32, accumulator units
    mu: np.ndarray  # corrected mean, Q16 input LSBs (backward: gamma gradient)
    std_q: np.ndarray  # std in input LSBs * 2**STD_FRAC (backward: gamma gradient)

    @property
    def shift(self) -> np.ndarray:
        """TFLite shift of the multiplier 2**f (multiplier 2**30)."""
        return (self.f + 1).astype(np.int8)

    def weight_exps(self, in_exp: int, out_exp: int) -> np.ndarray:
        """Exponent of the per-channel DEPTHWISE_CONV_2D filter scale."""
        return self.f.astype(np.int64) + out_exp - in_exp


def eps_q16(in_exp: int) -> int:
    e = MEAN_FRAC + EPS_EXP - 2 * in_exp
    if e < 0:
        raise ValueError(f"batch norm input exponent {in_exp} too large")
    return 1 << e


def _gain(num: int, std_q: int, f: int) -> int:
    """round(num / (std_q * 2**f))."""
    if f >= 0:
        return div_round(num, std_q << f)
    return div_round(num << -f, std_q)


def _clamp(v: int, lo: int, hi: int) -> int:
    return min(max(v, lo), hi)


STATE_MAX = 1 << 24  # |x_int| <= 255: |mean| and msq stay below 2**24
VAR_MAX = 1 << 32


def check_exps(in_exp: int, out_exp: int) -> None:
    """The formats the integer code supports (its shifts stay inside int64)."""
    if not (-12 <= in_exp <= 3 and -14 <= out_exp <= 5):
        raise ValueError(
            f"batch norm with input exponent {in_exp} / output exponent {out_exp} is not "
            "supported (input -12..3, output -14..5)"
        )


def derive_channel(
    gamma: int, beta: int, mean: int, msq: int, pow_q30: int, in_exp: int, out_exp: int
) -> tuple[int, int, int, int, int]:
    """(w, f, bias, mu, std_q) of one channel; the definition the C code follows.

    The clamps of the state are never active for a state the statistics update produced;
    they keep a corrupt snapshot from overflowing (the C code has the same ones).
    """
    check_exps(in_exp, out_exp)
    gamma = _clamp(gamma, PARAM_MIN, PARAM_MAX)
    beta = _clamp(beta, PARAM_MIN, PARAM_MAX)
    c = POW_ONE - min(max(pow_q30, 0), POW_ONE)
    if c == 0:
        mu = 0
        var = 1 << (MEAN_FRAC - 2 * in_exp)
    else:
        mean = _clamp(mean, -STATE_MAX, STATE_MAX)
        msq = _clamp(msq, 0, STATE_MAX)
        mu = _clamp(div_round(mean << 30, c), -STATE_MAX, STATE_MAX)
        var = div_round(msq << (30 + MEAN_FRAC - MSQ_FRAC), c) - div_round(mu * mu, 1 << MEAN_FRAC)
    v = _clamp(var, 0, VAR_MAX) + eps_q16(in_exp)
    std_q = math.isqrt(v << (2 * STD_FRAC - MEAN_FRAC))
    num = abs(gamma) << (PARAM_EXP + STD_FRAC - out_exp)  # |gamma| 2**(10 - out_exp)
    f = F_MIN
    for cand in range(F_MAX, F_MIN - 1, -1):
        if _gain(num, std_q, cand) >= W_NORM:
            f = cand
            break
    w = _gain(num, std_q, f)
    if w > 127 and f < F_MAX:
        f += 1
        w = _gain(num, std_q, f)
    w = min(w, 127)
    if gamma < 0:
        w = -w
    # beta in accumulator units (Q16), minus w * mu
    b16 = (beta << (MEAN_FRAC + PARAM_EXP - out_exp - f)) - w * mu
    bias = _clamp(div_round(b16, 1 << MEAN_FRAC), INT32_MIN, INT32_MAX)
    return w, f, bias, mu, std_q


def derive(
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    msq: np.ndarray,
    pow_q30: int,
    in_exp: int,
    out_exp: int,
) -> BnTables:
    rows = [
        derive_channel(int(g), int(b), int(m), int(s), int(pow_q30), in_exp, out_exp)
        for g, b, m, s in zip(gamma, beta, mean, msq, strict=True)
    ]
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    return BnTables(
        w=np.array(cols[0], dtype=np.int8),
        f=np.array(cols[1], dtype=np.int64),
        bias=np.array(cols[2], dtype=np.int32),
        mu=np.array(cols[3], dtype=np.int64),
        std_q=np.array(cols[4], dtype=np.int64),
    )


def layer_tables(layer: Layer) -> BnTables:
    """Forward tables of an IR batch-norm layer (power-of-two input and output formats)."""
    gamma, beta, mean, msq = layer.bn_gamma, layer.bn_beta, layer.bn_mean, layer.bn_msq
    if gamma is None or beta is None or mean is None or msq is None or layer.bn_pow_q30 is None:
        raise ValueError(f"batch-norm layer {layer.name} has no state")
    if layer.input_q.exp is None or layer.output_q.exp is None:
        raise ValueError(f"batch-norm layer {layer.name} needs power-of-two scales")
    return derive(gamma, beta, mean, msq, layer.bn_pow_q30, layer.input_q.exp, layer.output_q.exp)


def sample_stats(x: np.ndarray, zero_point: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu_i Q16, msq_i Q8) per channel of one sample x [H, W, C] (or [P, C])."""
    xi = np.asarray(x, dtype=np.int64).reshape(-1, x.shape[-1]) - zero_point
    p = xi.shape[0]
    s1 = xi.sum(axis=0)
    s2 = (xi * xi).sum(axis=0)
    mu = np.array([div_round(int(v) << MEAN_FRAC, p) for v in s1], dtype=np.int64)
    msq = np.array([div_round(int(v) << MSQ_FRAC, p) for v in s2], dtype=np.int64)
    return mu, msq


def update_stats(
    mean: np.ndarray, msq: np.ndarray, pow_q30: int, x: np.ndarray, zero_point: int, batch: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """One streaming step (eta = 1 - 1/batch) with the sample x [H, W, C]."""
    mu_i, msq_i = sample_stats(x, zero_point)
    k = batch - 1
    new_mean = np.array(
        [div_round(int(m) * k + int(u), batch) for m, u in zip(mean, mu_i, strict=True)],
        dtype=np.int64,
    )
    new_msq = np.array(
        [div_round(int(m) * k + int(u), batch) for m, u in zip(msq, msq_i, strict=True)],
        dtype=np.int64,
    )
    return new_mean, new_msq, (int(pow_q30) * k) // batch


def population_stats(x: np.ndarray, zero_point: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean Q16, msq Q8) over every pixel of a batch x [N, H, W, C] (export statistics)."""
    xi = np.asarray(x, dtype=np.int64).reshape(-1, x.shape[-1]) - zero_point
    n = xi.shape[0]
    s1 = xi.sum(axis=0)
    s2 = (xi * xi).sum(axis=0)
    mean = np.array([div_round(int(v) << MEAN_FRAC, n) for v in s1], dtype=np.int64)
    msq = np.array([div_round(int(v) << MSQ_FRAC, n) for v in s2], dtype=np.int64)
    return mean, msq


def snapshot_words(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, msq: np.ndarray, pow_q30: int
) -> np.ndarray:
    """The layer's state as stored in the weight blob: int32 LE gamma[C], beta[C],
    mean[C], msq[C], then pow_q30."""
    parts = [np.asarray(a, dtype=np.int64) for a in (gamma, beta, mean, msq)]
    return np.concatenate([*parts, np.array([pow_q30], dtype=np.int64)]).astype("<i4")


def snapshot_size(channels: int) -> int:
    return 4 * (4 * channels + 1)


# ---- .tflite metadata ---------------------------------------------------------------------
# A .tflite holds the forward tables only (DEPTHWISE_CONV_2D); the state that produced them
# (what the firmware trains and keeps updating) travels in a metadata entry, one record per
# batch-norm layer in graph order. tflite_import checks that the state derives to the graph.
METADATA_NAME = "lrt_batchnorm"


def metadata_bytes(layers: list[Layer]) -> bytes:
    import json

    records = []
    for lay in layers:
        if lay.kind != "batchnorm":
            continue
        assert lay.bn_gamma is not None and lay.bn_beta is not None
        assert lay.bn_mean is not None and lay.bn_msq is not None
        records.append(
            {
                "name": lay.name,
                "gamma": [int(v) for v in lay.bn_gamma],
                "beta": [int(v) for v in lay.bn_beta],
                "mean": [int(v) for v in lay.bn_mean],
                "msq": [int(v) for v in lay.bn_msq],
                "pow_q30": int(lay.bn_pow_q30 or 0),
            }
        )
    return json.dumps({"version": 1, "layers": records}, sort_keys=True).encode()


def parse_metadata(data: bytes) -> list[dict[str, object]]:
    """The records of metadata_bytes; ValueError if malformed."""
    import json

    try:
        doc = json.loads(bytes(data).decode())
        records = doc["layers"]
        if doc.get("version") != 1 or not isinstance(records, list):
            raise ValueError("unknown version")
        for r in records:
            n = len(r["gamma"])
            if not all(len(r[k]) == n for k in ("beta", "mean", "msq")):
                raise ValueError("state arrays of different lengths")
            int(r["pow_q30"])
    except (KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed {METADATA_NAME} metadata ({exc})") from exc
    return list(records)


def add_metadata(model_t: object, layers: list[Layer]) -> None:
    """Attach the batch-norm state to a schema ModelT (no-op without batch-norm layers)."""
    from lrt.tflite_import import add_metadata_entry

    if any(lay.kind == "batchnorm" for lay in layers):
        add_metadata_entry(model_t, METADATA_NAME, metadata_bytes(layers))

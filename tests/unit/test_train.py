"""Presets, layer plans and the training-RAM estimate of lrt.train (no TensorFlow needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrt import presets, quant, train


def _he_alpha_exp(fan_in: int, relu: bool) -> int:
    # The paper: alpha = 2**floor(log2(sqrt(3 g / fan_in))), g = 2 with ReLU.
    g = 2 if relu else 1
    e = 0
    while 2.0 ** (e + 1) <= math.sqrt(3 * g / fan_in):
        e += 1
    while 2.0**e > math.sqrt(3 * g / fan_in):
        e -= 1
    return e


def test_paper_preset_is_the_papers_network() -> None:
    plans = presets.plan_layers(presets.PRESETS["paper"])
    kinds = [p.kind for p in plans]
    assert kinds == [
        "conv2d", "conv2d", "maxpool2d", "conv2d", "conv2d", "maxpool2d",
        "flatten", "dense", "dense",
    ]  # fmt: skip
    convs = [p for p in plans if p.kind == "conv2d"]
    assert [p.out_shape for p in convs] == [(26, 26, 128), (24, 24, 128), (10, 10, 128),
                                            (8, 8, 128)]  # fmt: skip
    dense = [p for p in plans if p.kind == "dense"]
    assert [(p.fan_in, p.out_shape[0]) for p in dense] == [(2048, 512), (512, 10)]
    assert [p.relu for p in plans if p.kind in ("conv2d", "dense")] == [True] * 5 + [False]


def test_mcu_preset_shapes() -> None:
    plans = presets.plan_layers(presets.PRESETS["mcu"])
    shapes = [p.out_shape for p in plans]
    assert shapes == [
        (26, 26, 8), (24, 24, 8), (12, 12, 8), (10, 10, 16), (8, 8, 16), (4, 4, 16),
        (256,), (64,), (10,),
    ]  # fmt: skip
    assert presets.DEFAULT_PRESET == "mcu"


@pytest.mark.parametrize("preset", ["mcu", "paper"])
def test_power_of_two_formats(preset: str) -> None:
    for p in presets.plan_layers(presets.PRESETS[preset]):
        if not p.has_weights:
            assert p.out_zero_point == quant.ACT_ZERO_POINT
            continue
        assert p.alpha_exp == _he_alpha_exp(p.fan_in, p.relu)
        assert p.weight_exp == p.alpha_exp - 7
        # The int32 bias (accumulator LSB) must hold the 16-bit bias (LSB 2**-12) exactly.
        assert p.acc_exp <= quant.BIAS_EXP
        if p.relu:
            assert (p.out_exp, p.out_zero_point, p.out_int_range) == (-7, -128, (0, 255))
        else:
            assert (p.out_exp, p.out_zero_point, p.out_int_range) == (-4, 0, (-128, 127))


def test_unknown_preset_and_bad_spec() -> None:
    with pytest.raises(ValueError, match="unknown preset 'nano'"):
        presets.get_spec("nano")
    with pytest.raises(ValueError, match="pool_after"):
        presets.NetSpec("x", (8,), (2,), ())
    with pytest.raises(ValueError, match="smaller than the kernel"):
        presets.plan_layers(presets.NetSpec("x", (8,) * 20, (), ()))


@pytest.mark.parametrize(
    ("x", "y", "needle"),
    [
        (np.zeros((4, 28, 28), np.float32), np.zeros(4), "shape"),
        (np.zeros((4, 28, 28, 1), np.float32), np.zeros(3), "4 images but 3 labels"),
        (np.full((4, 28, 28, 1), 255.0, np.float32), np.zeros(4), r"\[0, 1\]"),
        (np.zeros((4, 28, 28, 1), np.float32), np.full(4, 10), "labels"),
    ],
)
def test_train_model_rejects_bad_data(x: np.ndarray, y: np.ndarray, needle: str) -> None:
    good_x, good_y = np.zeros((2, 28, 28, 1), np.float32), np.zeros(2)
    with pytest.raises(ValueError, match=needle):
        train.train_model("mcu", x, y, good_x, good_y, good_x, good_y, progress=False)

"""The network presets (`mcu`, `paper`, `tiny`, `mcu-bn`, `paper-bn`) and their layer plan:
shapes, fan-ins and the paper's power-of-two formats of every layer, without TensorFlow.
The one table of preset names (config.py validates against it)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from lrt import batchnorm, quant

WEIGHT_BITS = 8
ACT_LEVELS = 256  # activations: int8 with zero point -128 -> 0 .. 255 steps of 2**ACT_EXP
LOGIT_ZERO_POINT = 0
INPUT_EXP = quant.ACT_EXP
INPUT_ZERO_POINT = quant.ACT_ZERO_POINT


# ---- network specification --------------------------------------------------------------


@dataclass(frozen=True)
class NetSpec:
    """A CNN of 3x3 valid convolutions, 2x2 max-pools and dense layers (paper topology).

    ``dense`` lists the hidden dense widths; the classifier (``num_classes`` logits) is
    appended, and the first dense layer's input is the flattened last feature map.
    """

    name: str
    convs: tuple[int, ...]
    pool_after: tuple[int, ...]  # 1-based indices of the convs followed by a 2x2 max-pool
    dense: tuple[int, ...]
    num_classes: int = 10
    input_shape: tuple[int, int, int] = (28, 28, 1)
    kernel: int = 3
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 5e-3
    # the paper's streaming batch norm after each pool (lrt.batchnorm); eta = 1 - 1/bn_batch
    # in the offline QAT (per mini-batch), the firmware uses the build's batch_conv
    streaming_bn: bool = False
    bn_batch: int = 10

    def __post_init__(self) -> None:
        bad = [i for i in self.pool_after if not 1 <= i <= len(self.convs)]
        if bad:
            raise ValueError(f"{self.name}: pool_after {bad} not in 1..{len(self.convs)}")
        if self.streaming_bn and not self.pool_after:
            raise ValueError(f"{self.name}: streaming batch norm follows the pools; there are none")
        if self.bn_batch < 1:
            raise ValueError(f"{self.name}: bn_batch must be >= 1")


PRESETS: dict[str, NetSpec] = {
    # Gural et al. 2020: 4 x conv 3x3 (128), pool after conv 2 and 4, dense 2048 -> 512 -> 10.
    "paper": NetSpec("paper", (128, 128, 128, 128), (2, 4), (512,), epochs=4, learning_rate=2e-3),
    # Same topology, narrow enough to train on a Cortex-M4 in < 64 KB of RAM (the budget of
    # its lrt-maxnorm firmware: about 51 KB at rank 4).
    "mcu": NetSpec("mcu", (8, 8, 16, 16), (2, 4), (64,)),
    # Same topology again for the smallest parts (Cortex-M3/M0+ with 64 KB RAM and a few
    # KB of NVM for two weight sets): about 5.8 KB of weights.
    "tiny": NetSpec("tiny", (4, 4, 8, 8), (2, 4), (32,)),
    # The paper's streaming batch norm after each pool (mcu = the ablation without it).
    "mcu-bn": NetSpec("mcu-bn", (8, 8, 16, 16), (2, 4), (64,), streaming_bn=True),
    "paper-bn": NetSpec(
        "paper-bn",
        (128, 128, 128, 128),
        (2, 4),
        (512,),
        epochs=4,
        learning_rate=2e-3,
        streaming_bn=True,
    ),
}
DEFAULT_PRESET = "mcu"


@dataclass(frozen=True)
class LayerPlan:
    """Shapes and formats of one layer, derived from a NetSpec (no TensorFlow needed)."""

    kind: str  # conv2d | maxpool2d | flatten | dense
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    relu: bool = False
    fan_in: int = 0
    alpha_exp: int = 0
    in_exp: int = quant.ACT_EXP
    out_exp: int = quant.ACT_EXP
    kernel: int = 0  # conv kernel size
    in_zero_point: int = quant.ACT_ZERO_POINT

    @property
    def weight_exp(self) -> int:
        return self.alpha_exp + quant.WEIGHT_EXP

    @property
    def acc_exp(self) -> int:
        return self.in_exp + self.weight_exp

    @property
    def has_weights(self) -> bool:
        return self.kind in ("conv2d", "dense")

    @property
    def out_zero_point(self) -> int:
        if self.kind == "batchnorm":
            return batchnorm.OUT_ZERO_POINT
        if self.kind in ("maxpool2d", "flatten"):
            return self.in_zero_point
        return quant.ACT_ZERO_POINT if self.relu else LOGIT_ZERO_POINT

    @property
    def out_int_range(self) -> tuple[int, int]:
        """Range of (q - zero_point) of the output: [0, 255] after ReLU, [-128, 127] logits."""
        if (self.kind == "dense" and not self.relu) or self.kind == "batchnorm":
            return -128, 127
        return 0, ACT_LEVELS - 1


def get_spec(preset: str | NetSpec) -> NetSpec:
    if isinstance(preset, NetSpec):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


def spec_for_data(
    preset: str | NetSpec, input_shape: tuple[int, int, int], num_classes: int
) -> NetSpec:
    """``preset``'s topology for images of ``input_shape`` and ``num_classes`` classes (a
    dataset file's); ValueError where the images are too small for its convs and pools."""
    spec = get_spec(preset)
    if (tuple(input_shape), num_classes) == (spec.input_shape, spec.num_classes):
        return spec
    h, w, c = input_shape
    spec = replace(spec, input_shape=(int(h), int(w), int(c)), num_classes=num_classes)
    plan_layers(spec)  # refuses a shape the topology cannot take
    return spec


def plan_layers(spec: NetSpec) -> list[LayerPlan]:
    """The layer sequence of ``spec`` with shapes, fan-ins and power-of-two exponents."""
    plans: list[LayerPlan] = []
    h, w, c = spec.input_shape
    k = spec.kernel
    # format of the activation the next layer reads: ReLU outputs, or batch-norm outputs
    a_exp, a_zp = quant.ACT_EXP, quant.ACT_ZERO_POINT
    for i, filters in enumerate(spec.convs, start=1):
        if h < k or w < k:
            raise ValueError(f"{spec.name}: conv{i} input {h}x{w} is smaller than the kernel")
        fan_in = k * k * c
        plans.append(
            LayerPlan(
                "conv2d",
                f"conv{i}",
                (h, w, c),
                (h - k + 1, w - k + 1, filters),
                True,
                fan_in,
                quant.layer_alpha_exp(fan_in, True),
                in_exp=a_exp,
                kernel=k,
                in_zero_point=a_zp,
            )
        )
        h, w, c = h - k + 1, w - k + 1, filters
        a_exp, a_zp = quant.ACT_EXP, quant.ACT_ZERO_POINT
        if i in spec.pool_after:
            if h < 2 or w < 2:
                raise ValueError(f"{spec.name}: pool{i} input {h}x{w} is smaller than 2x2")
            plans.append(LayerPlan("maxpool2d", f"pool{i}", (h, w, c), (h // 2, w // 2, c)))
            h, w = h // 2, w // 2
            if spec.streaming_bn:
                plans.append(
                    LayerPlan(
                        "batchnorm", f"bn{i}", (h, w, c), (h, w, c), out_exp=batchnorm.OUT_EXP
                    )
                )
                a_exp, a_zp = batchnorm.OUT_EXP, batchnorm.OUT_ZERO_POINT
    n = h * w * c
    plans.append(
        LayerPlan(
            "flatten", "flatten", (h, w, c), (n,), in_exp=a_exp, out_exp=a_exp, in_zero_point=a_zp
        )
    )
    widths = [*spec.dense, spec.num_classes]
    for j, units in enumerate(widths, start=1):
        last = j == len(widths)
        plans.append(
            LayerPlan(
                "dense",
                f"dense{j}",
                (n,),
                (units,),
                not last,
                n,
                quant.layer_alpha_exp(n, not last),
                in_exp=a_exp,
                out_exp=quant.LOGIT_EXP if last else quant.ACT_EXP,
                in_zero_point=a_zp,
            )
        )
        n = units
        a_exp, a_zp = quant.ACT_EXP, quant.ACT_ZERO_POINT
    return plans

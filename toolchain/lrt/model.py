"""Framework-free intermediate representation (IR) of a quantized CNN.

The IR is what every later stage reads: codegen renders C from it, the TFLite
importer and the Keras trainer both produce it, the NVM tools compare weights
against it. It follows TFLite's int8 arithmetic exactly so imported models with
arbitrary scales run bit-exact; models the toolchain trains itself additionally
carry the paper's power-of-two exponents (``*_exp`` fields), which the on-device
training code needs (every rescale is then a shift).

Layouts (same as TFLite): activations NHWC without N; conv weights
[c_out, kh, kw, c_in] (OHWI); dense weights [n_out, n_in].

Round trip: ``save(dir)`` writes ``model.json`` (structure + quantization) and
``model.npz`` (integer arrays); ``load(dir)`` reads them back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

LayerKind = Literal["conv2d", "maxpool2d", "dense", "flatten", "batchnorm"]
LAYER_KINDS: tuple[str, ...] = ("conv2d", "maxpool2d", "dense", "flatten", "batchnorm")
IR_VERSION = 1


@dataclass(frozen=True)
class QParams:
    """Affine int8 quantization of one activation tensor: real = scale * (q - zero_point).

    ``exp`` is set when ``scale == 2**exp`` (the toolchain's own models).
    """

    scale: float
    zero_point: int
    exp: int | None = None


@dataclass
class Layer:
    """One layer of the network.

    For conv2d/dense: ``weights`` int8, ``bias`` int32 at scale input.scale*weight_scale[c]
    (TFLite convention), ``weight_scales`` float per output channel (length 1 = per tensor),
    ``out_multiplier``/``out_shift`` the TFLite fixed-point rescale per output channel
    (see quant.quantize_multiplier), ``act_min``/``act_max`` the int8 clamp that also
    implements a fused ReLU/ReLU6.
    """

    kind: LayerKind
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    input_q: QParams
    output_q: QParams
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight_scales: np.ndarray | None = None
    out_multiplier: np.ndarray | None = None
    out_shift: np.ndarray | None = None
    act_min: int = -128
    act_max: int = 127
    relu: bool = False
    stride: tuple[int, int] = (1, 1)
    padding: Literal["valid", "same"] = "valid"
    pool: tuple[int, int] = (2, 2)
    # Power-of-two formats (None for imported models with arbitrary scales).
    weight_exp: int | None = None  # weight real = q * 2**weight_exp (includes the layer's alpha)
    bias_exp: int | None = None  # bias storage LSB exponent (paper: 16 bit in [-8, 8) -> -12)
    trainable: bool = True
    # streaming batch norm state (kind "batchnorm" only)
    bn_gamma: np.ndarray | None = None
    bn_beta: np.ndarray | None = None
    bn_mean: np.ndarray | None = None
    bn_msq: np.ndarray | None = None
    bn_pow_q30: int | None = None

    @property
    def has_weights(self) -> bool:
        return self.kind in ("conv2d", "dense")

    @property
    def n_weights(self) -> int:
        """Weight cells (0 for layers without weights)."""
        return int(self.weights.size) if self.weights is not None else 0

    @property
    def n_bias(self) -> int:
        return int(self.bias.size) if self.bias is not None else 0

    @property
    def acc_exp(self) -> int | None:
        """Exponent of the int32 accumulator (input LSB x weight LSB), power-of-two models only."""
        if self.input_q.exp is None or self.weight_exp is None:
            return None
        return self.input_q.exp + self.weight_exp

    def weight_matrix_shape(self) -> tuple[int, int]:
        """(n, m) of the matrix the LRT accumulator factorises: c_out x (kh*kw*c_in) or out x in."""
        assert self.weights is not None
        return int(self.weights.shape[0]), int(np.prod(self.weights.shape[1:]))


# Model.meta's held-out int8 accuracies (lrt.heldout measures them; the write policy's
# reference error; carried in lrt's .tflite metadata)
META_TEST_ACCURACY = "int8_accuracy"  # on the clean test split
META_FIELD_ACCURACY = "int8_field_accuracy"  # on test images deformed like the field


@dataclass
class Model:
    name: str
    input_shape: tuple[int, ...]
    input_q: QParams
    num_classes: int
    layers: list[Layer]
    preset: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def output_q(self) -> QParams:
        return self.layers[-1].output_q

    @property
    def power_of_two(self) -> bool:
        """True when every scale is a power of two, i.e. the model can be trained on device."""
        if self.input_q.exp is None:
            return False
        return all(
            (not layer.has_weights) or (layer.weight_exp is not None and layer.bias_exp is not None)
            for layer in self.layers
        ) and all(
            layer.output_q.exp is not None
            and (layer.kind != "batchnorm" or layer.bn_gamma is not None)
            for layer in self.layers
        )

    def weight_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.has_weights]

    def num_params(self) -> int:
        return sum(lay.n_weights + lay.n_bias for lay in self.weight_layers())

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float images in [0, 1] (any shape ending in input_shape) -> int8 input tensor."""
        q = np.round(x / self.input_q.scale) + self.input_q.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def fingerprint(self) -> str:
        """Stable hash of structure + integer contents (used to check firmware/model pairing)."""
        h = hashlib.sha256(json.dumps(self._structure(), sort_keys=True).encode())
        for layer in self.weight_layers():
            assert layer.weights is not None and layer.bias is not None
            h.update(np.ascontiguousarray(layer.weights).tobytes())
            h.update(np.ascontiguousarray(layer.bias).astype("<i4").tobytes())
        for layer in self.layers:
            if layer.kind == "batchnorm":
                for arr in (layer.bn_gamma, layer.bn_beta, layer.bn_mean, layer.bn_msq):
                    assert arr is not None
                    h.update(np.ascontiguousarray(arr).astype("<i4").tobytes())
        return h.hexdigest()[:16]

    # ---- persistence -------------------------------------------------------------------
    _ARRAYS = (
        "weights", "bias", "weight_scales", "out_multiplier", "out_shift",
        "bn_gamma", "bn_beta", "bn_mean", "bn_msq",
    )

    def _structure(self) -> dict[str, Any]:
        layers = []
        for layer in self.layers:
            d = {k: v for k, v in asdict(layer).items() if k not in self._ARRAYS}
            layers.append(d)
        return {
            "ir_version": IR_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "input_q": asdict(self.input_q),
            "num_classes": self.num_classes,
            "preset": self.preset,
            "meta": self.meta,
            "layers": layers,
        }

    def save(self, directory: Path | str) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.json").write_text(
            json.dumps(self._structure(), indent=1, sort_keys=True) + "\n"
        )
        arrays: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            for key in self._ARRAYS:
                value = getattr(layer, key)
                if value is not None:
                    arrays[f"{i}.{key}"] = value
        with open(directory / "model.npz", "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, directory: Path | str) -> Model:
        directory = Path(directory)
        s = json.loads((directory / "model.json").read_text())
        if s.get("ir_version") != IR_VERSION:
            raise ValueError(
                f"{directory}/model.json: IR version {s.get('ir_version')}, expected {IR_VERSION}"
            )
        with np.load(directory / "model.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        layers = []
        for i, d in enumerate(s["layers"]):
            d = dict(d)
            d["input_q"] = QParams(**d["input_q"])
            d["output_q"] = QParams(**d["output_q"])
            for key in ("in_shape", "out_shape", "stride", "pool"):
                d[key] = tuple(d[key])
            for key in cls._ARRAYS:
                d[key] = arrays.get(f"{i}.{key}")
            layers.append(Layer(**d))
        return cls(
            name=s["name"],
            input_shape=tuple(s["input_shape"]),
            input_q=QParams(**s["input_q"]),
            num_classes=s["num_classes"],
            layers=layers,
            preset=s["preset"],
            meta=s["meta"],
        )

"""Offline training of a preset: quantization-aware training (:mod:`lrt.qat`) on the given
data, then the integer IR and the .tflite (:mod:`lrt.export`), with the accuracies of both.
TensorFlow comes from :mod:`lrt.tfkeras` (the only module importing it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrt import console, heldout
from lrt.export import export_ir, export_tflite
from lrt.model import META_TEST_ACCURACY, Model
from lrt.presets import NetSpec, get_spec
from lrt.qat import build_qat_model, sync_qat_batchnorm
from lrt.tfkeras import tf_keras

# ---- training ------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: Model
    tflite: bytes
    float_accuracy: float  # Keras QAT model on the test split
    int8_accuracy: float  # integer IR (lrt.reference, TFLite arithmetic) on the test split
    history: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    keras_model: Any = field(default=None, repr=False)  # the trained QAT model


def _check_data(spec: NetSpec, name: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != spec.input_shape:
        raise ValueError(f"{name}: images of shape {x.shape}, expected N x {spec.input_shape}")
    if len(y) != len(x):
        raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
    if len(x) and (float(np.min(x)) < 0.0 or float(np.max(x)) > 1.0):
        raise ValueError(f"{name}: pixel values must lie in [0, 1]")
    if len(y) and (int(np.min(y)) < 0 or int(np.max(y)) >= spec.num_classes):
        raise ValueError(f"{name}: labels must lie in 0..{spec.num_classes - 1}")


def seed_everything(seed: int) -> None:
    tf, keras = tf_keras()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_model(
    preset: str | NetSpec,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    epochs: int | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """QAT-train ``preset`` on the given data and export the IR and the .tflite.

    ``max_steps`` caps the number of optimizer steps (one epoch over the first
    max_steps * batch_size training samples), for quick tests.
    """
    spec = get_spec(preset)
    x_train, x_val, x_test = (np.asarray(a, dtype=np.float32) for a in (x_train, x_val, x_test))
    y_train, y_val, y_test = (np.asarray(a).astype(np.int64) for a in (y_train, y_val, y_test))
    for name, x, y in (
        ("train", x_train, y_train),
        ("val", x_val, y_val),
        ("test", x_test, y_test),
    ):
        _check_data(spec, name, x, y)
    if len(x_train) == 0:
        raise ValueError("train: no samples")
    n_epochs = spec.epochs if epochs is None else epochs
    if n_epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {n_epochs}")
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        x_train = x_train[: max_steps * spec.batch_size]
        y_train = y_train[: max_steps * spec.batch_size]
        n_epochs = 1

    _, keras = tf_keras()
    seed_everything(seed)
    qat = build_qat_model(spec, seed)
    qat.compile(
        optimizer=keras.optimizers.Adam(spec.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    line = console.Progress("train", enabled=progress)
    steps = -(-len(x_train) // spec.batch_size)

    callback_base: Any = keras.callbacks.Callback

    class _OneLine(callback_base):
        """Keras's progress as one redrawn line (Keras's own bar is off)."""

        epoch = 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            loss = (logs or {}).get("loss", float("nan"))
            line.update(
                f"{spec.name}: epoch {self.epoch + 1}/{n_epochs}, step {batch + 1}/{steps}, "
                f"loss {loss:.3f}"
            )

    t0 = time.perf_counter()
    history: dict[str, Any] = {}
    if n_epochs > 0:  # 0: the paper's from-scratch ablations start from the initial weights
        fit = qat.fit(
            x_train,
            y_train,
            batch_size=spec.batch_size,
            epochs=n_epochs,
            shuffle=True,
            validation_data=(x_val, y_val) if len(x_val) else None,
            verbose=0,
            callbacks=[_OneLine()],
        )
        history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    train_seconds = time.perf_counter() - t0

    meta: dict[str, Any] = {"seed": seed, "epochs": n_epochs, "max_steps": max_steps,
                            "trained_with": training_stack()}  # fmt: skip
    ir = export_ir(qat, spec, meta, stats_x=x_train if spec.streaming_bn else None)
    sync_qat_batchnorm(qat, ir)  # Keras evaluates with the exported statistics
    float_acc = heldout.accuracy(qat.predict(x_test, batch_size=256, verbose=0), y_test)
    ir.meta["float_accuracy"] = float_acc
    ir.meta.update(heldout.measure(ir, x_test, y_test, seed))
    int8_acc = ir.meta[META_TEST_ACCURACY]
    tflite = export_tflite(ir, x_train[:16])
    line.done(
        f"{spec.name}: {n_epochs} epoch{'s' if n_epochs != 1 else ''}, test accuracy float "
        f"{float_acc:.1%} / int8 {int8_acc:.1%} ({line.seconds():.0f} s)"
    )
    history["train_seconds"] = train_seconds
    return TrainResult(ir, tflite, float_acc, int8_acc, history, train_seconds, qat)


# the packages whose arithmetic shapes a trained model (the same seed on other versions can
# give other weights): recorded with the model so two builds that differ can be told apart
TRAINING_STACK = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "scipy")


def training_stack() -> dict[str, str]:
    """Python's and TRAINING_STACK's installed versions (packages not installed left out)."""
    import platform
    from importlib import metadata

    stack = {"python": platform.python_version()}
    for name in TRAINING_STACK:
        try:
            stack[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return stack


def save_artifacts(result: TrainResult, out_dir: Path | str) -> None:
    """out_dir/model.tflite and the IR in out_dir/ir (model.json + model.npz)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(result.tflite)
    result.model.save(out / "ir")

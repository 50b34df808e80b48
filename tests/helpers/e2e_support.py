"""Trained models and firmware builds shared by the end-to-end tests (built once, cached).

The cache key covers every source that affects the artefact, so editing the trainer, the
templates or the C library rebuilds; stale entries are harmless.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.buildcache import ROOT, built, cache_lock, digest, trained_model

# gate_rate for parity tests of short streams: the error gate counts every misprediction, so
# the default policy's field-error reference (which lets a calm stream write nothing) does not
# leave a 150-200-sample run without a single flush to compare
PLAIN_ERROR_COUNT = 0.0

__all__ = ["built", "paper_two_steps", "plain_trained", "report", "tflite_logits",
           "trained_model"]
PAPER_TEST_SAMPLES = 60  # held-out digits the two-step `paper` model is scored on


def report(build_dir: Path) -> dict[str, object]:
    return json.loads((build_dir / "report.json").read_text())


def tflite_logits(tflite: Path, x: np.ndarray) -> np.ndarray:
    """int8 logits of the TFLite reference interpreter (BUILTIN_REF), one sample at a time."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_path=str(tflite), experimental_op_resolver_type=OpResolverType.BUILTIN_REF
    )
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    res = []
    for row in x:
        interp.set_tensor(inp["index"], row[None])
        interp.invoke()
        res.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(res)


PLAIN_TRAIN_SOURCES = [
    "toolchain/lrt/train.py",
    "toolchain/lrt/presets.py",
    "toolchain/lrt/qat.py",
    "toolchain/lrt/export.py",
    "toolchain/lrt/tfkeras.py",
    "toolchain/lrt/batchnorm.py",
    "toolchain/lrt/quant.py",
    "toolchain/lrt/model.py",
    "toolchain/lrt/data/datasets.py",
    "toolchain/lrt/data/mnist.py",
]


def paper_two_steps() -> Path:
    """The `paper` preset trained for two steps (its arithmetic matters here, not its
    accuracy), saved with save_artifacts; one cache entry for every test and worker, written
    once and never removed (a test that deleted and rewrote it under another's feet made that
    one read a vanished IR)."""
    with cache_lock("paper-2steps-v2") as path:
        model = path / "model"
        if not (model / "model.tflite").is_file():
            from lrt import train
            from lrt.data import load_dataset

            ds = load_dataset("mnist5k")
            n = PAPER_TEST_SAMPLES
            res = train.train_model(
                "paper", ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test[:n],
                ds.y_test[:n], max_steps=2, progress=False,
            )  # fmt: skip
            tmp = path / "model.tmp"
            train.save_artifacts(res, tmp)
            tmp.rename(model)
        return model


def plain_trained(preset: str = "mcu") -> Path:
    """lrt.train.train_model on the mnist5k splits (no augmentation, seed 0), saved with
    save_artifacts plus result.json (accuracies, seconds); cached for every test and worker."""
    key = digest([ROOT / p for p in PLAIN_TRAIN_SOURCES])
    with cache_lock(f"train-{preset}-{key}") as path:
        done = path / "result.json"
        if not done.exists():
            from lrt import train
            from lrt.data import load_dataset

            data = load_dataset("mnist5k", seed=0)
            res = train.train_model(
                preset, data.x_train, data.y_train, data.x_val, data.y_val,
                data.x_test, data.y_test, seed=0, progress=False,
            )  # fmt: skip
            train.save_artifacts(res, path)
            info = {
                "float_accuracy": res.float_accuracy,
                "int8_accuracy": res.int8_accuracy,
                "train_seconds": res.train_seconds,
            }
            done.write_text(json.dumps(info))
        return path

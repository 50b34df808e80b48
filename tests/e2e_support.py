"""Trained models and firmware builds shared by the end-to-end tests (built once, cached).

The cache key covers every source that affects the artefact, so editing the trainer, the
templates or the C library rebuilds; stale entries are harmless.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from conftest import ROOT, cache_lock
from lrt import pipeline

TRAIN_SOURCES = [
    "toolchain/lrt/train.py",
    "toolchain/lrt/quant.py",
    "toolchain/lrt/model.py",
    "toolchain/lrt/data/datasets.py",
    "toolchain/lrt/data/mnist.py",
    "toolchain/lrt/data/augment.py",
    "toolchain/lrt/config.py",
]
FIRMWARE_GLOBS = [
    "firmware_templates/**/*",
    "toolchain/lrt/codegen.py",
    "toolchain/lrt/build.py",
    "toolchain/lrt/budget.py",
    "toolchain/lrt/boards.py",
    "boards/*.toml",
]


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        if p.is_file():
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _train_key() -> str:
    return _digest([ROOT / p for p in TRAIN_SOURCES])


def _firmware_key() -> str:
    files = [p for g in FIRMWARE_GLOBS for p in ROOT.glob(g)]
    return _digest(files)


def trained_model(preset: str = "mcu", seed: int = 0) -> Path:
    """Directory with ir/, model.tflite and report.json of an offline-trained model."""
    name = f"model-{preset}-s{seed}-{_train_key()}"
    with cache_lock(name) as path:
        if not (path / "report.json").is_file():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            pipeline.build(
                "host", tmp, preset=preset, scheme="inference", seed=seed, progress=False
            )
            tmp.rename(path)
        return path


def built(scheme: str, board: str = "host", preset: str = "mcu", **overrides: object) -> Path:
    """An lrt-build directory of the cached trained model for (scheme, board, overrides)."""
    extra = "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    name = f"build-{preset}-{scheme}-{board}-{extra}-{_train_key()}-{_firmware_key()}"
    model = trained_model(preset)
    with cache_lock(name) as path:
        if not (path / "report.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            pipeline.build(
                board,
                path,
                scheme=scheme,
                ir_dir=model,
                progress=False,
                **overrides,  # type: ignore[arg-type]
            )
        return path


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
    "toolchain/lrt/batchnorm.py",
    "toolchain/lrt/quant.py",
    "toolchain/lrt/model.py",
    "toolchain/lrt/data/datasets.py",
    "toolchain/lrt/data/mnist.py",
]


def plain_trained(preset: str = "mcu") -> Path:
    """lrt.train.train_model on the mnist5k splits (no augmentation, seed 0), saved with
    save_artifacts plus result.json (accuracies, seconds); cached for every test and worker."""
    key = _digest([ROOT / p for p in PLAIN_TRAIN_SOURCES])
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

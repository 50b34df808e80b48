"""Trained models and firmware builds shared by the tests and the benchmarks: built once,
reused while the sources they come from are unchanged.

Entries live under ``build/test-cache`` of the source tree, named by a hash of every source
that affects them (the trainer for models; templates, C library, code generator, budget and
boards for builds), so an edit rebuilds and stale entries are harmless. A lock file per
entry lets parallel test workers and benchmark runs share it.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / "build" / "test-cache"

TRAIN_SOURCES = [
    "toolchain/lrt/train.py",
    "toolchain/lrt/presets.py",
    "toolchain/lrt/qat.py",
    "toolchain/lrt/export.py",
    "toolchain/lrt/tfkeras.py",
    "toolchain/lrt/tflite_import.py",
    "toolchain/lrt/reference.py",
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
    "toolchain/lrt/pipeline.py",  # what report.json records
    "toolchain/lrt/policy.py",  # the write policy compiled into the firmware
    "toolchain/lrt/build.py",
    "toolchain/lrt/bsp.py",
    "toolchain/lrt/cflags.py",
    "toolchain/lrt/templates.py",
    "toolchain/lrt/budget.py",
    "toolchain/lrt/boards.py",
    "boards/*.toml",
]


def digest(paths: list[Path]) -> str:
    """Short hash of the files' names (relative to the tree) and contents."""
    h = hashlib.sha256()
    for p in sorted(paths):
        if p.is_file():
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def train_key() -> str:
    return digest([ROOT / p for p in TRAIN_SOURCES])


def firmware_key() -> str:
    return digest([p for g in FIRMWARE_GLOBS for p in ROOT.glob(g)])


@contextmanager
def cache_lock(name: str) -> Iterator[Path]:
    """The entry ``name`` under the cache, held under an exclusive lock while in use."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / name
    with open(CACHE_DIR / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def trained_model(preset: str = "mcu", seed: int = 0) -> Path:
    """Directory with ir/, model.tflite and report.json of an offline-trained model."""
    from lrt import pipeline

    name = f"model-{preset}-s{seed}-{train_key()}"
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
    from lrt import pipeline

    extra = "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    name = f"build-{preset}-{scheme}-{board}-{extra}-{train_key()}-{firmware_key()}"
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

"""The `paper` preset (4 x 128-channel conv, dense 2048-512-10) through the whole toolchain.

Trained for a couple of steps only (the figure of merit here is arithmetic, not accuracy):
the firmware's int8 logits must equal the TFLite reference interpreter's on >= 50 inputs.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.buildcache import cache_lock
from helpers.e2e_support import PAPER_TEST_SAMPLES, paper_two_steps, tflite_logits
from lrt import pipeline
from lrt.data import load_dataset
from lrt.emulate import open_device
from lrt.model import Model

pytestmark = [
    pytest.mark.tf,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs 'train'"),
]
N = PAPER_TEST_SAMPLES


@pytest.fixture(scope="module")
def paper_build() -> Path:
    model = paper_two_steps()
    with cache_lock("paper-2steps-v2-build") as path:
        if not (path / "report.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            pipeline.build("host", path, scheme="inference", ir_dir=model, progress=False)
        return path


def test_paper_firmware_matches_interpreter(paper_build: Path) -> None:
    model = Model.load(paper_build / "ir")
    assert [lay.out_shape for lay in model.weight_layers()][-2:] == [(512,), (10,)]
    assert model.layers[0].out_shape == (26, 26, 128)
    x = model.quantize_input(load_dataset("mnist5k").x_test[:N])
    with open_device(paper_build) as dev:
        got, _ = dev.infer_many(x)
    expect = tflite_logits(paper_build / "model.tflite", x)
    exact = int(np.sum(np.all(got == expect, axis=1)))
    assert exact == N, f"{exact}/{N} inputs bit-exact"
    assert len(np.unique(expect)) > 5  # not a degenerate all-saturated output

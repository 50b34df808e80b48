"""End to end on the host emulator: trained mcu model -> generated C -> native firmware.

Oracles: the TFLite reference interpreter (BUILTIN_REF) for the forward pass; the
firmware's own counters for writes; the data's labels for online accuracy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.e2e_support import built, tflite_logits, trained_model
from lrt import codegen, pipeline
from lrt.boards import load_board
from lrt.config import BuildConfig
from lrt.data import load_dataset
from lrt.emulate import open_device
from lrt.model import Model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_inputs() -> tuple[np.ndarray, np.ndarray]:
    model = Model.load(trained_model() / "ir")
    ds = load_dataset("mnist5k")
    from lrt.data import make_stream

    st = make_stream("control", ds, 600, seed=3)
    x = np.concatenate([ds.x_test, st.x])[:1000]
    y = np.concatenate([ds.y_test, st.y])[:1000]
    return model.quantize_input(x), y


def test_firmware_logits_equal_tflite_reference(
    tmp_path: Path, test_inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = test_inputs
    assert len(x) >= 1000
    build = built("inference")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "logits.npy"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "lrt-emulate"),
            "--build",
            str(build),
            "--inputs",
            str(tmp_path / "x.npy"),
            "--dump-logits",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    fw = np.load(out)
    ref = tflite_logits(build / "model.tflite", x)
    assert fw.dtype == np.int8 and fw.shape == ref.shape == (len(x), 10)
    mismatched = int((fw != ref).any(axis=1).sum())
    assert mismatched == 0, f"{mismatched} of {len(x)} inputs differ from BUILTIN_REF"
    acc = float((fw.argmax(1) == y).mean())
    assert acc > 0.85, acc


def test_int8_accuracy_close_to_float() -> None:
    rep = json.loads((trained_model() / "report.json").read_text())
    acc = rep["accuracy"]
    assert acc["int8_acc"] >= acc["float_acc"] - 0.01, acc


def test_report_names_the_packages_that_trained_the_model() -> None:
    """The same seed on another TensorFlow, Keras, NumPy or SciPy can train other weights:
    the build report says which ones trained this model."""
    from importlib import metadata

    import scipy

    stack = json.loads((trained_model() / "report.json").read_text())["model"]["trained_with"]
    assert stack["numpy"] == np.__version__ and stack["scipy"] == scipy.__version__
    assert stack["keras"] == metadata.version("keras")
    assert stack["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "tensorflow-cpu" in stack or "tensorflow" in stack, stack


def test_generation_is_deterministic(tmp_path: Path) -> None:
    model = Model.load(trained_model() / "ir")
    board = load_board("host")
    cfg = BuildConfig(scheme="lrt-maxnorm")
    a, b = tmp_path / "a", tmp_path / "b"
    codegen.generate(model, cfg, board, a)
    codegen.generate(Model.load(trained_model() / "ir"), cfg, board, b)
    files_a = sorted(p.name for p in a.iterdir())
    assert files_a == sorted(p.name for p in b.iterdir())
    assert "main.c" in files_a and "lrt_model.c" in files_a
    for name in files_a:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert "do not edit" in (a / "lrt_model.c").read_text().splitlines()[0]


def test_same_inputs_same_logits_twice(test_inputs: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = test_inputs
    build = built("lrt-maxnorm")
    runs = []
    for _ in range(2):
        with open_device(build) as dev:
            logits, preds = dev.train_many(x[:150], y[:150])
            runs.append((logits, preds, dev.stats()))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][2] == runs[1][2]


@pytest.fixture(scope="module")
def shift_results() -> dict[str, dict[str, object]]:
    """Every scheme on the same 2000-sample shift stream, each at its default settings."""
    res = {}
    for scheme in ("inference", "bias", "sgd", "lrt", "lrt-maxnorm"):
        r = pipeline.emulate(built(scheme), samples=2000, stream="shift", progress=False)
        res[scheme] = r.to_dict()
    return res


def test_training_schemes_beat_inference_on_shift(
    shift_results: dict[str, dict[str, object]],
) -> None:
    acc = {k: v["online_accuracy"] for k, v in shift_results.items()}
    print("online accuracy on shift:", acc)
    assert acc["bias"] > acc["inference"], acc
    assert acc["sgd"] > acc["inference"], acc


def test_write_accounting(shift_results: dict[str, dict[str, object]]) -> None:
    n = 2000
    sgd = shift_results["sgd"]
    assert 0 < sgd["max_writes_per_cell"] <= n  # type: ignore[operator]
    assert sgd["paper_sgd_writes"] >= sgd["max_writes_per_cell"]  # type: ignore[operator]
    assert shift_results["bias"]["max_writes_per_cell"] == 0
    assert shift_results["inference"]["max_writes_per_cell"] == 0
    for lay in sgd["layers"]:  # type: ignore[attr-defined]
        assert lay["max_writes_per_cell"] <= n
        assert lay["paper_sgd_writes"] >= lay["max_writes_per_cell"]


def test_lrt_writes_far_less_than_sgd(shift_results: dict[str, dict[str, object]]) -> None:
    sgd = shift_results["sgd"]
    for scheme in ("lrt", "lrt-maxnorm"):
        lrt = shift_results[scheme]
        lw = max(int(lrt["max_writes_per_cell"]), 1)  # type: ignore[call-overload]
        print(
            scheme,
            "writes",
            lw,
            "sgd",
            sgd["max_writes_per_cell"],
            "paper",
            sgd["paper_sgd_writes"],
        )
        assert int(sgd["paper_sgd_writes"]) >= 100 * lw  # type: ignore[call-overload]
        assert lrt["flushes"] > 0
        # no lower than sgd minus 1 point (measured 77.8% / 76.4% vs 75.2%, mean online accuracy)
        assert lrt["online_accuracy"] >= sgd["online_accuracy"] - 0.01  # type: ignore[operator]


def test_default_programs_cells_5x_less_than_sgd_at_sgds_accuracy(
    shift_results: dict[str, dict[str, object]],
) -> None:
    """The product's promise on the 2,000-sample shift stream, both at their defaults (per-sample
    SGD at its own best validated rate): the default scheme programs its most-worn NVM cell at
    least 5x less often than per-sample SGD and is at least as accurate at the end."""
    default = BuildConfig().scheme
    ours, sgd = shift_results[default], shift_results["sgd"]
    programs = (int(ours["max_programs_per_cell"]), int(sgd["max_programs_per_cell"]))  # type: ignore[call-overload]
    print(default, "programs", programs, "acc EMA", ours["online_accuracy_ema"],
          sgd["online_accuracy_ema"])  # fmt: skip
    assert 5 * programs[0] <= programs[1], programs
    assert ours["online_accuracy_ema"] >= sgd["online_accuracy_ema"]  # type: ignore[operator]


def test_conv_sums_keep_accuracy_and_wear_of_per_sample_steps(
    shift_results: dict[str, dict[str, object]],
) -> None:
    """The default's exact conv sums (one LRT block step per pseudo-batch) against the paper's
    block step per sample on the same stream: the same accuracy within 1.5 points and at most
    a fifth more wear (measured 78.8% / 29 programs against 78.4% / 28). A sum that never
    reached its accumulator would leave the convs unwritten and lose accuracy."""
    ours = shift_results["lrt-maxnorm"]
    steps = pipeline.emulate(
        built("lrt-maxnorm", lrt_conv_sum=0), samples=2000, stream="shift", progress=False
    )
    assert abs(float(ours["online_accuracy_ema"]) - steps.online_accuracy_ema) <= 0.015  # type: ignore[arg-type]
    assert int(ours["max_programs_per_cell"]) <= 1.2 * steps.max_programs_per_cell  # type: ignore[call-overload]
    convs = [lay for lay in ours["layers"] if str(lay["layer"]).startswith("conv")]  # type: ignore[attr-defined]
    assert convs and all(int(lay["max_writes_per_cell"]) > 0 for lay in convs)


def test_library_entry_points_take_str_paths_and_record_the_stream(tmp_path: Path) -> None:
    """lrt.run_online is lrt-emulate as a function: str paths work, and the report says which
    stream (seed, shift segment length) the figures come from."""
    import lrt
    from lrt.errors import UserError

    assert lrt.make_firmware is pipeline.build and lrt.run_online is pipeline.emulate
    out = tmp_path / "run.json"
    res = lrt.run_online(
        str(built("lrt-maxnorm")), samples=30, stream="shift", segment=10, seed=3,
        json_path=str(out), markdown_path=str(tmp_path / "run.md"), progress=False,
    )  # fmt: skip
    saved = json.loads(out.read_text())
    assert (saved["segment"], saved["stream_seed"], saved["samples"]) == (10, 3, 30)
    assert "3 segment(s) in this run" in res.markdown()
    with pytest.raises(UserError, match="segment"):
        lrt.run_online(built("lrt-maxnorm"), samples=30, stream="shift", segment=0, progress=False)


def _control_300(**options: float) -> dict[str, Any]:
    """The default scheme with these build options on the same 300 control samples."""
    return pipeline.emulate(built("lrt-maxnorm", **options), samples=300, stream="control",
                            seed=100, progress=False).to_dict()  # fmt: skip


def test_batch_scaling_sets_the_write_step() -> None:
    """batch_scaling is the exponent of the LRT write step lr * B_eff^s: on the same stream a
    larger exponent changes more weight cells (measured on 300 control samples: the cell
    changes grow with s). A firmware that ignored the field would write the same cells."""

    def cell_changes(scaling: float) -> float:
        layers = _control_300(batch_scaling=scaling)["layers"]
        return sum(lay["cells"] * lay["mean_writes_per_cell"] for lay in layers)

    changes = [cell_changes(s) for s in (0, 0.5, 1)]
    print("cell changes for batch_scaling 0, 0.5, 1:", changes)
    assert changes[0] < changes[1] < changes[2], changes


def test_maxnorm_beta_reaches_the_firmware() -> None:
    """maxnorm_beta sets the max-norm average of the trainer and of the LRT flush: a short
    memory (0.5) normalizes by the latest maxima and trains differently from the default on the
    same 300 control samples; 0.999 given explicitly is the default firmware, bit for bit."""

    def run(**options: float) -> dict[str, object]:
        d = _control_300(**options)
        return {k: d[k] for k in ("online_accuracy", "flushes", "layers")}

    default, same, short = run(), run(maxnorm_beta=0.999), run(maxnorm_beta=0.5)
    assert same == default
    assert short != default, short

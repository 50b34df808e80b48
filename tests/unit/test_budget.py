"""The RAM/flash budget asks the compiled C, and a build refuses what cannot fit before any
training: from the architecture alone, without importing TensorFlow."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lrt import export, pipeline
from lrt.boards import Board, load_board
from lrt.budget import plan_budget
from lrt.config import BuildConfig
from lrt.errors import UserError
from lrt.tflite_import import to_tflite

HOST = load_board("host")


def test_mcu_lrt_budget_fits_64k() -> None:
    b = plan_budget(export.architecture("mcu"), BuildConfig(scheme="lrt-maxnorm"), HOST)
    # every layer output is kept for the backward pass (flatten aliases pool4): by hand
    kept = 26 * 26 * 8 + 24 * 24 * 8 + 12 * 12 * 8 + 10 * 10 * 16 + 8 * 8 * 16 + 4 * 4 * 16
    kept += 64 + 10
    assert b.ram_items["train: kept activations"] == kept
    assert b.ram_items["activations (2 ping-pong buffers, reused for gradients)"] == 2 * 5408
    assert b.ram_items["biases (RAM working copy)"] == 4 * (8 + 8 + 16 + 16 + 64 + 10)
    # QL, QR int16 with rank columns per weight layer, plus each accumulator's struct
    nm = [(8, 9), (8, 72), (16, 72), (16, 144), (64, 256), (10, 64)]
    assert b.ram_items["train: LRT accumulators (QL, QR, struct)"] > sum(
        2 * 4 * (n + m) for n, m in nm
    )
    assert [c["layer"] for c in b.lrt_layers] == [
        "conv1", "conv2", "conv3", "conv4", "dense1", "dense2",
    ]
    # the classifier residual: the C's own size of its int32 words (n m + n)
    head = "train: classifier residual (int32)"
    assert b.ram_items[head] == 4 * (10 * 64 + 10)
    for cfg in (BuildConfig(scheme="lrt-maxnorm", head_lr=0), BuildConfig(scheme="sgd")):
        assert head not in plan_budget(export.architecture("mcu"), cfg, HOST).ram_items
    # the default block width (16: a narrow conv layer's whole per-sample gradient in one
    # block) needs ~80 KB; blocks of 8 pixels without the residual bring the same scheme
    # under 64 KB
    assert b.ram > 64 * 1024
    narrow = plan_budget(
        export.architecture("mcu"), BuildConfig(scheme="lrt-maxnorm", lrt_block=8, head_lr=0), HOST
    )
    assert narrow.ram <= 64 * 1024
    rank8 = plan_budget(export.architecture("mcu"), BuildConfig(scheme="lrt", rank=8), HOST)
    key = "train: LRT accumulators (QL, QR, struct)"
    assert rank8.ram_items[key] > b.ram_items[key]
    assert "train: kept activations" not in plan_budget(
        export.architecture("mcu"), BuildConfig(scheme="inference"), HOST
    ).ram_items
    # the paper's network is far beyond a microcontroller
    assert plan_budget(export.architecture("paper"), BuildConfig(), HOST).ram > 256 * 1024


def test_conv_sums_are_the_narrow_convs_int16_gradients() -> None:
    """The default sums the per-sample gradients of the conv layers with <= kb channels
    (int16, n x m each, plus a small struct); blocks of 8 leave the 16-channel convs to
    per-sample steps; the paper's streaming estimator has no sums."""
    arch = export.architecture("mcu")
    key = "train: LRT conv gradient sums (int16)"
    narrow8, wide16 = 2 * (8 * 9 + 8 * 72), 2 * (16 * 72 + 16 * 144)
    default = plan_budget(arch, BuildConfig(), HOST)
    assert narrow8 + wide16 <= default.ram_items[key] <= narrow8 + wide16 + 4 * 64
    assert narrow8 <= plan_budget(arch, BuildConfig(lrt_block=8), HOST).ram_items[key] < wide16
    for off in (BuildConfig(lrt_conv_sum=0), BuildConfig(defaults="paper")):
        b = plan_budget(arch, off, HOST)
        assert key not in b.ram_items
        assert b.ram < default.ram - narrow8 - wide16 + 4 * 64
    # the cost model: a summed layer takes one block step per pseudo-batch
    conv1 = next(c for c in default.lrt_layers if c["layer"] == "conv1")
    assert conv1["blocks_per_sample"] == pytest.approx(1 / BuildConfig().batch_conv)


REFUSE = """
import sys
from lrt import cli
rc = cli.build_main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules)
sys.exit(rc)
"""


def _refused(tmp_path: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", REFUSE, *args, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "tensorflow imported: False" in proc.stdout  # refused before any training
    (err,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert not (tmp_path / "out" / "model.tflite").exists()
    return err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (  # the oversized model: the budget message names RAM, flash and NVM overshoots
            ("--board", "lm3s6965evb", "--preset", "paper"),
            ("RAM needs", "board lm3s6965evb has 49,152 B", "flash needs", "NVM region"),
        ),
        (  # a scheme the board's memory technology cannot serve (page-sized flash window)
            ("--board", "nucleo-f446re", "--preset", "tiny", "--scheme", "sgd"),
            ("scheme 'sgd' on board nucleo-f446re", "flash page"),
        ),
        (
            ("--board", "host", "--train-layers", "dense9"),
            ("unknown layer(s) dense9", "conv1"),
        ),
        (("--board", "host", "--train-layers", "last:7"), ("has 6 weight layers",)),
    ],
)
def test_refused_before_training(
    tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    err = _refused(tmp_path, *args)
    for needle in needles:
        assert needle in err, err


def test_imported_model_that_does_not_fit(tmp_path: Path) -> None:
    big = tmp_path / "paper.tflite"
    big.write_bytes(to_tflite(export.architecture("paper")))
    err = _refused(tmp_path, "--board", "nucleo-f446re", "--model", str(big))
    assert "RAM needs" in err and "board nucleo-f446re" in err


def _small_m4(tmp_path: Path, ram: int) -> Board:
    """The Nucleo-F446RE with only `ram` bytes of RAM to spend."""
    src = (Path(__file__).parents[2] / "boards" / "nucleo-f446re.toml").read_text()
    src = src.replace('name = "nucleo-f446re"', f'name = "small-m4-{ram}"')
    budget = "[budget]\nflash = 0x80000\nram = "
    src = src.replace(budget + "0x20000", budget + str(ram))
    path = tmp_path / f"small-m4-{ram}.toml"
    path.write_text(src)
    board = load_board(str(path))
    assert board.ram_budget == ram
    return board


@pytest.mark.slow  # seven budget probes compiled for the board: ~40 s on a fresh clone
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="no arm-none-eabi-gcc")
def test_lrt_over_the_ram_names_the_setting_that_fits(tmp_path: Path) -> None:
    """A board a little short of RAM for the default LRT build: the refusal names the RAM
    saver that changes the least and fits, and that setting does fit; none when none fits."""
    cfg = BuildConfig(scheme="lrt-maxnorm")
    nucleo = load_board("nucleo-f446re")
    arch = export.architecture("mcu")
    need = {
        tuple(s.items()): plan_budget(arch, cfg.with_overrides(**s), nucleo).ram
        for s in ({}, *pipeline.LRT_RAM_SAVERS)
    }
    full, no_sums, narrow = need[()], need[(("lrt_conv_sum", 0),)], need[(("lrt_block", 8),)]
    both = need[(("lrt_block", 8), ("lrt_conv_sum", 0))]
    assert both < narrow < no_sums < full
    for ram, flags, fit in (
        (no_sums + 512, "lrt_conv_sum=0", no_sums),
        (narrow + 512, "lrt_block=8", narrow),
        (both + 512, "lrt_block=8 lrt_conv_sum=0", both),
    ):
        board = _small_m4(tmp_path, ram)
        with pytest.raises(UserError) as err:
            pipeline.check_fits(export.architecture("mcu"), cfg, board)
        assert f"RAM needs {full:,d} B" in str(err.value)
        assert f"with --set {flags} it needs {fit:,d} B and fits" in str(err.value), err.value
        settings = {k: int(v) for k, v in (f.split("=") for f in flags.split())}
        pipeline.check_fits(export.architecture("mcu"), cfg.with_overrides(**settings), board)
    # a user who already narrowed the blocks is told only what is left to change
    narrowed = cfg.with_overrides(lrt_block=8)
    with pytest.raises(UserError) as err:
        pipeline.check_fits(export.architecture("mcu"), narrowed, _small_m4(tmp_path, both + 512))
    assert f"with --set lrt_conv_sum=0 it needs {both:,d} B" in str(err.value), err.value
    small = _small_m4(tmp_path, 48 * 1024)
    with pytest.raises(UserError) as err:
        pipeline.check_fits(export.architecture("mcu"), cfg, small)
    assert "RAM needs" in str(err.value) and "with --set" not in str(err.value)
    # no setting fits: fewer layers that learn, the most that fit
    found = re.search(r"with --train-layers last:(\d) \(.*\) it needs ([\d,]+) B", str(err.value))
    assert found, err.value
    k, ram = int(found[1]), int(found[2].replace(",", ""))
    fits = cfg.with_overrides(train_layers=(f"last:{k}",))
    assert pipeline.check_fits(export.architecture("mcu"), fits, small).ram == ram <= 48 * 1024
    with pytest.raises(UserError):
        more = cfg.with_overrides(train_layers=(f"last:{k + 1}",))
        pipeline.check_fits(export.architecture("mcu"), more, small)


def test_classifier_residual_needs_a_classifier_that_trains() -> None:
    """The residual learns the last layer: a build whose classifier keeps its offline weights
    gets none by default, and one asked for outright is refused with the way out."""
    from lrt import codegen
    from lrt.pipeline import apply_train_layers

    model = export.architecture("mcu")
    assert codegen.head_rate(model, BuildConfig()) == BuildConfig().classifier_head_lr > 0
    apply_train_layers(model, ("conv1",))
    assert codegen.head_rate(model, BuildConfig()) == 0
    assert "train: classifier residual (int32)" not in plan_budget(
        model, BuildConfig(), HOST
    ).ram_items
    with pytest.raises(UserError, match=r"head_lr 0\.1: .* dense2 does not train; set head_lr=0"):
        codegen.head_rate(model, BuildConfig(head_lr=0.1))

"""Build config: TOML parsing, overrides and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrt.config import HEAD_LR, BuildConfig, load_config, parse_setting
from lrt.errors import UserError


def test_defaults_are_the_papers(tmp_path: Path) -> None:
    cfg = load_config(None)
    assert (cfg.rank, cfg.batch_conv, cfg.batch_dense) == (4, 10, 100)
    assert cfg.kappa_th == 100.0 and cfg.rho_min == 0.01 and cfg.preset == "mcu"


def test_toml_values_and_cli_override(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('scheme = "sgd"\nrank = 2\nrho_min = 0\ntrain_layers = ["dense_1"]\n')
    cfg = load_config(p, rank=6)
    assert cfg.scheme == "sgd" and cfg.rank == 6 and cfg.rho_min == 0.0
    assert cfg.train_layers == ("dense_1",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rnak = 3\n", "unknown field 'rnak'"),
        ('rank = "four"\n', "field 'rank' must be int"),
        ("rank = 12\n", "field 'rank' is 12; expected 1..8"),
        ('scheme = "adam"\n', "field 'scheme' is 'adam'"),
        ("lr = -1\n", "field 'lr'"),
        ("rank = \n", "not valid TOML"),
        ("train_layers = [1, 2]\n", "list of strings"),
        ("lrt_conv_sum = 2\n", "field 'lrt_conv_sum' is 2; expected 0 or 1"),
        ("lrt_step_cap = 2\n", "field 'lrt_step_cap' is 2; expected 0 or 1"),
        ("batch_scaling = 0.25\n", "field 'batch_scaling' is 0.25; expected 0, 0.5 or 1"),
    ],
)
def test_bad_fields_name_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(UserError) as exc:
        load_config(p)
    assert needle in str(exc.value)
    if "TOML" not in needle:
        assert str(p) in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(UserError, match="not found"):
        load_config(Path("/nonexistent/x.toml"))


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    p = tmp_path / "b.toml"
    p.write_text("rank = true\n")
    with pytest.raises(UserError, match="rank"):
        load_config(p)


def test_validate_is_idempotent() -> None:
    cfg = BuildConfig(scheme="bias").validate()
    assert cfg.validate() == cfg


def test_parse_setting_types_values_by_field() -> None:
    assert parse_setting("rank=8") == ("rank", 8)
    assert parse_setting("lr=0.005") == ("lr", 0.005)
    assert parse_setting("lr=1") == ("lr", 1.0) and isinstance(parse_setting("lr=1")[1], float)
    assert parse_setting("scheme=sgd") == ("scheme", "sgd")
    assert parse_setting("epochs=none") == ("epochs", None)
    assert parse_setting("weight-bits=4") == ("weight_bits", 4)
    assert parse_setting("train_layers=conv_1,dense_1") == ("train_layers", ("conv_1", "dense_1"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rank", "expected KEY=VALUE"),
        ("rnak=3", "unknown field 'rnak'"),
        ("rank=four", "'rank' needs an integer"),
        ("rank=2.5", "'rank' needs an integer"),
        ("lr=fast", "'lr' needs a number"),
    ],
)
def test_parse_setting_errors(text: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        parse_setting(text)


@pytest.mark.parametrize(
    ("field", "value"), [("weight_bits", 1), ("weight_bits", 9), ("epochs", -1)]
)
def test_weight_bits_and_epochs_ranges(field: str, value: int) -> None:
    with pytest.raises(UserError, match=f"field '{field}'"):
        load_config(None, **{field: value})
    assert load_config(None, epochs=0, weight_bits=2).epochs == 0


def test_write_policy_fields() -> None:
    cfg = load_config(None)
    assert cfg.write_policy is None and cfg.scheme == "lrt-maxnorm"
    assert (cfg.policy_name, cfg.learning_rate) == ("gated", 0.003)  # the validated defaults
    keys = dict(
        parse_setting(s)
        for s in ("write_policy=gated", "gate_errors=3", "lifetime_years=10", "sample_rate_hz=10")
    )
    cfg = load_config(None, scheme="sgd-batch", **keys)
    assert (cfg.write_policy, cfg.gate_errors, cfg.lifetime_years) == ("gated", 3, 10.0)
    for bad, needle in (
        ({"write_policy": "lazy"}, "field 'write_policy' is 'lazy'"),
        ({"gate_cells": 1.5}, "field 'gate_cells' is 1.5"),
        ({"sample_rate_hz": 0.0}, "field 'sample_rate_hz'"),
    ):
        with pytest.raises(UserError, match=needle):
            load_config(None, **bad)


def test_one_set_takes_several_fields() -> None:
    from lrt.cli import build_parser

    args = build_parser().parse_args(
        ["--out", "x", "--set", "lifetime_years=10", "sample_rate_hz=10", "--set", "rank=2"]
    )
    assert dict(map(parse_setting, args.set)) == {
        "lifetime_years": 10.0,
        "sample_rate_hz": 10.0,
        "rank": 2,
    }


def test_defaults_table_fills_what_is_not_given() -> None:
    """lr and write_policy come from the `defaults` table unless given: the validated table
    gives per-sample SGD its own best rate, the paper table the paper's settings."""
    assert load_config(None, scheme="sgd").learning_rate == 0.03
    assert load_config(None, scheme="lrt").learning_rate == 0.003
    paper = load_config(None, defaults="paper")
    assert (paper.learning_rate, paper.policy_name) == (0.01, "fixed")
    given = load_config(None, defaults="paper", lr=0.02, write_policy="gated")
    assert (given.learning_rate, given.policy_name) == (0.02, "gated")
    assert given.resolved()["lr"] == 0.02 and load_config(None).resolved()["lr"] == 0.003
    # conv sums: on by default, off for the paper's streaming estimator, a given value wins
    assert load_config(None).resolved()["lrt_conv_sum"] == 1
    assert paper.resolved()["lrt_conv_sum"] == 0
    assert load_config(None, defaults="paper", lrt_conv_sum=1).conv_sum
    # the write step grows with every deferred sample unless capped (both tables); the
    # validated table bounds it by the gate's surplus errors, the paper's does not
    assert load_config(None).resolved()["lrt_step_cap"] == paper.resolved()["lrt_step_cap"] == 0
    assert load_config(None).step_evidence and not paper.step_evidence
    capped = load_config(None, lrt_step_cap=1)  # a fixed cap replaces the evidence bound
    assert capped.step_cap and not capped.step_evidence
    with pytest.raises(UserError, match="both bound the LRT step"):
        load_config(None, lrt_step_cap=1, lrt_step_evidence=1)
    with pytest.raises(UserError, match="field 'defaults' is 'tuned'"):
        load_config(None, defaults="tuned")
    # the classifier residual: the validated table gives it to the LRT schemes only, the
    # paper's to none; a given rate wins, and the inference scheme refuses one
    assert load_config(None).classifier_head_lr == HEAD_LR > 0
    assert load_config(None, scheme="lrt").resolved()["head_lr"] == HEAD_LR
    for scheme in ("sgd", "sgd-batch", "bias", "inference"):
        assert load_config(None, scheme=scheme).classifier_head_lr == 0
    assert paper.classifier_head_lr == 0
    assert load_config(None, scheme="sgd", head_lr=0.05).classifier_head_lr == 0.05
    assert load_config(None, head_lr=0).classifier_head_lr == 0
    with pytest.raises(UserError, match="field 'head_lr' needs a scheme that trains"):
        load_config(None, scheme="inference", head_lr=0.1)
    for bad in (2, 1e-6):
        with pytest.raises(UserError, match=r"field 'head_lr' is .*; expected 0 \(no classifier"):
            load_config(None, head_lr=bad)


def test_gate_rate_is_the_field_error_plus_margin_unless_given() -> None:
    from lrt.policy import held_out_error, policy_of

    meta = {"int8_accuracy": 0.988, "int8_field_accuracy": 0.92}
    err = held_out_error(meta)
    assert err is not None and abs(err - 0.08) < 1e-12  # the deformed digits, not the clean
    assert held_out_error({"int8_accuracy": 0.9}) == pytest.approx(0.1)
    assert held_out_error({}) is None
    cfg = load_config(None, gate_margin=0.02)
    assert cfg.gate_rate_for(err) == pytest.approx(0.10)
    assert cfg.gate_rate_for(None) == 0.0  # no held-out figure: the plain error count
    assert load_config(None, gate_rate=0.3, gate_margin=0.02).gate_rate_for(err) == 0.3
    assert load_config(None, gate_margin=0.5).gate_rate_for(0.9) == 1.0
    pol = policy_of(cfg, 1_000_000, 2, err)
    assert pol.gate_rate_q16 == round(0.10 * 65536)
    assert policy_of(load_config(None, gate_rate=0.0), 1_000_000, 2, err).gate_rate_q16 == 0
    for key in ("gate_rate", "gate_margin"):
        with pytest.raises(UserError, match=f"field '{key}' is 1.5"):
            load_config(None, **{key: 1.5})


def test_an_untrained_model_sets_no_gate_reference() -> None:
    """A from-scratch model's own error (~90%) as the reference would keep the gate shut."""
    from lrt.policy import held_out_error

    assert held_out_error({"epochs": 0, "int8_accuracy": 0.1, "int8_field_accuracy": 0.1}) is None
    assert held_out_error({"epochs": 8, "int8_field_accuracy": 0.9}) == pytest.approx(0.1)

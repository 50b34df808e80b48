"""Build config: TOML parsing, overrides and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrt.config import BuildConfig, load_config
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

"""nucleo-f446re (STM32F446RE: 512 KB flash, 128 KB RAM): the real firmware, its PlatformIO
project built offline with the stand-in platform, and the budget refusal of `paper`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers.e2e_support import built, paper_two_steps
from lrt import pipeline
from lrt.boards import load_board
from lrt.errors import UserError
from lrt.pio_project import build_pio_project

pytestmark = [pytest.mark.slow, pytest.mark.pio]
FLASH, RAM = 512 * 1024, 128 * 1024


def test_mcu_lrt_fits_and_pio_project_builds(tmp_path: Path) -> None:
    build = built("lrt-maxnorm", "nucleo-f446re")
    rep = pipeline.load_build(build)[0]
    fp = rep["footprint"]
    assert fp["flash"] + fp["nvm"] <= FLASH and fp["ram"] <= RAM, fp
    assert rep["budget"]["ram_bytes"] <= RAM
    assert (build / "pio" / "platformio.ini").is_file()
    res = build_pio_project(build, load_board("nucleo-f446re"), tmp_path / "pio")
    attrs = subprocess.run(
        ["arm-none-eabi-readelf", "-A", str(res.executable)], capture_output=True, text=True,
        check=True,
    ).stdout
    assert "Tag_CPU_name: \"7E-M\"" in attrs and "VFPv4-D16" in attrs, attrs
    assert "Tag_ABI_VFP_args: VFP registers" in attrs  # hard-float ABI
    assert res.footprint is not None
    assert res.footprint.flash <= FLASH and res.footprint.ram <= RAM
    print("nucleo mcu lrt-maxnorm:", res.footprint.to_dict())


def test_paper_preset_is_refused(tmp_path: Path) -> None:

    paper = paper_two_steps()
    with pytest.raises(UserError) as exc:
        pipeline.build(
            "nucleo-f446re", tmp_path / "p", scheme="lrt-maxnorm", ir_dir=paper, progress=False
        )
    msg = str(exc.value)
    assert "does not fit" in msg and "over by" in msg and "nucleo-f446re" in msg, msg



"""The budget is the linked firmware's: for every ARM board and every scheme whose model
fits, the static objects the budget measured (compiled main.c + lrt_model.c) plus the C
runtime reserve it states bracket the ELF's .data + .bss (``arm-none-eabi-size``), and its
flash (the model's constants + the code measured on a linked `tiny` image) is the ELF's
.text + .data within FLASH_SLACK.

Firmware is built from the architecture alone (export.architecture: zero parameters), which
has exactly the buffers of the trained model; per-cell write counters are off (they are an
emulator extra the budget leaves out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrt import budget as budget_mod
from lrt import codegen, export
from lrt.boards import list_boards
from lrt.build import build_firmware
from lrt.config import load_config
from lrt.errors import UserError
from lrt.pipeline import check_fits

pytestmark = [pytest.mark.slow, pytest.mark.qemu]
ARM_BOARDS = sorted(b.name for b in list_boards() if not b.is_host)
SCHEMES = ("inference", "sgd", "sgd-batch", "lrt")  # bias has sgd's buffers, lrt-maxnorm lrt's
FLASH_SLACK = 1024  # bytes: main.c's per-layer code differs between the model and `tiny`


@pytest.mark.parametrize("board_name", ARM_BOARDS)
def test_budget_equals_elf_ram(tmp_path: Path, board_name: str) -> None:
    board = next(b for b in list_boards() if b.name == board_name)
    built = 0
    overhead = []
    flash_error: list[int] = []
    for scheme in SCHEMES:
        for preset in ("mcu", "tiny"):  # the largest preset that fits
            cfg = load_config(None, preset=preset, scheme=scheme, cell_counters="off")
            model = export.architecture(preset)
            try:
                budget = check_fits(model, cfg, board)
            except UserError:
                continue
            gen = tmp_path / f"{scheme}-{preset}"
            codegen.generate(model, cfg, board, gen / "src", counters=False)
            fp = build_firmware(gen, board).footprint
            assert fp is not None
            static = budget.static_ram()
            elf = fp.data + fp.bss
            assert static <= elf <= static + budget_mod.RUNTIME_RESERVE, (
                scheme, preset, static, elf, elf - static,
            )
            assert board.memory is not None
            assert budget.ram_items["stack reserve"] == fp.stack == board.memory.stack_size
            image = fp.text + fp.data
            assert abs(budget.flash - image) <= FLASH_SLACK, (scheme, preset, budget.flash, image)
            flash_error.append(budget.flash - image)
            overhead.append(elf - static)
            built += 1
            break
    assert built, f"no scheme fits {board_name} even with the tiny preset"
    print(board_name, "runtime statics beyond the budget's objects:", overhead)
    print(board_name, "budget flash - ELF image:", flash_error)

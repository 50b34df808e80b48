"""Renode files for the boards that have a Renode platform. The generated .resc/.robot are
checked here without Renode (paths, sentinel, keywords); the `renode`-marked tests run
them where Renode is installed (skipped otherwise, see tests/conftest.py)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from harness.cbuild import ROOT
from lrt.boards import list_boards, load_board
from lrt.build import build_firmware
from lrt.emulate.renode import (
    RenodeRunner,
    RobotCheck,
    firmware_sentinel,
    run_robot,
    write_renode_files,
)
from lrt.errors import UserError

LIB = ROOT / "firmware_templates" / "lib"
FW = ROOT / "tests" / "emu" / "fw_echo" / "main.c"
RENODE_BOARDS = [b.name for b in list_boards() if b.emulator.renode]
# Renode's Robot keywords used by the template (renode/src/Renode/RobotFrameworkEngine).
RENODE_KEYWORDS = {
    "Execute Script", "Execute Command", "Create Terminal Tester", "Start Emulation",
    "Wait For Line On Uart", "Write Char On Uart", "Write Line To Uart", "Reset Emulation",
    "Setup", "Teardown", "Test Teardown",
}
REQUIRES_ARM = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                                  reason="arm-none-eabi-gcc missing")


@pytest.fixture(scope="module")
def elves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    gen = tmp_path_factory.mktemp("renode-echo")
    (gen / "src").mkdir()
    shutil.copy(FW, gen / "src" / "main.c")
    for name in ("lrt_common.c", "lrt_common.h"):
        shutil.copy(LIB / name, gen / "src" / name)
    return {name: build_firmware(gen, load_board(name)).executable for name in RENODE_BOARDS}


def name_check(board: str) -> RobotCheck:
    return RobotCheck(name="Firmware Answers Its Name", send="I", expect=board)


def test_boards_with_renode_exist() -> None:
    assert {"nucleo-f446re", "nrf52840-dk"} <= set(RENODE_BOARDS)
    with pytest.raises(UserError, match="no Renode platform"):
        write_renode_files(load_board("mps2-an386"), FW, Path("/nonexistent"))


@REQUIRES_ARM
@pytest.mark.parametrize("name", RENODE_BOARDS)
def test_generated_files_are_consistent(
    elves: dict[str, Path], tmp_path: Path, name: str
) -> None:
    board = load_board(name)
    elf = elves[name]
    files = write_renode_files(board, elf, tmp_path, checks=[name_check(name)])
    resc = files.resc.read_text()
    robot = files.robot.read_text()

    # .resc: the board's platform, this ELF, the board's UART, the vector table address
    assert f"machine LoadPlatformDescription @{board.emulator.renode}" in resc
    m = re.search(r"^\$elf\?=@(\S+)$", resc, re.M)
    assert m and Path(m.group(1)) == elf.resolve() and Path(m.group(1)).is_file()
    assert "sysbus LoadELF $elf" in resc
    assert f"showAnalyzer {board.emulator.renode_uart}" in resc
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                        check=True).stdout
    vectors = int(re.search(r"^([0-9a-f]+) \w lrt_vectors$", nm, re.M).group(1), 16)
    assert f"sysbus.cpu VectorTableOffset {vectors:#010x}" in resc
    assert "{{" not in resc and "{%" not in resc

    # .robot: sections, variables, keywords, the sentinel the firmware really prints
    sections = re.findall(r"^\*\*\* (.+) \*\*\*$", robot, re.M)
    assert sections == ["Comments", "Settings", "Variables", "Keywords", "Test Cases"]
    variables = dict(re.findall(r"^\$\{(\w+)\}\s{2,}(.+)$", robot, re.M))
    assert Path(variables["RESC"]) == files.resc
    assert variables["UART"] == board.emulator.renode_uart
    assert variables["READY"] == firmware_sentinel() == files.sentinel
    used = set(re.findall(r"\$\{(\w+)\}", robot))
    assert used <= set(variables) | {"RENODEKEYWORDS"}
    body = robot.split("*** Keywords ***")[1]
    user_keywords = set(re.findall(r"^(\S.*\S)$", body.split("*** Test Cases ***")[0], re.M))
    steps = re.findall(r"^    (\S.*?)(?:\s{2,}.*)?$", body, re.M)
    assert steps and set(steps) <= RENODE_KEYWORDS | user_keywords, set(steps)
    cases = re.findall(r"^(\S.*\S)$", robot.split("*** Test Cases ***")[1], re.M)
    assert cases == ["Firmware Reports Ready", "Firmware Answers Its Name"]
    assert "Wait For Line On Uart     " + name in robot
    image = elf.read_bytes()
    assert (files.sentinel + "\n").encode() in image  # printed by the firmware at boot
    assert (name + "\n").encode() in image  # its reply to 'I'


def test_sentinel_matches_platform_header() -> None:
    header = (ROOT / "firmware_templates" / "bsp" / "lrt_platform.h").read_text()
    assert f'#define LRT_PLATFORM_READY "{firmware_sentinel()}"' in header


@pytest.mark.skipif(shutil.which("renode") is not None, reason="renode is installed")
def test_runner_without_renode_is_a_clear_error(elves: dict[str, Path], tmp_path: Path) -> None:
    runner = RenodeRunner(load_board("nucleo-f446re"), elves["nucleo-f446re"], tmp_path)
    with pytest.raises(UserError, match="'renode' is not on PATH"):
        runner.open()


@pytest.mark.renode
@pytest.mark.parametrize("name", RENODE_BOARDS)
def test_robot_suite_passes(elves: dict[str, Path], tmp_path: Path, name: str) -> None:
    files = write_renode_files(load_board(name), elves[name], tmp_path,
                               checks=[name_check(name)])
    run_robot(files.robot, tmp_path / "results")  # raises unless every case passed
    xml = "".join(p.read_text() for p in (tmp_path / "results").rglob("*.xml"))
    assert "Firmware Answers Its Name" in xml and 'status="FAIL"' not in xml


@pytest.mark.renode
@pytest.mark.parametrize("name", RENODE_BOARDS)
def test_runner_streams_bytes_over_uart(elves: dict[str, Path], tmp_path: Path,
                                        name: str) -> None:
    payload = bytes(range(256))
    link = RenodeRunner(load_board(name), elves[name], tmp_path).open()  # eats the ready line
    try:
        link.write(b"E" + struct.pack("<I", len(payload)) + payload)
        assert link.read_exact(len(payload), 30) == bytes((b * 7 + 3) & 255 for b in payload)
        link.write(b"I")
        assert link.read_line(30) == (name + "\n").encode()
    finally:
        link.close()


@pytest.mark.skipif(shutil.which("renode") is not None, reason="renode is installed")
def test_emulating_on_renode_without_renode_is_a_clear_error() -> None:
    from helpers.e2e_support import built
    from lrt.emulate import open_device

    def sessions() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("lrt-renode-*"))

    before = sessions()
    with pytest.raises(UserError, match="'renode' is not on PATH"):
        open_device(built("lrt-maxnorm", "nucleo-f446re"), emulator="renode")
    with pytest.raises(UserError, match="board 'host' has no Renode platform"):
        open_device(built("lrt-maxnorm"), emulator="renode")
    assert sessions() <= before  # no session directory left behind


@pytest.mark.renode
def test_lrt_firmware_trains_on_renode_as_on_the_host() -> None:
    """The real firmware of a Renode board (its UART, its flash driver) against the host
    build of the same model: the same logits and predictions over 20 training samples."""
    from helpers.e2e_support import built
    from lrt.data import load_dataset, make_stream
    from lrt.emulate import open_device
    from lrt.model import Model

    host = built("lrt-maxnorm")
    st = make_stream("shift", load_dataset("mnist5k"), 20, seed=5)
    xq = Model.load(host / "ir").quantize_input(st.x)
    runs = []
    for build, emulator in ((host, "host"), (built("lrt-maxnorm", "nucleo-f446re"), "renode")):
        with open_device(build, emulator=emulator) as dev:
            runs.append(dev.train_many(xq, st.y))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])

"""Shared test infrastructure: paths, a sanitized C compiler, cached trained artefacts."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from lrt.buildcache import cache_lock

__all__ = ["cache_lock", "compile_c", "have"]

ROOT = Path(__file__).resolve().parents[1]
LIB_DIR = ROOT / "firmware_templates" / "lib"

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1"]


def compile_c(
    sources: list[Path | str],
    out: Path,
    include_dirs: list[Path | str] | None = None,
    extra: list[str] | None = None,
    sanitize: bool = True,
) -> Path:
    """Compile C sources with the host cc under -Wall -Wextra -Werror (+ ASan/UBSan)."""
    cmd = ["cc", *WARN, *(SANITIZE if sanitize else [])]
    for inc in [LIB_DIR, *(include_dirs or [])]:
        cmd.append(f"-I{inc}")
    cmd += [str(s) for s in sources]
    cmd += ["-o", str(out), "-lm", *(extra or [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"compile failed: {' '.join(cmd)}\n{proc.stderr}")
    return out


@pytest.fixture
def cc() -> Callable[..., Path]:
    return compile_c


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


# Exhaustive or statistical tests (power loss at every operation, thousands of seeds,
# fuzzing) run in the full suite only; `scripts/test.sh --fast` (not slow) leaves them out.
LONG_RUNNING = (
    "test_power_loss_",
    "_is_statistically_the_reference",
    "test_unbiased_mode_is_unbiased",
    "test_libfuzzer",
    "test_every_single_bit_flip",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(part in item.name for part in LONG_RUNNING):
            item.add_marker(pytest.mark.slow)
    skip_renode = pytest.mark.skip(
        reason="renode is not on PATH (not installable here; see README)"
    )
    skip_qemu = pytest.mark.skip(
        reason="qemu-system-arm / arm-none-eabi-gcc missing: run scripts/setup.sh"
    )
    for item in items:
        if "renode" in item.keywords and not have("renode"):
            item.add_marker(skip_renode)
        if "qemu" in item.keywords and not (have("qemu-system-arm") and have("arm-none-eabi-gcc")):
            if os.environ.get("CI"):
                continue  # in CI a missing emulator is a failure, not a skip
            item.add_marker(skip_qemu)

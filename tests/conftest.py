"""pytest configuration: the `cc` fixture, and markers added at collection (slow for the
long-running tests, skips for missing emulators). Shared helpers live in tests/helpers/; the
C drivers and the sanitized compiler shared with the bench, in the top-level harness package."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cbuild import compile_c, have


@pytest.fixture
def cc() -> Callable[..., Path]:
    return compile_c


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

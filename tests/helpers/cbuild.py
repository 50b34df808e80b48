"""The repository's paths and the host C compiler the C tests use: -Wall -Wextra -Werror
-pedantic, with ASan/UBSan unless asked otherwise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB_DIR = ROOT / "firmware_templates" / "lib"
C_TESTS = ROOT / "tests" / "c"  # C drivers of the C tests

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


def have(tool: str) -> bool:
    return shutil.which(tool) is not None

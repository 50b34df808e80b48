"""The repository's paths and the host C compiler the C tests and the bench use:
-Wall -Wextra -Werror -pedantic, with ASan/UBSan unless asked otherwise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB_DIR = ROOT / "firmware_templates" / "lib"
DRIVERS = ROOT / "harness" / "c"  # C programs that drive the library for tests and bench

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

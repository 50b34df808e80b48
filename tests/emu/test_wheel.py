"""The toolchain as a library: a wheel built from the repository, installed into a fresh venv
outside the checkout, builds and runs firmware with only what the wheel carries.

Offline: the wheel is built with the current interpreter's setuptools (no build isolation,
no index) and installed without dependencies; the fresh venv sees the test venv's
site-packages (TensorFlow, numpy, ...) through a .pth line, so nothing is downloaded.
The build uses ``--preset tiny --epochs 0`` (no offline training) to stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from harness.cbuild import ROOT

pytestmark = pytest.mark.slow


def _copy_sources(dst: Path) -> None:
    """The repository's tracked (and new, not ignored) files: what a fresh clone has."""
    proc = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=False,
    )
    if proc.returncode != 0:  # not a git checkout (an unpacked sdist): copy the tree
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".venv", "build", ".git"))
        return
    for rel in proc.stdout.decode().split("\0"):
        src = ROOT / rel
        if rel and src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LRT_"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_wheel_outside_checkout(tmp_path: Path) -> None:
    src, dist, venv, work = (tmp_path / n for n in ("src", "dist", "venv", "work"))
    for d in (src, work):
        d.mkdir()
    _copy_sources(src)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(dist), str(src)],
        check=True, capture_output=True, text=True, env=_clean_env(),
    )
    (wheel,) = dist.glob("lrt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    # the licence travels as an SPDX expression with its text (PEP 639)
    assert "License-Expression: Apache-2.0" in metadata.splitlines(), metadata[:800]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    # the dependencies come from this interpreter's site-packages (after the venv's own)
    shared = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (purelib / "lrt_test_shared.pth").write_text("\n".join(dict.fromkeys(shared)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, text=True, env=_clean_env(),
    )
    env = _clean_env()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc

    where = run(
        str(venv / "bin" / "python"), "-c",
        "import lrt, lrt.resources as r; print(lrt.__file__); print(r.data_root())",
    ).stdout.split()
    # the package and its firmware sources come from the installed wheel, not the checkout
    assert all(Path(p).is_relative_to(purelib) for p in where), where
    run(str(venv / "bin" / "lrt-build"), "--board", "host", "--preset", "tiny", "--epochs", "0",
        "--out", "X", "--quiet")
    run(str(venv / "bin" / "lrt-emulate"), "--build", "X", "--samples", "200",
        "--json", "X/emulate.json", "--quiet")
    result = json.loads((work / "X" / "emulate.json").read_text())
    assert result["samples"] == 200
    assert (work / "X" / "src" / "lrt_train.c").is_file()

"""Build step that puts the repository's firmware_templates/ and boards/ into the wheel.

The folders stay at the top of the repository (where people edit them); a built package
carries copies under lrt/_data/, which lrt.resources finds. Editable installs skip the copy
and read the checkout directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
DATA_FOLDERS = ("firmware_templates", "boards")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "lrt" / "_data"
        for name in DATA_FOLDERS:
            target = dest / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(
                HERE / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )


setup(cmdclass={"build_py": BuildPyWithData})

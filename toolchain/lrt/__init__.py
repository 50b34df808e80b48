"""lrt: low-rank training toolchain for microcontrollers with weights in NVM.

The library entry points are those of the command line (docs/CLI.md), as functions:

    import lrt
    built = lrt.make_firmware("host", "build/host")       # lrt-build; a BuildResult
    run = lrt.run_online("build/host", samples=2000, stream="shift", json_path="run.json")
    print(run.markdown())                                   # lrt-emulate's report

`lrt.load_build(dir)` gives a build's report and model. Every input they refuse (unknown
board, a model over the board's RAM, a bad setting, a corrupt file) raises `lrt.UserError`,
whose message says what is wrong and how to fix it; a device or emulator that fails raises
`lrt.DeviceError`. They print nothing unless called with
`progress=True`. They are imported on first use, so `import lrt` stays light (TensorFlow is
imported only when a model is trained, and then sets its own log levels for the process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lrt.errors import DeviceError, UserError

if TYPE_CHECKING:
    from lrt.pipeline import build as make_firmware
    from lrt.pipeline import emulate as run_online
    from lrt.pipeline import load_build

__version__ = "0.1.0"

__all__ = ["DeviceError", "UserError", "__version__", "load_build", "make_firmware", "run_online"]

# public name -> lrt.pipeline function (not `build` / `emulate`: those names are the
# compiler driver module and the emulator package)
_PIPELINE = {"make_firmware": "build", "run_online": "emulate", "load_build": "load_build"}


def __getattr__(name: str) -> Any:
    if name in _PIPELINE:
        from lrt import pipeline

        return getattr(pipeline, _PIPELINE[name])
    raise AttributeError(f"module 'lrt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PIPELINE})

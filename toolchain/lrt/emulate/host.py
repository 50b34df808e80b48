"""The host emulator: the firmware built for the "host" board is a native executable that
serves the wire protocol on stdin/stdout; this runner starts it with pipes.

Command-line contract with the host firmware (bsp/host): ``--nvm PATH`` keeps the weight
store in a file that survives the process (otherwise RAM); ``--format`` wipes a store that
holds another model's sets (without it the firmware refuses such a store: exit status 6, the
file untouched); other arguments are passed through unchanged.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from lrt.emulate.base import PipeTransport, Runner
from lrt.errors import UserError


class HostRunner(Runner):
    name = "host"

    def __init__(
        self,
        firmware: Path | str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        nvm_path: Path | str | None = None,
        format_store: bool = False,
    ) -> None:
        self.firmware = Path(firmware)
        self.args = list(args)
        if nvm_path is not None:
            self.args += ["--nvm", str(nvm_path)]
        if format_store:
            self.args.append("--format")
        self.env = dict(env) if env is not None else None

    def argv(self) -> list[str]:
        return [str(self.firmware.resolve()), *self.args]

    def open(self) -> PipeTransport:
        if not self.firmware.is_file():
            raise UserError(f"host firmware {self.firmware} does not exist (run lrt-build)")
        try:
            proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                env=self.env,
            )
        except OSError as exc:
            raise UserError(f"cannot start {self.firmware}: {exc}") from None
        return PipeTransport(proc, name=f"host firmware {self.firmware.name}")

"""Console scripts: lrt-build, lrt-emulate, lrt-flash, lrt-experiment, lrt-pull, lrt-push.

Thin: parse arguments, call the library, print. User errors (lrt.errors.UserError) become
one line `error: ...` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lrt import console
from lrt.boards import EMULATORS
from lrt.config import SCHEMES, parse_setting
from lrt.errors import DeviceError, UserError


def _one_line(text: str) -> str:
    """A message on one line, whatever line breaks the user's input put into it."""
    return " ".join(text.splitlines())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # one line, like every other user error (the usage is one --help away)
        print(f"error: {_one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        action="store_true",
        help="with --nvm: re-initialise the image, whatever it holds (its weight sets are "
        "lost): one of another model, or a device to start over",
    )


def _add_emulator(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--emulator",
        choices=EMULATORS,
        default="auto",
        help="where the firmware runs (default %(default)s: the build's board decides)",
    )


def _add_port(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--port",
        help=f"{what} the board on this serial port (e.g. /dev/ttyACM0), which runs the "
        "build's firmware (flashed with lrt-flash)",
    )
    p.add_argument("--baud", type=int, help="with --port: the line's rate (default: the board's)")


def _run(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        if getattr(args, "quiet", False) and getattr(args, "verbose", False):
            raise UserError("--quiet prints nothing but errors, --verbose more: give one")
        status = fn(args)
        # flushed here, not at exit, so a reader that went away (`| head`) is caught below
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # the reader of stdout is gone: the interpreter's own flush at exit must not fail too
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a real file (captured in-process)
            pass
        return 141  # what a shell reports for a writer killed by SIGPIPE
    except UserError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except DeviceError as exc:
        if console.verbose():
            raise
        print(f"error: the device failed: {_one_line(str(exc))} "
              "(LRT_VERBOSE=1 shows the traceback)", file=sys.stderr)  # fmt: skip
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ---- lrt-build -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lrt-build",
        description="Train/quantize (or import a .tflite), generate C firmware, build it.",
    )
    p.add_argument(
        "--board",
        default="host",
        help="board name (see --list-boards; LRT_BOARD_PATH adds directories) or a .toml path "
        "(default %(default)s)",
    )
    p.add_argument("--list-boards", action="store_true", help="print the known boards and exit")
    p.add_argument(
        "--preset",
        choices=("mcu", "paper", "tiny", "mcu-bn", "paper-bn"),
        help="network preset (default mcu)",
    )
    p.add_argument("--model", type=Path, help="use this full-integer .tflite instead of training")
    p.add_argument(
        "--config", type=Path, help="TOML build config (fields of lrt.config.BuildConfig)"
    )
    p.add_argument(
        "--scheme",
        choices=SCHEMES,
        help="on-device training scheme (default lrt-maxnorm; inference for imported models)",
    )
    p.add_argument(
        "--dataset",
        help="mnist5k (shipped, default), mnist (needs --data-dir), fashion, or FILE.npz: your "
        "images (x_train, y_train, x_test, y_test; any size, channels and classes)",
    )
    p.add_argument("--data-dir", type=Path, help="directory with MNIST idx files or mnist.npz")
    p.add_argument(
        "--epochs",
        type=int,
        help="offline training epochs (default: preset's; 0: none, start from the initial weights)",
    )
    p.add_argument("--seed", type=int, help="seed for data split, training and on-device RNG")
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, e.g. --set rank=8 lr=0.005 (repeatable; beats --config)",
    )
    p.add_argument(
        "--train-layers",
        help="comma-separated weight layer names to train on device, or 'last:N' (default all)",
    )
    p.add_argument("--out", type=Path, required=False, help="output directory")
    _output_flags(p, "summary (DIR/report.json has it)")
    return p


def _output_flags(p: argparse.ArgumentParser, result: str) -> None:
    p.add_argument(
        "--quiet", action="store_true", help=f"print nothing but errors: no progress, no {result}"
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's and the converter's own logs (muted by default)",
    )


def _apply_output_flags(args: argparse.Namespace) -> None:
    if args.verbose:
        os.environ["LRT_VERBOSE"] = "1"  # read by lrt.console (also in worker processes)


def _build(args: argparse.Namespace) -> int:
    from lrt import pipeline

    if args.list_boards:
        table, broken = pipeline.list_boards_text()
        print(table)
        for message in broken:
            print(f"error: {message}", file=sys.stderr)
        return 1 if broken else 0
    if args.out is None:
        raise UserError("--out DIR is required")
    for flag, value in (("--epochs", args.epochs), ("--seed", args.seed)):
        if value is not None and value < 0:
            raise UserError(f"{flag} {value}: expected >= 0")
    settings = dict(parse_setting(item) for item in args.set)
    named = {k: getattr(args, k) for k in ("preset", "scheme", "dataset", "epochs", "seed")}
    for key, flag in named.items():
        if key in settings:
            if flag is not None:
                raise UserError(f"--{key} and --set {key}=... both given; use one")
            named[key] = settings.pop(key)
    for key in ("train_layers", "data_dir"):
        if key in settings:
            raise UserError(f"use --{key.replace('_', '-')} instead of --set {key}=...")
    result = pipeline.build(
        board=args.board,
        out=args.out,
        model_path=args.model,
        config_path=args.config,
        data_dir=args.data_dir,
        train_layers=args.train_layers,
        progress=not args.quiet,
        **named,
        **settings,
    )
    if not args.quiet:
        print(result.summary())
    return 0


def build_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _apply_output_flags(args)
    return _run(_build, args)


# ---- lrt-emulate ---------------------------------------------------------------------------


def emulate_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lrt-emulate",
        description="Stream samples through built firmware (host process, QEMU or Renode).",
    )
    p.add_argument("--build", type=Path, help="directory written by lrt-build")
    p.add_argument(
        "--samples",
        type=int,
        help="online samples to stream (default 2000; a stream file: all of it)",
    )
    p.add_argument(
        "--stream",
        help="control | shift | analog | digital (the paper's environments, grown from the "
        "build's dataset; default control), or FILE.npz: your labelled samples (arrays x "
        "and y), replayed in order",
    )
    p.add_argument(
        "--segment", type=int, help="samples per environment segment (shift stream; default 10000)"
    )
    p.add_argument(
        "--seed", type=int, help="stream seed of the paper's environments (default: the build's)"
    )
    _add_emulator(p)
    p.add_argument("--json", type=Path, help="write the result as JSON here")
    p.add_argument("--markdown", type=Path, help="write the markdown report here")
    p.add_argument("--inputs", type=Path, help="int8 .npy [N,H,W,C]: run inference on these")
    p.add_argument("--dump-logits", type=Path, help="with --inputs: save int8 logits [N,classes]")
    p.add_argument("--nvm", type=Path, help="NVM image file (persistent across runs)")
    _add_format(p)
    _add_port(p, "stream through")
    p.add_argument(
        "--nvm-report",
        type=Path,
        help="inspect this NVM image and exit (with --build: by that build's geometry, with "
        "programs per cell of each layer); exit status 1 if the image is not a sound weight "
        "store",
    )
    _output_flags(p, "printed report (--json/--markdown write it)")
    return p


def _check_port_flags(args: argparse.Namespace) -> None:
    if args.baud is not None and args.port is None:
        raise UserError("--baud sets the rate of --port TTY, which is not given")


def _emulate(args: argparse.Namespace) -> int:
    from lrt import pipeline

    _check_port_flags(args)
    if args.nvm_report is not None and args.port is not None:
        raise UserError("--nvm-report reads an image file; --port reaches a board: give one")
    if args.nvm_report is not None:
        from lrt import nvm_report, store

        geometry = None
        if args.build is not None:
            geometry = store.build_geometry(*pipeline.load_build(args.build))
        rep = store.inspect(args.nvm_report, geometry)
        print(nvm_report.render_report(rep))
        if args.build is not None:
            print(pipeline.layer_wear_text(args.build, rep))
        return 0 if nvm_report.is_sound(rep) else 1
    if args.build is None:
        raise UserError("--build DIR is required (the directory written by lrt-build)")
    for flag, value in (("--samples", args.samples), ("--segment", args.segment)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: expected >= 1")
    if args.seed is not None and not 0 <= args.seed <= 0xFFFFFFFF:
        raise UserError(f"--seed {args.seed}: expected 0..4294967295 (the firmware's seeds are "
                        "32-bit)")  # fmt: skip
    files = [(flag, path) for flag, path in (
        ("--dump-logits", args.dump_logits), ("--inputs", args.inputs), ("--json", args.json),
        ("--markdown", args.markdown), ("--nvm", args.nvm)) if path is not None]  # fmt: skip
    for i, (flag, path) in enumerate(files):
        for other, other_path in files[i + 1 :]:
            if path.resolve() == other_path.resolve():
                raise UserError(f"{flag} and {other} name the same file {path}: one would "
                                "overwrite the other")  # fmt: skip
    if args.dump_logits is not None and args.inputs is None:
        raise UserError("--dump-logits needs --inputs X.npy (the samples to run inference on)")
    if args.inputs is not None:
        if args.dump_logits is None:
            raise UserError("--inputs needs --dump-logits OUT.npy")
        stream_flags = [flag for flag, value in (
            ("--samples", args.samples), ("--stream", args.stream), ("--segment", args.segment),
            ("--seed", args.seed), ("--json", args.json), ("--markdown", args.markdown))
            if value is not None]  # fmt: skip
        if stream_flags:
            raise UserError(f"--inputs runs inference on X.npy only; {', '.join(stream_flags)} "
                            "belong to a stream run: leave them out")  # fmt: skip
        n = pipeline.infer_file(
            args.build,
            args.inputs,
            args.dump_logits,
            emulator=args.emulator,
            nvm_path=args.nvm,
            format_store=args.format,
            port=args.port,
            baud=args.baud,
        )
        if not args.quiet:
            print(f"wrote {n} logits rows to {args.dump_logits}")
        return 0
    if args.stream is not None and not args.stream.strip():
        raise UserError("--stream is empty: name an environment or a stream file")
    stream = args.stream or "control"
    if args.segment is not None and stream != "shift":
        raise UserError(f"--segment sets the length of the shift stream's mixes; stream "
                        f"{stream} has none: leave it out")  # fmt: skip
    result = pipeline.emulate(
        build_dir=args.build,
        samples=args.samples,
        stream=stream,
        segment=args.segment,
        seed=args.seed,
        emulator=args.emulator,
        json_path=args.json,
        markdown_path=args.markdown,
        nvm_path=args.nvm,
        progress=not args.quiet,
        format_store=args.format,
        port=args.port,
        baud=args.baud,
    )
    if not args.quiet:
        print(result.markdown())
    return 0


def emulate_main(argv: Sequence[str] | None = None) -> int:
    args = emulate_parser().parse_args(argv)
    _apply_output_flags(args)
    return _run(_emulate, args)


# ---- lrt-flash -----------------------------------------------------------------------------


def flash_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lrt-flash", description="Flash built firmware to a real board.")
    p.add_argument("--board", required=True, help="board name or board .toml")
    p.add_argument(
        "--build", type=Path, required=True, help="lrt-build output directory (or an ELF file)"
    )
    p.add_argument("--method", help="openocd | pyocd | pio (default: the board's)")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    return p


def _flash(args: argparse.Namespace) -> int:
    from lrt import boards, flash

    board = boards.load_board(args.board)
    cmd = flash.flash(board, args.build, dry_run=args.dry_run, method=args.method)
    if args.dry_run:
        print(shlex.join(cmd))
    return 0


def flash_main(argv: Sequence[str] | None = None) -> int:
    args = flash_parser().parse_args(argv)
    return _run(_flash, args)


# ---- lrt-pull / lrt-push -------------------------------------------------------------------


def pull_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lrt-pull",
        description="Read the weights a device learned; write them as .tflite + IR with a diff.",
    )
    p.add_argument("--build", type=Path, required=True, help="directory written by lrt-build")
    p.add_argument(
        "--nvm",
        type=Path,
        help="NVM image file (a host build's store file); needed: an emulator's store lives "
        "for one run",
    )
    p.add_argument(
        "--wire",
        action="store_true",
        help="read it over the wire protocol from the emulator booted on --nvm",
    )
    _add_emulator(p)
    _add_port(p, "read it over the wire protocol from")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the held-out accuracies (test split, field-like deformed images)")
    return p


def _pull(args: argparse.Namespace) -> int:
    from lrt import roundtrip

    _check_port_flags(args)
    res = roundtrip.pull(
        args.build,
        args.out,
        nvm_image=args.nvm,
        wire=args.wire,
        emulator=args.emulator,
        evaluate=not args.no_eval,
        port=args.port,
        baud=args.baud,
    )
    print(res.markdown())
    return 0


def pull_main(argv: Sequence[str] | None = None) -> int:
    return _run(_pull, pull_parser().parse_args(argv))


def push_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lrt-push",
        description="Commit weights (.tflite or an lrt-pull directory) on a device as a new "
        "NVM generation.",
    )
    p.add_argument("--build", type=Path, required=True, help="the device's lrt-build directory")
    p.add_argument("--weights", type=Path, required=True, help=".tflite file or lrt-pull output")
    p.add_argument(
        "--nvm",
        type=Path,
        help="NVM image of a host-emulated device; needed: an emulator's store lives for one run",
    )
    _add_format(p)
    _add_emulator(p)
    _add_port(p, "commit them on")
    return p


def _push(args: argparse.Namespace) -> int:
    from lrt import roundtrip

    _check_port_flags(args)
    res = roundtrip.push(
        args.build,
        args.weights,
        nvm_image=args.nvm,
        emulator=args.emulator,
        format_store=args.format,
        port=args.port,
        baud=args.baud,
    )
    print(
        f"pushed {res['bytes']:,d} B from {res['source']}: committed as generation "
        f"{res['generation']}"
    )
    return 0


def push_main(argv: Sequence[str] | None = None) -> int:
    return _run(_push, push_parser().parse_args(argv))


# ---- lrt-experiment ------------------------------------------------------------------------


def experiment_main(argv: Sequence[str] | None = None) -> int:
    from lrt import experiment

    args = experiment.parser(_Parser).parse_args(argv)
    return _run(experiment.run_from_args, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(build_main())

"""The two user-facing jobs: build (model -> firmware) and emulate (stream samples through it).

The CLI is a thin layer over these functions; tests call them directly too.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import operator
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lrt import boards, codegen, console, export, pio_project
from lrt import build as builder
from lrt.budget import Budget, plan_budget
from lrt.config import BATCHED_SCHEMES, LRT_SCHEMES, BuildConfig, load_config
from lrt.errors import UserError, load_failure
from lrt.model import META_FIELD_ACCURACY, Model
from lrt.presets import NetSpec, spec_for_data
from lrt.quant import snap_weight_bits
from lrt.tflite_import import import_tflite, to_tflite

if TYPE_CHECKING:
    from lrt.emulate.protocol import Stats
    from lrt.report import OnlineResult

REPORT_NAME = "report.json"


@dataclass
class BuildResult:
    out: Path
    board: str
    model_tflite: Path
    report_json: Path
    sources: Path
    firmware: Path
    budget: Budget
    accuracy: dict[str, float] = field(default_factory=dict)
    platformio: Path | None = None
    footprint: dict[str, int] | None = None
    write_budget: str | None = None
    notes: list[str] = field(default_factory=list)  # what the user may want to set
    counter_ram: int = 0  # the emulator-only per-cell write counters in the ELF's RAM

    def summary(self) -> str:
        lines = [
            f"board        {self.board}",
            f"model        {self.model_tflite}",
            f"sources      {self.sources}",
            f"firmware     {self.firmware}",
            f"report       {self.report_json}",
        ]
        if self.platformio is not None:
            lines.append(f"platformio   {self.platformio}  (pio run -d {self.platformio})")
        for k, v in self.accuracy.items():
            lines.append(f"{k:<12} {v:.4f}")
        if self.footprint:
            fp = self.footprint
            lines.append(
                f"ELF          text {fp['text']:,d} B, data {fp['data']:,d} B, bss {fp['bss']:,d} B"
                f" -> flash {fp['flash']:,d} B, RAM {fp['ram']:,d} B (stack {fp['stack']:,d} B)"
            )
            if self.counter_ram:
                lines.append(
                    f"             of which {self.counter_ram:,d} B exact per-cell write counters, "
                    "for emulator runs, outside the RAM budget (--set cell_counters=off drops "
                    "them)"
                )
        if self.write_budget:
            lines.append(f"write budget {self.write_budget}")
        lines += [f"note         {note}" for note in self.notes]
        lines.append("")
        lines.append(self.budget.table())
        return "\n".join(lines)


def list_boards_text() -> tuple[str, list[str]]:
    """The table of the boards that load, and the errors of the board files that do not."""
    found, broken = boards.scan_boards()

    def size(n: int) -> str:  # the host's budgets are unbounded
        return "-" if n >= 2**31 - 1 else f"{n // 1024:,d} KiB"

    rows = [f"{'board':<16} {'cpu':<12} {'flash':>10} {'ram':>10}  nvm     emulator"]
    for b in found:
        rows.append(
            f"{b.name:<16} {b.cpu:<12} {size(b.flash_budget):>10} {size(b.ram_budget):>10}  "
            f"{b.nvm.technology:<7} {b.emulator_name}"
        )
    if any("~" in b.emulator_name for b in found):
        rows.append("(qemu~M: QEMU machine M stands in for the board, which it does not model "
                    "fully)")  # fmt: skip
    return "\n".join(rows), broken


def _parse_train_layers(spec: str | None) -> tuple[str, ...] | None:
    if spec is None:
        return None
    return tuple(s.strip() for s in spec.split(",") if s.strip())


def apply_train_layers(model: Model, selection: tuple[str, ...]) -> None:
    """Mark layers trainable per the selection: names, or 'last:N' weight layers."""
    weight_layers = model.weight_layers()
    if not selection:
        chosen = {lay.name for lay in weight_layers}
    elif len(selection) == 1 and selection[0].startswith("last:"):
        try:
            n = int(selection[0].split(":", 1)[1])
        except ValueError:
            raise UserError(f"--train-layers {selection[0]!r}: expected last:N") from None
        if not 1 <= n <= len(weight_layers):
            raise UserError(
                f"--train-layers last:{n}: expected 1..{len(weight_layers)} (the model has "
                f"{len(weight_layers)} weight layers)"
            )
        chosen = {lay.name for lay in weight_layers[-n:]}
    else:
        names = {lay.name for lay in weight_layers}
        unknown = [s for s in selection if s not in names]
        if unknown:
            raise UserError(
                f"--train-layers: unknown layer(s) {', '.join(unknown)}; "
                f"weight layers are {', '.join(lay.name for lay in weight_layers)}"
            )
        chosen = set(selection)
    for lay in weight_layers:
        lay.trainable = lay.name in chosen


def _architecture(
    cfg: BuildConfig, model_path: Path | None, ir_dir: Path | None
) -> tuple[Model, bool]:
    """The model's architecture before any training: (model, complete). An imported .tflite
    or an earlier build's IR is the complete model; a preset is its shapes with zero
    parameters (export.architecture, no TensorFlow)."""
    if ir_dir is not None:
        return Model.load(ir_dir / "ir"), True
    if model_path is not None:
        if model_path.is_dir():
            raise UserError(f"--model {model_path} is a directory; expected a .tflite file")
        if not model_path.is_file():
            raise UserError(f"model file {model_path} not found")
        return import_tflite(model_path, name=model_path.stem), True
    return export.architecture(preset_spec(cfg)), False


def preset_spec(cfg: BuildConfig) -> NetSpec:
    """The preset's topology for the build's dataset (a dataset file's image shape and
    classes); UserError where the images are too small for it."""
    from lrt.data.datasets import dataset_shape

    shape, classes = dataset_shape(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None)
    try:
        return spec_for_data(cfg.preset, shape, classes)
    except ValueError as exc:
        h, w, c = shape
        side = min_image_side(cfg.preset)
        layout = (
            "; if the arrays are channels-first ([N, C, H, W]), move the channels last "
            "(np.moveaxis(x, 1, -1))"
            if h <= 4 < min(w, c)
            else ""
        )
        raise UserError(
            f"dataset images of {h}x{w}x{c} are too small for preset {cfg.preset!r} "
            f"({str(exc).partition(': ')[2]}): its convs and pools need at least "
            f"{side}x{side}{layout}"
        ) from None


def min_image_side(preset: str) -> int:
    """The smallest square image the preset's convs and pools can take."""
    spec = spec_for_data(preset, (28, 28, 1), 10)
    for side in range(1, 1024):
        try:
            spec_for_data(spec, (side, side, 1), spec.num_classes)
        except ValueError:
            continue
        return side
    raise AssertionError(f"preset {preset} takes no image up to 1023x1023")


# The LRT settings that trade accuracy for RAM (docs/RESULTS.md, known limits): blocks of 8
# columns, no exact sums of the narrow convs' gradients, no classifier residual; every
# combination of them is a saver.
_RAM_SAVINGS: tuple[tuple[str, float], ...] = (
    ("lrt_block", 8),
    ("lrt_conv_sum", 0),
    ("head_lr", 0),
)
LRT_RAM_SAVERS: tuple[dict[str, float], ...] = tuple(
    dict(combo)
    for size in range(1, len(_RAM_SAVINGS) + 1)
    for combo in itertools.combinations(_RAM_SAVINGS, size)
)


def _smaller_lrt(model: Model, cfg: BuildConfig, brd: Any, budget: Budget) -> str | None:
    """For an LRT build over the board's RAM (and fitting otherwise): the saver that changes
    the least RAM among those that fit, as the --set a user would add; None if none fits."""
    if cfg.scheme not in LRT_SCHEMES or budget.ram <= brd.ram_budget:
        return None
    if budget.flash > brd.flash_budget:
        return None
    now = {
        "lrt_block": cfg.lrt_block,
        "lrt_conv_sum": int(cfg.conv_sum),
        "head_lr": codegen.head_rate(model, cfg),
    }
    fits: list[tuple[int, dict[str, float]]] = []
    for saver in LRT_RAM_SAVERS:
        # a saver narrows the blocks (never widens them) and names only what it changes
        wanted = {k: min(v, now[k]) if k == "lrt_block" else v for k, v in saver.items()}
        change = {k: v for k, v in wanted.items() if v != now[k]}
        if not change or any(change == f[1] for f in fits):
            continue
        alt = plan_budget(model, cfg.with_overrides(**change), brd)
        if alt.ram < budget.ram and not alt.problems(brd):
            fits.append((alt.ram, change))
    if not fits:
        return None
    ram, saver = max(fits, key=lambda f: f[0])
    flags = " ".join(f"{k}={v}" for k, v in saver.items())
    return (
        f"with --set {flags} it needs {ram:,d} B and fits (less RAM for some accuracy, "
        "mostly under drift)"
    )


def _fewer_layers(model: Model, cfg: BuildConfig, brd: Any, budget: Budget) -> str | None:
    """For a training build over the board's RAM (and fitting otherwise): the most weight
    layers, counted from the classifier back, that can learn within it, as the
    --train-layers a user would add; None if not even the last one fits."""
    n = sum(lay.trainable for lay in model.weight_layers())
    if cfg.scheme == "inference" or budget.ram <= brd.ram_budget or n < 2:
        return None
    if budget.flash > brd.flash_budget:
        return None
    trial = copy.deepcopy(model)
    for k in range(n - 1, 0, -1):
        apply_train_layers(trial, (f"last:{k}",))
        alt = plan_budget(trial, cfg, brd)
        if not alt.problems(brd):
            return (
                f"with --train-layers last:{k} (the last {k} weight layers learn, the others "
                f"keep their offline weights) it needs {alt.ram:,d} B and fits"
            )
    return None


def check_fits(model: Model, cfg: BuildConfig, brd: Any) -> Budget:
    """Everything that can refuse a build from the model's shapes alone, before training:
    the scheme against the model's scales, the --train-layers selection, what the board's
    NVM can serve, and the RAM/flash budget. Marks the selected layers trainable."""
    if cfg.scheme != "inference" and not model.power_of_two:
        raise UserError(
            f"scheme {cfg.scheme!r} needs power-of-two scales (models trained by lrt have them); "
            "this imported model has arbitrary scales: use --scheme inference"
        )
    from lrt.emulate.protocol import MAX_PAYLOAD

    values = int(np.prod(model.input_shape))
    if values >= MAX_PAYLOAD:  # a TRAIN request carries the sample and its label byte
        shape = "x".join(map(str, model.input_shape))
        raise UserError(
            f"the model's input of {shape} = {values:,d} values is more than one request "
            f"of the wire protocol carries ({MAX_PAYLOAD - 1:,d} values and the label in its "
            f"{MAX_PAYLOAD:,d}-byte payload): use smaller inputs (e.g. downscaled images)"
        )
    apply_train_layers(model, cfg.train_layers)
    budget = plan_budget(model, cfg, brd)
    problems = budget.problems(brd)
    _, nvm_problem = codegen.nvm_store(model, cfg, brd)
    if nvm_problem:
        problems.append(nvm_problem)
    if problems:
        hint = None
        if not nvm_problem:
            hint = _smaller_lrt(model, cfg, brd, budget) or _fewer_layers(model, cfg, brd, budget)
        raise UserError("model does not fit: " + "; ".join(problems + ([hint] if hint else [])))
    codegen.check_board(model, cfg, brd)  # the scheme against the board's memory technology
    return budget


def _obtain_model(
    cfg: BuildConfig,
    arch: Model,
    complete: bool,
    model_path: Path | None,
    ir_dir: Path | None,
    out: Path,
    progress: bool,
) -> tuple[Model, dict[str, float]]:
    tflite_out = out / "model.tflite"
    if complete:
        source = ir_dir / "model.tflite" if ir_dir is not None else model_path
        assert source is not None
        if source.resolve() != tflite_out.resolve():
            shutil.copyfile(source, tflite_out)
        prior_path = ir_dir / REPORT_NAME if ir_dir is not None else None
        # an earlier build's offline-trained model is reused (experiments share one per seed)
        prior = (
            json.loads(prior_path.read_text()) if prior_path and prior_path.is_file() else {}
        )
        return arch, dict(prior.get("accuracy", {}))
    from lrt import train
    from lrt.data import load_dataset

    ds = load_dataset(
        cfg.dataset,
        Path(cfg.data_dir) if cfg.data_dir else None,
        seed=cfg.seed,
        augment_train=cfg.augment_train,
    )
    res = train.train_model(
        preset_spec(cfg),
        ds.x_train,
        ds.y_train,
        ds.x_val,
        ds.y_val,
        ds.x_test,
        ds.y_test,
        epochs=cfg.epochs,
        seed=cfg.seed,
        progress=progress,
    )
    tflite_out.write_bytes(res.tflite)
    acc = {"float_acc": res.float_accuracy, "int8_acc": res.int8_accuracy}
    if META_FIELD_ACCURACY in res.model.meta:  # deformed test digits (the gate's reference)
        acc["field_acc"] = float(res.model.meta[META_FIELD_ACCURACY])
    return res.model, acc


def _snap_weight_bits(model: Model, bits: int, tflite_out: Path) -> None:
    """Put every weight layer on the ``bits``-wide grid (the .tflite follows the IR)."""
    for lay in model.layers:
        if lay.has_weights:
            lay.weights = snap_weight_bits(lay.weights, bits)  # type: ignore[arg-type]
    model.meta["weight_bits"] = bits
    tflite_out.write_bytes(to_tflite(model))


def build(
    board: str,
    out: Path | str,
    preset: str | None = None,
    model_path: Path | str | None = None,
    config_path: Path | str | None = None,
    scheme: str | None = None,
    dataset: str | None = None,
    data_dir: Path | str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    train_layers: str | None = None,
    progress: bool = False,
    ir_dir: Path | str | None = None,
    **config_overrides: Any,
) -> BuildResult:
    """`lrt-build` as a function: train (or import `model_path`, a full-integer .tflite),
    quantize, generate the C firmware for `board` into `out` and compile it.

    The keywords are lrt-build's options (`config_path`: --config; `ir_dir`: a saved model
    IR instead of training) and, as `config_overrides`, any field of `lrt.config.BuildConfig`
    (what --set gives, e.g. ``rank=2, lifetime_years=10``). `progress` prints lrt-build's
    stage lines to stderr. Raises `lrt.UserError` for any input it refuses (unknown board,
    model over the board's RAM or flash, bad setting, corrupt model), before writing.
    """
    brd = boards.load_board(board)
    out = Path(out).resolve()
    model_path = Path(model_path) if model_path is not None else None
    data_dir = Path(data_dir) if data_dir is not None else None
    ir_dir = Path(ir_dir) if ir_dir is not None else None
    if model_path is not None and (preset is not None or epochs is not None):
        flags = [flag for flag, value in (("--preset", preset), ("--epochs", epochs))
                 if value is not None]  # fmt: skip
        one = len(flags) == 1
        raise UserError(
            f"{' and '.join(flags)} {'is an option' if one else 'are options'} of training; "
            "--model imports a trained model (its .tflite fixes the architecture and the "
            f"weights): leave {'it' if one else 'them'} out"
        )
    cfg = load_config(
        config_path,
        # an imported model infers unless the config file or the caller names a scheme
        default_scheme="inference" if model_path is not None else None,
        preset=preset,
        scheme=scheme,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        epochs=epochs,
        seed=seed,
        train_layers=_parse_train_layers(train_layers),
        **config_overrides,
    )
    if train_layers is not None and cfg.scheme == "inference":
        raise UserError(
            "--train-layers picks the layers that learn on the device; scheme inference "
            "learns none: name a training scheme (--scheme), or leave --train-layers out"
        )
    # every input is checked before anything is written
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, expected a directory")
    codegen.check_source_dir(out / "src")
    t0 = time.monotonic()
    arch, complete = _architecture(cfg, model_path, ir_dir)
    from lrt.data.datasets import dataset_shape
    from lrt.data.userdata import file_digest, is_data_file

    if complete and is_data_file(cfg.dataset):  # the streams and held-out figures read it
        check_dataset_fits(
            Path(cfg.dataset).name, *dataset_shape(cfg.dataset), arch,
            remedy="give --dataset a file of the model's shape and classes, or leave it out and "
            "stream your labelled samples with lrt-emulate --stream FILE.npz",
        )  # fmt: skip
    if not complete:
        from lrt import tfkeras

        if not tfkeras.training_available():
            raise UserError(tfkeras.TRAIN_EXTRA_MISSING)
    # refuse what cannot fit from the architecture, before minutes of training
    budget = check_fits(arch, cfg, brd)
    console.Progress("check", enabled=progress).done(
        f"{arch.name} ({cfg.scheme}) fits {brd.name}: RAM {budget.ram:,d} B"
        + (f" of {brd.ram_budget:,d} B" if not brd.is_host else "")
        + f", flash {budget.flash:,d} B"
        + (f" of {brd.flash_budget:,d} B" if not brd.is_host else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    with console.native_quiet():
        model, accuracy = _obtain_model(cfg, arch, complete, model_path, ir_dir, out, progress)
    apply_train_layers(model, cfg.train_layers)
    if cfg.weight_bits < 8:
        _snap_weight_bits(model, cfg.weight_bits, out / "model.tflite")
    model.save(out / "ir")
    pol = _policy(cfg, brd, model)
    src = out / "src"
    counters = {"on": True, "off": False}.get(cfg.cell_counters) or (
        cfg.cell_counters == "auto" and budget.counters_fit(brd)
    )
    codegen.generate(model, cfg, brd, src, counters=counters)
    line = console.Progress("compile", enabled=progress)
    fw = builder.build_firmware(out, brd)
    line.done(f"{fw.executable.relative_to(out)} for {brd.name} ({line.seconds():.1f} s)")
    pio_ini = None
    if brd.platformio is not None and not brd.is_host:
        # the same sources as a PlatformIO project, for users who flash with PlatformIO
        pio_ini = pio_project.write_pio_project(out, brd, out / "pio")
    report: dict[str, Any] = {
        "board": brd.name,
        "board_file": str(brd.path),
        # what the firmware was built with: the residual's rate is 0 on a frozen classifier
        "config": {**cfg.resolved(), "head_lr": codegen.head_rate(model, cfg)},
        "model": {
            "name": model.name,
            "preset": model.preset,
            "fingerprint": model.fingerprint(),
            "params": model.num_params(),
            "power_of_two": model.power_of_two,
            # None for an imported .tflite: its training happened elsewhere
            "trained_with": model.meta.get("trained_with"),
            "layers": [
                {
                    "name": lay.name,
                    "kind": lay.kind,
                    "in": list(lay.in_shape),
                    "out": list(lay.out_shape),
                    "params": (int(lay.weights.size) + int(lay.bias.size))  # type: ignore[union-attr]
                    if lay.has_weights
                    else 0,
                    "trainable": lay.trainable and lay.has_weights,
                }
                for lay in model.layers
            ],
        },
        "accuracy": accuracy,
        # a dataset file is read again by lrt-emulate, lrt-pull and experiments: its content
        # at build time, so a file changed since is refused rather than silently streamed
        "dataset_sha256": file_digest(cfg.dataset) if is_data_file(cfg.dataset) else None,
        "budget": budget.to_dict(),
        "firmware": str(fw.executable.relative_to(out)),
        # lrt-emulate checks the file against it before the firmware opens a weight store
        "firmware_sha256": hashlib.sha256(fw.executable.read_bytes()).hexdigest(),
        "footprint": fw.footprint.to_dict() if fw.footprint else None,
        "exact_write_counters": counters,
        "platformio_project": str(pio_ini.parent.relative_to(out)) if pio_ini else None,
        "blob_size": codegen.blob_layout(model).size,
        "write_policy": asdict(pol),
        "build_seconds": round(time.monotonic() - t0, 1),
    }
    report_path = out / REPORT_NAME
    report_path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return BuildResult(
        out=out,
        board=brd.name,
        model_tflite=out / "model.tflite",
        report_json=report_path,
        sources=src,
        firmware=fw.executable,
        budget=budget,
        accuracy=accuracy,
        platformio=pio_ini.parent if pio_ini else None,
        footprint=report["footprint"],
        write_budget=(
            f"one weight commit per {pol.samples_per_commit:,d} samples "
            f"({cfg.lifetime_years:g} years at {cfg.sample_rate_hz:g} samples/s)"
            if pol.samples_per_commit
            else None
        ),
        notes=_notes(cfg, model),
        counter_ram=budget.counter_ram if counters else 0,
    )


def _notes(cfg: BuildConfig, model: Model) -> list[str]:
    """Settings the build had to guess (printed under the summary)."""
    from lrt.policy import held_out_error

    notes = []
    gated = cfg.scheme in BATCHED_SCHEMES and cfg.policy_name == "gated" and cfg.gate_errors > 0
    imported = model.meta.get("source") == "tflite"  # (a model trained here may lack it by
    # design: held_out_error gives no reference for one not trained offline)
    if gated and imported and cfg.gate_rate is None and held_out_error(model.meta) is None:
        notes.append(
            "the error gate has no reference error rate (the model carries no held-out "
            "accuracy, as lrt's own .tflite files do): every misprediction counts toward a "
            "write; --set gate_rate=R with the model's error rate on field-like data"
        )
    defaults = BuildConfig()
    unused = [f"{key} = {getattr(cfg, key)!r}" for key in ("preset", "epochs")
              if imported and getattr(cfg, key) != getattr(defaults, key)]
    if unused:
        notes.append(
            f"{' and '.join(unused)} of the config file not used: --model's .tflite fixes "
            "the network and its weights"
        )
    return notes


# the fields of report.json the commands read, with their types
_REPORT_FIELDS: dict[str, type | tuple[type, ...]] = {"board": str, "firmware": str, "config": dict}
_REPORT_CONFIG_FIELDS: dict[str, type | tuple[type, ...]] = {
    "dataset": str, "data_dir": (str, type(None)), "seed": int, "scheme": str,
}


def read_report(path: Path, config: bool = True) -> dict[str, Any]:
    """A build's report.json, checked for the fields the commands use (UserError if not);
    config=False: board and firmware only (lrt-flash)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable lrt build report ({exc})") from None
    checks = [(_REPORT_FIELDS, report), (_REPORT_CONFIG_FIELDS, None)] if config else [
        ({k: _REPORT_FIELDS[k] for k in ("board", "firmware")}, report)]
    for fields, where in checks:
        if where is None:
            where = report["config"]
        if not isinstance(where, dict):
            raise UserError(f"{path}: not an lrt build report (not a JSON object)")
        for key, kind in fields.items():
            if not isinstance(where.get(key), kind) or isinstance(where.get(key), bool):
                raise UserError(f"{path}: field {key!r} missing or of the wrong type")
    rate = report["config"].get("sample_rate_hz", 1.0) if config else 1.0
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
        raise UserError(f"{path}: field 'sample_rate_hz' must be a number > 0, got {rate!r}")
    return report


def _policy(cfg: BuildConfig, brd: Any, model: Model) -> Any:
    """The firmware's write policy (the budget needs the store's slot count)."""
    from lrt.policy import held_out_error, policy_of

    endurance, slots = _nvm_facts_of(brd, model)
    return policy_of(cfg, endurance, slots or 2, held_out_error(model.meta))


def load_build(build_dir: Path | str) -> tuple[dict[str, Any], Model]:
    """A build directory's report.json (checked) and model IR, from the same model (UserError
    if the directory is not a complete lrt build)."""
    build_dir = Path(build_dir)
    report_path = build_dir / REPORT_NAME
    if build_dir.is_file():
        raise UserError(f"{build_dir} is a file; --build names the directory lrt-build wrote")
    if not report_path.is_file():
        raise UserError(
            f"{build_dir} is not an lrt build directory (no {REPORT_NAME}); run lrt-build"
        )
    report = read_report(report_path)
    if not (build_dir / "ir" / "model.json").is_file():
        raise UserError(f"{build_dir} has no ir/model.json: rebuild it with lrt-build")
    try:
        model = Model.load(build_dir / "ir")
        fingerprint = model.fingerprint()
    except Exception as exc:  # a damaged IR fails in numpy, zipfile, json or the dataclasses
        raise UserError(
            f"{build_dir}/ir: not a readable model ({type(exc).__name__}: {load_failure(exc)})"
        ) from None
    built_from = report.get("model", {}).get("fingerprint") if isinstance(
        report.get("model"), dict) else None
    if built_from is not None and built_from != fingerprint:
        raise UserError(
            f"{build_dir}/ir is not the model this build's firmware was generated from "
            f"(fingerprint {fingerprint}, the build's {built_from}): rebuild with lrt-build"
        )
    return report, model


INFER_SHARD_MIN = 256  # samples per emulator process below which another process does not pay


def infer_file(
    build_dir: Path,
    inputs: Path,
    out: Path,
    emulator: str = "auto",
    nvm_path: Path | None = None,
    format_store: bool = False,
    jobs: int | None = None,
    port: str | None = None,
    baud: int | None = None,
) -> int:
    """Logits of every input, saved to out. With nvm_path (host emulator) the device runs on
    the weights stored in that image, as it would boot. Inference does not change the device,
    so without an image the inputs are split over up to ``jobs`` emulator processes (default:
    one per core) that run side by side; the rows come back in input order, the same bits as
    one process."""
    from concurrent.futures import ThreadPoolExecutor

    from lrt.emulate import open_device
    from lrt.emulate import protocol as P
    from lrt.store import check_path

    report, model = load_build(build_dir)
    check_path(inputs, "--inputs", must_exist=True)
    check_output("--dump-logits", Path(out), Path(build_dir))
    try:
        x = np.load(inputs, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a corrupt file
        raise UserError(f"{inputs}: not a readable .npy file ({load_failure(exc)})") from None
    shape = tuple(model.input_shape)
    if x.dtype != np.int8:
        raise UserError(f"{inputs}: dtype {x.dtype}, expected int8 (quantized inputs)")
    given = list(x.shape)  # as the user wrote it, before a single sample gets its batch axis
    if x.ndim == len(shape):
        x = x[None]
    if tuple(x.shape[1:]) != shape:
        raise UserError(f"{inputs}: shape {given}, expected [N, {', '.join(map(str, shape))}]")
    if x.shape[0] == 0:
        raise UserError(f"{inputs}: no samples")
    # one image (or one board) is one device: it cannot be shared by several processes
    n_jobs = 1 if nvm_path is not None or port is not None else max(
        1, min(jobs or os.cpu_count() or 1, len(x) // INFER_SHARD_MIN)
    )

    def run(shard: tuple[int, np.ndarray]) -> np.ndarray:
        start, part = shard
        with open_device(build_dir, report, emulator=emulator, nvm_path=nvm_path,
                         format_store=format_store, port=port, baud=baud) as dev:  # fmt: skip
            n_classes = dev.hello().n_classes
            replies = dev.stream([P.infer_request(row.tobytes()) for row in part])
        rows = np.empty((len(part), n_classes), dtype=np.int8)
        for i, (msg_type, payload) in enumerate(replies):
            body = P.check_reply(P.MsgType.INFER, msg_type, payload, f"input {start + i}")
            rows[i] = P.parse_prediction(body, n_classes)[0]
        return rows

    flat = np.ascontiguousarray(x).reshape(len(x), -1)
    parts = np.array_split(flat, n_jobs)
    starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
    with ThreadPoolExecutor(n_jobs) as pool:
        logits = np.concatenate(list(pool.map(run, zip(starts.tolist(), parts, strict=True))))
    try:
        with open(out, "wb") as fh:  # a file object: np.save appends .npy to a bare name
            np.save(fh, logits.astype(np.int8))
    except OSError as exc:
        raise UserError(f"--dump-logits {out}: cannot write it ({exc.strerror})") from None
    return int(logits.shape[0])


def qemu_instructions_per_sample(
    build_dir: Path, report: dict[str, Any], xq: np.ndarray, y: np.ndarray, k1: int = 2, k2: int = 6
) -> float | None:
    """Exact guest instructions per online sample on the board's QEMU machine (TCG plugin):
    (count(k2 samples) - count(k1 samples)) / (k2 - k1), so boot and exit cancel out.
    None for boards without a QEMU machine."""
    from lrt.emulate import protocol as P
    from lrt.emulate.qemu import count_instructions

    board = boards.load_build_board(report)
    if board.is_host or not board.emulator.qemu or len(xq) < k2:
        return None
    elf = build_dir / report["firmware"]

    def frames(k: int) -> bytes:
        body = b"".join(P.train_request(xq[i].tobytes(), int(y[i])) for i in range(k))
        return P.hello_request() + body + P.bye_request()

    a = count_instructions(board, elf, frames(k1)).total
    b = count_instructions(board, elf, frames(k2)).total
    return (b - a) / (k2 - k1)


def layer_wear_text(build_dir: Path, rep: Any) -> str:
    """Max programs per cell of every weight layer, read from an NVM image's wear table."""
    _, model = load_build(build_dir)
    layout = codegen.blob_layout(model)
    rows = ["Programs per cell (max over slots) by weight layer:"]
    for i, lay in enumerate(model.layers):
        if lay.has_weights:
            n = int(lay.weights.size)  # type: ignore[union-attr]
            rows.append(f"  {lay.name:<12} {rep.max_range(layout.w_offset[i], n)}")
    return "\n".join(rows)


def _nvm_facts(report: dict[str, Any], model: Model) -> tuple[int, int]:
    """(endurance, slots) of the build's weight store."""
    return _nvm_facts_of(boards.load_build_board(report), model)


def _nvm_facts_of(board: Any, model: Model) -> tuple[int, int]:
    try:
        geo = codegen.nvm_geometry(board, codegen.blob_layout(model).size)
        return int(board.nvm.endurance), geo.layout().n_slots
    except ValueError:
        return int(board.nvm.endurance), 0


DRIFT_PERIOD = 10  # the paper's d: drift is applied every d samples


def check_output(flag: str, path: Path, build_dir: Path) -> None:
    """An output file a command writes: in an existing folder, writable, not a file of the
    build."""
    from lrt.emulate import refuse_build_file
    from lrt.store import check_path

    check_path(path, flag, must_exist=False)
    refuse_build_file(build_dir, flag, path)
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    if not writable:
        raise UserError(f"{flag} {path}: cannot write it (permission denied)")


def check_dataset_unchanged(report: dict[str, Any]) -> None:
    """UserError where the build's dataset file no longer holds what it held at build time."""
    from lrt.data.userdata import file_digest, is_data_file

    dataset, recorded = report["config"]["dataset"], report.get("dataset_sha256")
    if recorded and is_data_file(dataset) and file_digest(dataset) != recorded:
        raise UserError(
            f"dataset file {dataset} changed since the build (sha256 {recorded[:12]}... at build "
            "time): its streams and held-out figures would not be the build's; restore the file "
            "or rebuild with lrt-build"
        )


STREAM_A_FILE = (
    "the paper's streams grow from the dataset, so stream your own labelled samples "
    "(--stream FILE.npz) or build with --dataset FILE.npz"
)


def dataset_fits(shape: tuple[int, ...], classes: int, model: Model) -> bool:
    """Whether a dataset of images of ``shape`` in ``classes`` classes can feed ``model``."""
    return tuple(shape) == tuple(model.input_shape) and classes <= model.num_classes


def check_dataset_fits(
    name: str, shape: tuple[int, int, int], classes: int, model: Model, remedy: str = STREAM_A_FILE
) -> None:
    """UserError where dataset ``name``'s images or classes do not fit ``model``."""
    if not dataset_fits(shape, classes, model):
        has = "x".join(map(str, shape))
        takes = "x".join(map(str, model.input_shape))
        raise UserError(
            f"this build's model takes {takes} samples in {model.num_classes} classes; its "
            f"dataset {name} has {has} images in {classes}: {remedy}"
        )


# share of a float stream file's values beyond the model's input range that is refused
OUTSIDE_INPUT_RANGE = 0.01


def _file_samples(path: str, samples: int | None, model: Model) -> tuple[int, _Samples]:
    """(samples to stream, their quantized blocks) of a labelled stream file."""
    from lrt.data.userdata import pixels, read_stream_file

    x, y = read_stream_file(path, model.input_shape, model.num_classes)
    n = len(y) if samples is None else samples
    if n > len(y):
        raise UserError(f"{n} samples asked for; stream file {path} holds {len(y)}")
    if np.issubdtype(x.dtype, np.floating):
        # floats are the model's real input values: a file scaled otherwise (0..255, or -1..1
        # for a model that takes 0..2) would be clipped by the quantization without a word
        q = model.input_q
        lo, hi = q.scale * (-128 - q.zero_point), q.scale * (127 - q.zero_point)
        outside = float(np.mean((x[:n] < lo - q.scale / 2) | (x[:n] > hi + q.scale / 2)))
        if outside > OUTSIDE_INPUT_RANGE:
            raise UserError(
                f"stream file {path}: {outside:.0%} of the x values lie outside the model's input "
                f"range [{lo:g}, {hi:g}] (x spans [{float(x[:n].min()):g}, "
                f"{float(x[:n].max()):g}]): scale them to that range, or store uint8 pixels "
                "(taken as 0..255 -> [0, 1]) or int8 quantized inputs"
            )

    def quantized(lo: int) -> np.ndarray:
        part = x[lo : min(n, lo + STREAM_WINDOW)]
        if part.dtype == np.int8:
            return np.asarray(part)
        if part.dtype == np.uint8:
            part = pixels(part)
        return model.quantize_input(part)

    windows = range(0, n, STREAM_WINDOW)
    return n, _Samples((quantized(lo), y[lo : min(n, lo + STREAM_WINDOW)]) for lo in windows)


def _drift_request(stream: str) -> tuple[int, int] | None:
    """(kind, param) of the DRIFT request for the paper's drift environments."""
    from lrt import nvm_drift

    if stream == "analog":
        return 1, nvm_drift.analog_drift_sigma_q16(10.0, DRIFT_PERIOD)
    if stream == "digital":
        return 2, nvm_drift.digital_drift_p_q32(10.0, DRIFT_PERIOD)
    return None


STREAM_WINDOW = 10_000  # samples made, held and sent at a time by emulate
STREAM_BYTES = 20_000_000  # at most about this many bytes of requests in a window


class _Samples:
    """Consecutive samples of a stream's blocks, taken in any amounts."""

    def __init__(self, blocks: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
        self.blocks = blocks
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.held = 0

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        while self.held < n:
            x, y = next(self.blocks)
            self.x.append(x)
            self.y.append(y)
            self.held += len(y)
        x, y = np.concatenate(self.x), np.concatenate(self.y)
        # the rest as copies: a view would keep the whole concatenation alive
        self.x, self.y, self.held = [x[n:].copy()], [y[n:].copy()], len(y) - n
        return x[:n], y[:n]


def _count(name: str, value: Any) -> int:
    """value as an int >= 1 (numpy integers too), else UserError naming it."""
    try:
        number = operator.index(value)
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise UserError(f"{name} {value!r}: expected an integer >= 1")
    return number


def _window_requests(
    xq: np.ndarray,
    y: np.ndarray,
    w_start: int,
    samples: int,
    chunk: int,
    drift: tuple[int, int] | None,
    st_seed: int,
    stats_every: int | None,
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """The requests of one window of the stream (its samples xq, y start at sample w_start):
    a TRAIN per sample and, after every chunk, the DRIFT and STATS requests due there (one
    closing STATS after the last sample). Returns the frames and their plan: (request type,
    the sample it trains, or the samples trained when it is sent; -1 for the closing STATS)."""
    from lrt.emulate import protocol as P

    frames: list[bytes] = []
    plan: list[tuple[int, int]] = []
    w_stop = w_start + len(y)
    for start in range(w_start, w_stop, chunk):
        stop = min(start + chunk, samples)
        for i in range(start, stop):
            frames.append(P.train_request(xq[i - w_start].tobytes(), int(y[i - w_start])))
            plan.append((P.MsgType.TRAIN, i))
        if drift:
            seed_i = (st_seed * 1_000_003 + stop) & 0xFFFFFFFF
            frames.append(P.drift_request(drift[0], seed_i, drift[1]))
            plan.append((P.MsgType.DRIFT, stop))
        if stats_every and (stop % stats_every < chunk or stop == samples):
            frames.append(P.stats_request())
            plan.append((P.MsgType.STATS, stop))
    if w_stop == samples:
        frames.append(P.stats_request())
        plan.append((P.MsgType.STATS, -1))
    return frames, plan


def _read_replies(
    plan: list[tuple[int, int]],
    replies: list[tuple[int, bytes]],
    samples: int,
    n_classes: int,
    preds: np.ndarray,
    curve: list[tuple[int, int, int]],
) -> Stats | None:
    """Check a window's replies against its plan (a refusal raises, naming the sample): the
    predictions go into preds, the write counters sampled along the way into curve. Returns
    the window's last write statistics (lrt.emulate.protocol.Stats), or None."""
    from lrt.emulate import protocol as P

    stats = None
    for (req, at), (msg_type, payload) in zip(plan, replies, strict=True):
        where = f"sample {at} of {samples}" if req == P.MsgType.TRAIN else f"after {at} samples"
        body = P.check_reply(req, msg_type, payload, where)
        if req == P.MsgType.TRAIN:
            preds[at] = P.parse_prediction(body, n_classes)[1]
        elif req == P.MsgType.STATS:
            stats = P.Stats.parse(body)
            if at >= 0:
                curve.append((at, max(lay.max_writes for lay in stats.layers),
                              max(lay.paper_max_writes for lay in stats.layers)))  # fmt: skip
    return stats


def emulate(
    build_dir: Path | str,
    samples: int | None = None,
    stream: str = "control",
    segment: int | None = None,
    seed: int | None = None,
    emulator: str = "auto",
    json_path: Path | str | None = None,
    markdown_path: Path | str | None = None,
    nvm_path: Path | str | None = None,
    progress: bool = False,
    stats_every: int | None = None,
    format_store: bool = False,
    count_instructions: bool = True,
    last_n: int = 500,
    port: str | None = None,
    baud: int | None = None,
) -> OnlineResult:
    """`lrt-emulate` as a function: stream `samples` online samples through the firmware of
    `build_dir`: predict, then learn the label. Returns the run's `lrt.report.OnlineResult`
    (`.markdown()`, `.to_dict()`); `progress` prints the stream's progress line to stderr.
    Raises `lrt.UserError` for inputs it refuses.

    `stream` is one of the paper's environments, grown from the build's dataset by `seed`
    (default `samples`: 2000), or a labelled stream file (`.npz` with `x` and `y`, see
    `lrt.data.userdata`), replayed in its order (default `samples`: all of it).

    Drift environments (analog/digital) send a DRIFT request every DRIFT_PERIOD samples,
    which the firmware applies to its stored weights. With `stats_every`, the write counters
    are sampled along the way (the writes-vs-samples curve of the report). With `port` the
    samples go to the board on that serial port (`baud`: the board's rate), which runs the
    build's firmware; its write counters are the board's since it booted.
    """
    from lrt.data import load_dataset, stream_blocks
    from lrt.data.streams import DEFAULT_SEGMENT
    from lrt.data.userdata import is_data_file
    from lrt.emulate import open_device
    from lrt.emulate import protocol as P
    from lrt.report import OnlineResult

    last_n = _count("last_n", last_n)
    samples = None if samples is None else _count("samples", samples)
    # 0 or None: no counters along the way
    stats_every = _count("stats_every", stats_every) if stats_every else None
    build_dir = Path(build_dir)
    nvm_path = Path(nvm_path) if nvm_path is not None else None
    for flag, path in (("--json", json_path), ("--markdown", markdown_path)):
        if path is not None:  # written at the end: refused before minutes of work
            check_output(flag, Path(path), build_dir)
    report, model = load_build(build_dir)
    cfg = report["config"]
    st_seed: int | None
    seg: int | None
    if is_data_file(stream):
        for name, value in (("seed", seed), ("segment", segment)):
            if value is not None:
                raise UserError(
                    f"a stream {name} shapes the paper's environments; stream file {stream} is "
                    "replayed as it is"
                )
        samples, blocks = _file_samples(stream, samples, model)
        st_seed = seg = None
        stream = str(stream)  # the report names the file as given
    else:
        samples = 2000 if samples is None else samples
        check_dataset_unchanged(report)
        ds = load_dataset(
            cfg["dataset"], Path(cfg["data_dir"]) if cfg["data_dir"] else None, seed=cfg["seed"]
        )
        check_dataset_fits(ds.name, ds.input_shape, ds.num_classes, model)
        st_seed = cfg["seed"] if seed is None else seed
        seg = DEFAULT_SEGMENT if segment is None else segment
        # quantized a block at a time: quantizing goes through float64 copies of its input
        blocks = _Samples(
            (model.quantize_input(x), y)
            for x, y in stream_blocks(stream, ds, samples, seed=st_seed, segment=seg)
        )
    drift = _drift_request(stream)
    if drift and port is not None:
        raise UserError(
            f"stream {stream!r} emulates NVM drift by rewriting the stored weights; a board's "
            "own NVM drifts by itself: stream control or shift to it"
        )
    if drift:
        from lrt import store

        if store.build_geometry(report, model) is None:
            raise UserError(
                f"stream {stream!r} drifts the weights stored in NVM; this build keeps its "
                f"weights in the firmware image (no NVM weight store for this model on "
                f"{report['board']!r}): use control or shift, or a build with a weight store"
            )
    # samples made, held and sent at a time: 10,000, fewer for large inputs (a window's
    # frames are held twice while they are sent)
    held = min(STREAM_WINDOW, max(100, STREAM_BYTES // (int(np.prod(model.input_shape)) + 16)))
    chunk = min(samples, held)  # samples between the requests made after them
    if stats_every:
        chunk = min(chunk, stats_every)
    if drift:
        chunk = DRIFT_PERIOD
    # Requests go out a window at a time: a window's requests are all sent at once and its
    # replies come back in bulk (Device.stream), so the firmware never waits for Python, and
    # a long stream is made and held one window at a time. Windows are whole chunks, so the
    # requests are those of one window over the whole stream.
    window = max(chunk, held // chunk * chunk)
    labels = np.empty(samples, dtype=np.uint8)
    preds = np.empty(samples, dtype=np.int64)
    curve: list[tuple[int, int, int]] = []
    stats = None
    first: tuple[np.ndarray, np.ndarray] | None = None  # the opening samples (QEMU counts)
    making = 0.0  # seconds spent making the stream, not streaming it
    t0 = time.monotonic()
    refused_bye: P.ProtocolError | None = None
    with open_device(build_dir, report, emulator=emulator, nvm_path=nvm_path,
                     format_store=format_store, port=port, baud=baud) as dev:  # fmt: skip
        hello = dev.hello()
        store_text, n_classes = hello.store_text, hello.n_classes
        wear_at_start = dev.wear()
        line = console.Progress("stream", enabled=progress)
        label = f"{report['board']} {cfg['scheme']} {stream}"
        for w_start in range(0, samples, window):
            w_stop = min(w_start + window, samples)
            t_make = time.monotonic()
            xq, y = blocks.take(w_stop - w_start)
            labels[w_start:w_stop] = y
            first = first or (xq[:8].copy(), y[:8].copy())
            frames, plan = _window_requests(xq, y, w_start, samples, chunk, drift, st_seed or 0,
                                            stats_every)  # fmt: skip
            del xq
            making += time.monotonic() - t_make
            # samples trained once the first j + 1 requests are answered (the progress line)
            trained = (w_start + np.cumsum([r == P.MsgType.TRAIN for r, _ in plan])).tolist()

            def shown(done: int, _n: int, trained: list[int] = trained) -> None:
                if done > 0:
                    count = console.counter(trained[done - 1], samples, "samples",
                                            line.seconds())  # fmt: skip
                    line.update(f"{label}: {count}")

            replies = dev.stream(frames, progress=shown)
            got = _read_replies(plan, replies, samples, n_classes, preds, curve)
            stats = got if got is not None else stats
        # the rate of the report (the firmware's, without making the stream); the making apart
        streamed = console.counter(samples, samples, "samples", time.monotonic() - t0 - making)
        line.done(f"{label}: {streamed}; samples made in {making:.1f} s")
        wear = dev.wear()
        try:
            dev.bye()
        except P.ProtocolError as exc:
            refused_bye = exc  # the run is complete: its figures are written first
    seconds = time.monotonic() - t0 - making
    assert stats is not None
    weight_layers = model.weight_layers()
    result = OnlineResult.from_run(
        board=report["board"],
        scheme=cfg["scheme"],
        stream=stream,
        labels=labels,
        preds=preds,
        stats=stats,
        layer_names=[lay.name for lay in weight_layers],
        layer_cells=[int(lay.weights.size) for lay in weight_layers],  # type: ignore[union-attr]
        seconds=seconds,
        last_n=last_n,
    )
    result.writes_curve = curve
    result.store = store_text
    result.stream_seed, result.segment = st_seed, seg
    result.add_wear(
        wear,
        *_nvm_facts(report, model),
        cfg.get("sample_rate_hz", 1.0),
        before=wear_at_start,
        # a board on a port booted before this session: charge the run its increase only
        blank_at_boot=hello.committed_at_boot and port is None,
    )
    if emulator in ("auto", "qemu") and port is None and count_instructions and first is not None:
        result.instructions_per_sample = qemu_instructions_per_sample(build_dir, report, *first)
    if json_path is not None:
        result.write_json(Path(json_path))
    if markdown_path is not None:
        Path(markdown_path).write_text(result.markdown())
    if refused_bye is not None:
        saved = ", ".join(str(p) for p in (json_path, markdown_path) if p is not None)
        where = f"; the run's figures are in {saved}" if saved else ""
        raise P.ProtocolError(refused_bye.code, refused_bye.request_type,
                              refused_bye.context + where)
    return result

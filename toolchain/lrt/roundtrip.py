"""Get learned weights back from a device (pull) and give weights to a device (push).

Pull reads the weight blob a device holds -- from an NVM image file (host emulator
``--nvm``, or a QEMU RAM dump of the NVM region) or over the wire protocol from a running
target -- verifies it (image: header/blob CRCs and generation; wire: blob size and model
structure), and writes the build's model with those weights as ``ir/`` + ``model.tflite`` plus
a diff report against the weights the firmware was built with.

Push sends a weight set (a ``.tflite`` or an earlier pull) to a device, which commits it
atomically as a new NVM generation. A model whose structure does not match the device's
firmware is refused.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrt import codegen, heldout
from lrt.errors import UserError
from lrt.model import META_FIELD_ACCURACY, META_TEST_ACCURACY, Model
from lrt.tflite_import import import_tflite, to_tflite


@dataclass
class LayerDiff:
    layer: str
    cells: int
    changed: int
    max_abs_delta: int
    bias_changed: int


HELD_OUT_ROWS = {
    META_TEST_ACCURACY: "test split",
    META_FIELD_ACCURACY: "test images deformed like the field (the write policy's reference)",
}


# why a pull does not overwrite the model's held-out figures with the pulled weights' ones
KEPT_REFERENCE = (
    "The pulled model's metadata keeps the offline training's held-out accuracies: a firmware "
    "built from it takes its write policy's reference error from them, not from images the "
    "device may have learned its way away from."
)


@dataclass
class PullResult:
    out: Path
    source: str
    generation: int | None
    store: str = ""  # the store's state: slot, fallback, ...
    layers: list[LayerDiff] = field(default_factory=list)
    # held-out int8 accuracies (lrt.heldout) of the build's weights and of the pulled ones
    held_out_before: dict[str, float] = field(default_factory=dict)
    held_out_after: dict[str, float] = field(default_factory=dict)

    def markdown(self) -> str:
        gen = "" if self.generation is None else f", generation {self.generation}"
        lines = [
            f"## Pulled weights from {self.source}{gen}",
            "",
            f"written: `{self.out / 'model.tflite'}`, `{self.out / 'ir'}`",
            "",
            *([f"weight store: {self.store}", ""] if self.store else []),
            "| layer | cells | changed | max abs delta (LSB) | biases changed |",
            "|---|---|---|---|---|",
        ]
        for d in self.layers:
            lines.append(
                f"| {d.layer} | {d.cells} | {d.changed} ({100 * d.changed / max(d.cells, 1):.1f}%)"
                f" | {d.max_abs_delta} | {d.bias_changed} |"
            )
        if self.held_out_after:
            lines += ["", "| held-out int8 accuracy (TFLite-exact reference) | built | pulled |",
                      "|---|---|---|"]  # fmt: skip
            for key, what in HELD_OUT_ROWS.items():
                if key in self.held_out_after:
                    lines.append(f"| {what} | {self.held_out_before[key]:.4f} "
                                 f"| {self.held_out_after[key]:.4f} |")  # fmt: skip
            lines += ["", KEPT_REFERENCE]
        return "\n".join(lines) + "\n"


def model_with_blob(model: Model, blob: bytes) -> Model:
    """A copy of model whose weights and biases are the ones in blob (layout of codegen)."""
    lay = codegen.blob_layout(model)
    if len(blob) != lay.size:
        raise UserError(
            f"weight blob has {len(blob):,d} B but model {model.name} needs {lay.size:,d} B: "
            "it belongs to another model"
        )
    out = copy.deepcopy(model)
    for i, layer in enumerate(out.layers):
        if layer.weights is not None:
            n = layer.n_weights
            w = np.frombuffer(blob, np.int8, n, lay.w_offset[i])
            layer.weights = w.reshape(layer.weights.shape).copy()
        if layer.bias is not None:
            b = np.frombuffer(blob, "<i4", layer.n_bias, lay.b_offset[i])
            layer.bias = b.astype(np.int32)
        if layer.kind == "batchnorm":  # learned affine + running statistics (lrt_net.h)
            c = int(layer.out_shape[-1])
            words = np.frombuffer(blob, "<i4", 4 * c + 1, lay.b_offset[i]).astype(np.int64)
            layer.bn_gamma, layer.bn_beta, layer.bn_mean, layer.bn_msq = (
                words[k * c : (k + 1) * c].astype(np.int32) for k in range(4)
            )
            layer.bn_pow_q30 = int(words[4 * c]) & 0xFFFFFFFF
    return out


def diff_layers(before: Model, after: Model) -> list[LayerDiff]:
    diffs = []
    for a, b in zip(before.weight_layers(), after.weight_layers(), strict=True):
        assert a.weights is not None and b.weights is not None
        assert a.bias is not None and b.bias is not None
        delta = b.weights.astype(np.int16) - a.weights.astype(np.int16)
        diffs.append(
            LayerDiff(
                layer=a.name,
                cells=a.n_weights,
                changed=int(np.count_nonzero(delta)),
                max_abs_delta=int(np.abs(delta).max()) if delta.size else 0,
                bias_changed=int(np.count_nonzero(a.bias != b.bias)),
            )
        )
    return diffs


def check_compatible(device_model: Model, candidate: Model) -> None:
    """The candidate's weights can run on the device's firmware: same layers, shapes and
    quantization (only weight and bias values may differ)."""
    a, b = device_model, candidate
    try:
        same = codegen.nvm_model_id(a) == codegen.nvm_model_id(b)
    except (TypeError, ValueError) as exc:  # a damaged candidate's fields
        raise UserError(f"incompatible model: {type(exc).__name__}: {exc}") from None
    if len(a.layers) != len(b.layers):
        raise UserError(
            f"incompatible model: {len(b.layers)} layers, the device's firmware has {len(a.layers)}"
        )
    for i, (la, lb) in enumerate(zip(a.layers, b.layers, strict=True)):
        where = f"layer {i} ({la.name})"
        if la.kind != lb.kind:
            raise UserError(f"incompatible model: {where} is {lb.kind}, the device has {la.kind}")
        if tuple(la.in_shape) != tuple(lb.in_shape) or tuple(la.out_shape) != tuple(lb.out_shape):
            raise UserError(
                f"incompatible model: {where} maps {list(lb.in_shape)} -> {list(lb.out_shape)}, "
                f"the device {list(la.in_shape)} -> {list(la.out_shape)}"
            )
        if la.input_q != lb.input_q or la.output_q != lb.output_q:
            raise UserError(f"incompatible model: {where} has other activation quantization")
        if la.has_weights:
            assert la.out_multiplier is not None and lb.out_multiplier is not None
            assert la.out_shift is not None and lb.out_shift is not None
            same_rescale = np.array_equal(la.out_multiplier, lb.out_multiplier) and np.array_equal(
                la.out_shift, lb.out_shift
            )
            if not same_rescale or la.act_min != lb.act_min or la.act_max != lb.act_max:
                raise UserError(f"incompatible model: {where} has other weight/output scales")
    if not same:  # what the per-layer checks do not name: strides, padding, pooling, ...
        raise UserError("incompatible model: its layers, shapes or formats differ from the "
                        "device's (model id)")


def _write_model(model: Model, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "ir")
    (out / "model.tflite").write_bytes(to_tflite(model))


# The devices lrt reaches here are emulators started for the command: only the host
# emulator's store outlives it (the --nvm file); QEMU and Renode keep the NVM in their RAM.
EPHEMERAL_STORE = (
    "the device's weight store needs --nvm IMAGE (a host build's store file): an emulated "
    "device's store lives for one run, so {what} (a board on a serial port: --port)"
)


def _device_reachable(report: dict[str, Any], port: str | None, what: str) -> None:
    """UserError where a command that changes or reads a running device has none it can
    reach: only a host build's store file outlives an emulator, other builds run on boards."""
    if port is None and report["board"] != "host":
        raise UserError(
            f"{what} reaches an emulated device through the host emulator's store file "
            f"(--nvm IMAGE, a build for --board host); this build is for {report['board']!r}, "
            "whose emulators keep the store in RAM: use --port TTY on the flashed board"
        )


def pull(
    build_dir: Path,
    out: Path,
    nvm_image: Path | None = None,
    wire: bool = False,
    emulator: str = "auto",
    evaluate: bool = True,
    port: str | None = None,
    baud: int | None = None,
) -> PullResult:
    """Pull from an NVM image file, or (wire=True) from the running target over the
    protocol; a host emulator then boots from nvm_image first. With `port` (implies wire)
    from the board on that serial port, which keeps its weights in its own NVM."""
    from lrt import store
    from lrt.pipeline import load_build

    report, model = load_build(build_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, expected a directory")
    if (out / "report.json").is_file():
        raise UserError(f"--out {out} is an lrt-build directory: the pulled model would replace "
                        "the one its firmware was built from; pull into another directory")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    size = codegen.blob_layout(model).size
    generation: int | None = None
    if port is not None:
        wire = True
    if not wire:
        if emulator != "auto":
            raise UserError(f"--emulator {emulator} runs the device of --wire; without it the "
                            "image file is read directly")  # fmt: skip
        if nvm_image is None:
            raise UserError(EPHEMERAL_STORE.format(what="there is nothing to pull without it"))
        geometry = store.build_geometry(report, model)
        if geometry is None:
            raise UserError("--nvm: this build keeps its weights in the firmware image (no store)")
        rep = store.inspect(nvm_image, geometry)
        why = store.refusal(rep)
        if rep.chosen is None or rep.blob is None:
            raise UserError(f"NVM image {nvm_image}: no weight set to pull"
                            + (f": {why}" if why else " (blank store)"))
        if rep.degraded:
            raise UserError(
                f"NVM image {nvm_image}: every weight set fails its CRC (the newest, generation "
                f"{rep.generation} in slot {rep.chosen}, is what the device runs on, degraded); "
                "refusing to export corrupt weights"
            )
        blob, generation, source = bytes(rep.blob), rep.generation, str(nvm_image)
        note = (": fell back, a newer set failed its CRC or header" if rep.fallback else "")
        pulled_store = f"slot {rep.chosen}, generation {rep.generation}{note}"
    else:
        from lrt.emulate import open_device
        from lrt.emulate import protocol as P

        _device_reachable(report, port, "lrt-pull --wire")
        if nvm_image is None and port is None:
            raise UserError(EPHEMERAL_STORE.format(
                what="--wire would read a device booted for the pull, with the built-in weights"
            ))  # fmt: skip
        with open_device(build_dir, report, emulator=emulator, nvm_path=nvm_image, port=port,
                         baud=baud) as dev:  # fmt: skip
            info = dev.hello()
            if info.store & P.STORE_DEGRADED:
                raise UserError(
                    f"the device runs on a weight set that fails its CRC ({info.store_text}); "
                    "refusing to export corrupt weights"
                )
            blob = dev.read_all_blob(size)
        generation = info.generation or None
        pulled_store = info.store_text
        source = f"{report['board']} over the wire protocol" + (f" on {port}" if port else "")
    learned = model_with_blob(model, blob)
    learned.meta = {**model.meta, "pulled_from": source, "generation": generation}
    result = PullResult(out=out, source=source, generation=generation, store=pulled_store)
    result.layers = diff_layers(model, learned)
    if evaluate:
        from lrt.data import load_dataset
        from lrt.pipeline import check_dataset_unchanged, dataset_fits

        check_dataset_unchanged(report)
        cfg = report["config"]
        ds = load_dataset(
            cfg["dataset"], Path(cfg["data_dir"]) if cfg["data_dir"] else None, seed=cfg["seed"]
        )
        seed = int(model.meta.get("seed", cfg["seed"]))  # the training's: fixes the deformation
        # an imported model of another shape than its build's dataset has no held-out figures
        if dataset_fits(ds.input_shape, ds.num_classes, model):
            result.held_out_before = heldout.measure(model, ds.x_test, ds.y_test, seed)
            result.held_out_after = heldout.measure(learned, ds.x_test, ds.y_test, seed)
    _write_model(learned, out)
    (out / "pull.json").write_text(
        json.dumps(
            {
                "source": source,
                "generation": generation,
                "store": pulled_store,
                "layers": [d.__dict__ for d in result.layers],
                "held_out_before": result.held_out_before,
                "held_out_after": result.held_out_after,
            },
            indent=1,
        )
        + "\n"
    )
    (out / "pull.md").write_text(result.markdown())
    return result


def load_candidate(path: Path) -> Model:
    """Weights to push: a .tflite file, or a pull directory (its ir/)."""
    if path.is_dir():
        if not (path / "ir" / "model.json").is_file():
            raise UserError(f"{path} holds no pulled model (no ir/model.json)")
        try:
            return Model.load(path / "ir")
        except Exception as exc:  # a damaged IR fails in numpy, zipfile, json or dataclasses
            raise UserError(f"{path}/ir: not a readable model ({type(exc).__name__})") from None
    if not path.is_file():
        raise UserError(f"{path} not found")
    return import_tflite(path, name=path.stem)


def push(
    build_dir: Path,
    source: Path,
    nvm_image: Path | None = None,
    emulator: str = "auto",
    format_store: bool = False,
    port: str | None = None,
    baud: int | None = None,
) -> dict[str, Any]:
    """Commit the weights of `source` on the device of `build_dir` as a new generation: a host
    emulator booted on `nvm_image`, or the board on the serial port `port`."""
    from lrt.emulate import open_device
    from lrt.pipeline import load_build

    report, model = load_build(build_dir)
    _device_reachable(report, port, "lrt-push")
    if nvm_image is None and port is None:
        raise UserError(EPHEMERAL_STORE.format(what="a push would be lost when it exits"))
    candidate = load_candidate(source)
    check_compatible(model, candidate)
    blob = codegen.blob_bytes(candidate, codegen.blob_layout(model))
    with open_device(build_dir, report, emulator=emulator, nvm_path=nvm_image,
                     format_store=format_store, port=port, baud=baud) as dev:  # fmt: skip
        generation = dev.push_blob(blob)
        back = dev.read_all_blob(len(blob))
    if back != blob:
        raise UserError("the device did not keep the pushed weights (read-back differs)")
    return {"generation": generation, "bytes": len(blob), "source": str(source)}

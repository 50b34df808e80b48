"""Every console script turns every bad input into one `error:` line and exit status 2.

Hypothesis generates malformed inputs of every kind a command reads -- TOML configs and
board files (bytes, types, ranges), .npy sample files, .tflite models, build folders,
weight-pull folders, NVM image files and paths -- for lrt-build, lrt-emulate, lrt-flash,
lrt-experiment, lrt-pull and lrt-push, >= 2,000 inputs per command. Each is run through the
command's main function in-process (SystemExit caught, stderr captured): exit 2, exactly one
line on stderr starting with `error: `, no traceback, and no file or folder in the sandbox
created, changed or removed. Every generated input is bad by construction (one element at
least is invalid), and the work a good input would start (training, a device, a flasher, an
experiment grid) is replaced by a tripwire that fails the test: a bad input must be refused
before any work starts. test_host_store.py runs a handful of the same through real processes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.e2e_support import built
from lrt import cli, codegen, nvm, store
from lrt.boards import boards_dir
from lrt.model import Model
from lrt.pipeline import load_build

pytestmark = pytest.mark.slow
PER_COMMAND = int(os.environ.get("LRT_FUZZ_N", "2000"))
Main = Callable[[Sequence[str] | None], int]


class Files(dict[str, bytes]):
    """The files of one case (a short repr keeps hypothesis' reports readable)."""

    def __repr__(self) -> str:
        return "Files(" + ", ".join(f"{k}: {len(v)} B {v[:24]!r}" for k, v in self.items()) + ")"


class Tripwire(Exception):
    """A bad input got as far as real work."""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A valid build (the tiny model), its weights and a good image. The build is re-labelled
    for a host board with a 64 KiB NVM region instead of 8 MiB: every refusal path is the
    same, and 2,000 images per command stay cheap. No device is started (tripwires), so the
    firmware is not rebuilt for it."""
    root = tmp_path_factory.mktemp("fuzz")
    boards = root / "boards"
    boards.mkdir()
    for board in boards_dir().glob("*.toml"):
        shutil.copy(board, boards)
    host = (boards / "host.toml").read_text()
    assert 'name = "host"' in host and "size = 0x800000" in host
    (boards / "hostsmall.toml").write_text(
        host.replace('name = "host"', 'name = "hostsmall"').replace("size = 0x800000",
                                                                     "size = 0x10000"))
    old = os.environ.get("LRT_BOARDS_DIR")
    os.environ["LRT_BOARDS_DIR"] = str(boards)
    src = built("inference", preset="tiny")
    shutil.copytree(src, root / "build", ignore=shutil.ignore_patterns("src", "pio"))
    report = json.loads((root / "build" / "report.json").read_text())
    # The build records its board file; point it at the re-labelled one.
    relabelled = {**report, "board": "hostsmall", "board_file": str(boards / "hostsmall.toml")}
    (root / "build" / "report.json").write_text(json.dumps(relabelled))
    report, model = load_build(root / "build")
    geo = store.build_geometry(report, model)
    assert geo is not None
    blob = codegen.blob_bytes(model, codegen.blob_layout(model))
    assert geo.region_size == 0x10000
    (root / "good.img").write_bytes(nvm.build_image(geo, [blob]))
    yield root
    if old is None:
        del os.environ["LRT_BOARDS_DIR"]
    else:
        os.environ["LRT_BOARDS_DIR"] = old


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> None:
    def trip(*_: Any, **__: Any) -> Any:
        raise Tripwire("a bad input was not refused before the work started")

    from lrt import experiment, flash, pipeline
    from lrt.emulate import host

    monkeypatch.setattr(pipeline, "_obtain_model", trip)
    monkeypatch.setattr(experiment, "run_grid", trip)
    monkeypatch.setattr(flash, "check_probe", trip)
    monkeypatch.setattr(host.HostRunner, "open", trip)


@pytest.fixture(autouse=True)
def memo_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model.load and Model.fingerprint computed once per distinct IR content: the real
    functions, memoised so that 12,000 calls fit the CI budget (a damaged IR is new content
    and is loaded for real)."""
    load, fingerprint = Model.load, Model.fingerprint
    loaded: dict[bytes, Model] = {}
    prints: dict[int, tuple[Model, str]] = {}

    def memo_load(directory: Path | str) -> Model:
        d = Path(directory)
        key = b"".join(
            (d / n).read_bytes() if (d / n).is_file() else b"-" for n in ("model.json", "model.npz")
        )
        if key not in loaded:
            loaded[key] = load(d)
        return loaded[key]

    def memo_fingerprint(self: Model) -> str:
        if id(self) not in prints:
            prints[id(self)] = (self, fingerprint(self))
        return prints[id(self)][1]

    monkeypatch.setattr(Model, "load", staticmethod(memo_load))
    monkeypatch.setattr(Model, "fingerprint", memo_fingerprint)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st_ = os.lstat(p)
            out[p] = (st_.st_size, st_.st_mtime_ns)
    return out


def run_main(main: Main, argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, err.getvalue()


def check_refused(main: Main, root: Path, files: dict[str, bytes], argv: list[str]) -> None:
    files = Files(files)
    case = root / "case"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    for rel, data in files.items():
        p = case / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    argv = [a.replace("{case}", str(case)).replace("{root}", str(root)) for a in argv]
    before = snapshot(root)
    rc, err = run_main(main, argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, rc, err)
    assert snapshot(root) == before, argv


# ---- generators of bad inputs ---------------------------------------------------------------

_text = st.text(max_size=12)
_scalar = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.booleans(), _text,
                    st.lists(st.integers(), max_size=3))
# (field, values outside its range) for the numeric and enumerated config fields
_BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "rank": st.one_of(st.integers(max_value=0), st.integers(min_value=9)),
    "batch_conv": st.one_of(st.integers(max_value=0), st.integers(min_value=65536)),
    "batch_dense": st.one_of(st.integers(max_value=0), st.integers(min_value=65536)),
    "lr": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True)),
    "rho_min": st.one_of(st.floats(max_value=0.0, exclude_max=True), st.floats(min_value=1.01)),
    "kappa_th": st.one_of(st.floats(max_value=-0.001), st.floats(min_value=2e9),
                          st.just(float("nan"))),
    "maxnorm_beta": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)),
    "lrt_step_cap": st.one_of(st.integers(max_value=-1), st.integers(min_value=2)),
    "lrt_step_evidence": st.one_of(st.integers(max_value=-1), st.integers(min_value=2)),
    "batch_scaling": st.one_of(st.floats(max_value=-0.01), st.floats(0.01, 0.49),
                               st.floats(min_value=1.01)),
    "augment_train": st.one_of(st.integers(max_value=-1), st.integers(min_value=21)),
    "epochs": st.one_of(st.integers(max_value=-1), st.integers(min_value=10_001)),
    "weight_bits": st.one_of(st.integers(max_value=1), st.integers(min_value=9)),
    "lifetime_years": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1001.0)),
    "samples_per_second": st.one_of(st.floats(max_value=0.0), st.floats(min_value=2e6)),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(2**32, 2**64)),
    "preset": _text.filter(lambda s: s not in ("mcu", "paper", "tiny", "mcu-bn", "paper-bn")),
    "scheme": st.just("lrt-max"),
    "dataset": st.sampled_from(["MNIST", "cifar", ""]),
    "lrt_mode": st.just("exact"),
    "max_norm": st.just("yes"),
    "cell_counters": st.just(1),
    "data_dir": st.just("/nonexistent/lrt"),
    "train_layers": st.lists(st.integers(), min_size=1, max_size=2),
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if v in (
            float("inf"), float("-inf")) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


@st.composite
def bad_config(draw: st.DrawFn) -> bytes:
    """A build config TOML with at least one bad element."""
    kind = draw(st.sampled_from(["range", "range", "type", "unknown", "syntax", "bytes"]))
    good = {"rank": 4, "lr": 0.01, "seed": 1, "scheme": "lrt"}
    keep = draw(st.lists(st.sampled_from(list(good)), unique=True))
    lines = [f"{k} = {_toml_value(good[k])}" for k in keep]
    if kind == "range":
        key = draw(st.sampled_from(list(_BAD_VALUES)))
        lines.append(f"{key} = {_toml_value(draw(_BAD_VALUES[key]))}")
    elif kind == "type":
        key = draw(st.sampled_from(["rank", "lr", "scheme", "seed", "epochs", "weight_bits"]))
        value = draw(_scalar.filter(lambda v: not isinstance(v, type(good.get(key, 0)))
                                    and not (key == "lr" and isinstance(v, int))))
        lines.append(f"{key} = {_toml_value(value)}")
    elif kind == "unknown":
        lines.append(f"{draw(st.sampled_from(['rnak', 'Rank', 'lr_', 'x']))} = 1")
    elif kind == "syntax":
        lines.append(draw(st.sampled_from(["rank = ", "= 3", "[rank", "rank = 'a", "a.b = [1,"])))
    else:
        return b"\xff" + draw(st.binary(max_size=60))  # not UTF-8
    # one assignment per key (the bad one last wins), so the file fails for the bad value
    seen = {line.split("=")[0].strip(): line for line in lines}
    return ("\n".join(seen.values()) + "\n").encode()


HOST_BOARD = tomllib.loads((boards_dir() / "host.toml").read_text())


@st.composite
def bad_board(draw: st.DrawFn) -> bytes:
    """The host board file with one thing wrong (the file is saved as case/board.toml)."""
    data = json.loads(json.dumps(HOST_BOARD))
    data["name"] = "board"
    kind = draw(st.sampled_from(["type", "missing", "unknown", "name", "range", "bytes"]))
    tables = [k for k, v in data.items() if isinstance(v, dict)]
    table = draw(st.sampled_from(tables))
    key = draw(st.sampled_from(sorted(data[table])))
    if kind == "type":
        old = data[table][key]
        data[table][key] = draw(_scalar.filter(lambda v: type(v) is not type(old)
                                               and not isinstance(v, bool | list)))
        if isinstance(old, int) and isinstance(data[table][key], int):
            data[table][key] = "x"
    elif kind == "missing":
        if key in ("endurance", "cflags"):  # optional keys: drop a required one instead
            key = "technology"
            table = "nvm"
        del data[table][key]
    elif kind == "unknown":
        data[table]["colour"] = 1
    elif kind == "name":
        data["name"] = draw(_text.filter(lambda s: s != "board"))
    elif kind == "range":
        data["nvm"][draw(st.sampled_from(["size", "page_size", "prog_size"]))] = draw(
            st.integers(-(2**40), 0))
    else:
        return b"\xfe" + draw(st.binary(max_size=40))
    out = []
    for k, v in data.items():
        if not isinstance(v, dict):
            out.append(f"{k} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(f"[{k}]")
            out += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return ("\n".join(out) + "\n").encode()


@st.composite
def bad_npy(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["dtype", "shape", "garbage", "truncated", "object", "empty"]))
    buf = io.BytesIO()
    if kind == "dtype":
        np.save(buf, np.zeros((2, 28, 28, 1), draw(st.sampled_from(["f4", "u1", "i2", "i8"]))))
    elif kind == "shape":
        dims = draw(st.lists(st.integers(1, 5), max_size=4).filter(
            lambda d: d not in ([28, 28, 1],) and d[1:] != [28, 28, 1]))
        np.save(buf, np.zeros(dims, np.int8))
    elif kind == "object":
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "empty":
        np.save(buf, np.zeros((0, 28, 28, 1), np.int8))
    elif kind == "truncated":
        np.save(buf, np.zeros((3, 28, 28, 1), np.int8))
        return buf.getvalue()[: draw(st.integers(0, len(buf.getvalue()) - 1))]
    else:
        return draw(st.binary(max_size=100))
    return buf.getvalue()


def bad_tflite(good: bytes) -> st.SearchStrategy[bytes]:
    """Models that cannot be imported: garbage, cut short, identifier or root table damaged."""
    return st.one_of(
        st.binary(max_size=64),
        st.integers(0, len(good) // 2).map(lambda n: good[:n]),
        st.binary(min_size=4, max_size=4).filter(lambda b: b != b"TFL3").map(
            lambda b: good[:4] + b + good[8:]),
    )


@st.composite
def bad_image(draw: st.DrawFn, good: bytes, geo: nvm.NvmGeometry, pull: bool = False) -> bytes:
    """An image the build's device must not use: wrong size, another model's or format's, or
    garbage; for lrt-pull also every set CRC-failing (a device runs on it, degraded)."""
    lay = geo.layout()
    kind = draw(st.sampled_from(["short", "long", "foreign", "garbage", "version",
                                 *(["crc"] if pull else [])]))
    img = bytearray(good)
    if kind == "short":
        return bytes(img[: draw(st.integers(1, len(img) - 1))])
    if kind == "long":
        return bytes(img) + draw(st.binary(min_size=1, max_size=16))
    if kind == "garbage":  # a random block repeated: no readable header, no blank slot
        block = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(4096)
        return block * (len(img) // 4096)
    for s in range(lay.n_slots):
        base = lay.slot_base(s)
        h = nvm.SlotHeader.parse(bytes(img[base : base + nvm.HEADER_SIZE]))
        if h is None:
            continue
        if kind == "crc":
            img[lay.blob_addr(s) + draw(st.integers(0, geo.blob_size - 1))] ^= 1 << draw(
                st.integers(0, 7))
            continue
        raw = bytearray(img[base : base + nvm.HEADER_SIZE])
        if kind == "foreign":
            struct.pack_into("<I", raw, 56, draw(st.integers(0, 2**32 - 1).filter(
                lambda v: v != geo.model_id)))
        else:
            struct.pack_into("<H", raw, 4, draw(st.integers(0, 65535).filter(
                lambda v: v != nvm.VERSION)))
        raw[60:64] = struct.pack("<I", nvm.crc32(bytes(raw[:60])))
        img[base : base + nvm.HEADER_SIZE] = raw
    return bytes(img)


def bad_path(name: str) -> st.SearchStrategy[str]:
    """A file path that cannot be used: a folder, or in a folder that does not exist."""
    return st.sampled_from(["{case}", "{case}/missing/" + name, "{root}/build"])


@st.composite
def bad_build(draw: st.DrawFn, root: Path, ir_only: bool = False
              ) -> tuple[dict[str, bytes], str]:
    """A damaged copy of the build folder's report/IR (the firmware itself is not copied);
    ir_only: only the IR damaged (a pull folder)."""
    report = json.loads((root / "build" / "report.json").read_text())
    ir = {p.name: p.read_bytes() for p in (root / "build" / "ir").iterdir()}
    files = {f"b/ir/{k}": v for k, v in ir.items()}
    ir_kinds = ["no-ir", "ir-json", "ir-npz", "ir-version", "ir-layers"]
    kind = draw(st.sampled_from(ir_kinds if ir_only else [
        "no-report", "report-bytes", "report-json", "report-field", *ir_kinds]))
    if kind == "no-report":
        return files, "{case}/b"
    if kind == "report-bytes":
        files["b/report.json"] = draw(st.binary(max_size=40))
        return files, "{case}/b"
    rep = dict(report)
    if kind == "report-json":
        files["b/report.json"] = json.dumps(draw(st.one_of(
            st.lists(st.integers(), max_size=2), st.integers(), _text))).encode()
        return files, "{case}/b"
    if kind == "report-field":
        key = draw(st.sampled_from(["board", "firmware", "config"]))
        if draw(st.booleans()):
            del rep[key]
        else:
            rep[key] = draw(_scalar.filter(lambda v: not isinstance(v, str)))
    files["b/report.json"] = json.dumps(rep).encode()
    if kind == "no-ir":
        files = {k: v for k, v in files.items() if "/ir/" not in k}
    elif kind == "ir-json":
        files["b/ir/model.json"] = draw(st.binary(max_size=60))
    elif kind == "ir-npz":
        files["b/ir/model.npz"] = draw(st.binary(max_size=60))
    elif kind == "ir-version":
        m = json.loads(ir["model.json"])
        m["ir_version"] = draw(st.integers(-5, 1000).filter(lambda v: v != m["ir_version"]))
        files["b/ir/model.json"] = json.dumps(m).encode()
    elif kind == "ir-layers":
        m = json.loads(ir["model.json"])
        layer = draw(st.integers(0, len(m["layers"]) - 1))
        key = draw(st.sampled_from(["in_shape", "input_q", "kind", "stride"]))
        m["layers"][layer][key] = draw(st.one_of(st.integers(), st.just("conv3d"),
                                                 st.lists(st.integers(-3, 0), max_size=2)))
        files["b/ir/model.json"] = json.dumps(m).encode()
    return files, "{case}/b"


# ---- one property per command ---------------------------------------------------------------


def build_store(root: Path) -> tuple[Model, nvm.NvmGeometry, bytes]:
    """The sandbox build's model, store geometry and good image."""
    report, model = load_build(root / "build")
    geo = store.build_geometry(report, model)
    assert geo is not None
    return model, geo, (root / "good.img").read_bytes()


def _fuzz(main: Main, root: Path, cases: st.SearchStrategy[tuple[dict[str, bytes], list[str]]]
          ) -> None:
    @settings(max_examples=PER_COMMAND, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases.map(lambda c: (Files(c[0]), c[1])))
    def prop(case: tuple[dict[str, bytes], list[str]]) -> None:
        check_refused(main, root, *case)

    prop()


@pytest.mark.usefixtures("tripwires")
def test_lrt_build(sandbox: Path) -> None:
    good_tfl = (sandbox / "build" / "model.tflite").read_bytes()
    cases = st.one_of(
        bad_config().map(lambda b: ({"c.toml": b}, ["--config", "{case}/c.toml"])),
        bad_board().map(lambda b: ({"board.toml": b}, ["--board", "{case}/board.toml"])),
        bad_tflite(good_tfl).map(lambda b: ({"m.tflite": b}, ["--model", "{case}/m.tflite"])),
        st.sampled_from(["{case}", "{case}/none.toml"]).map(lambda p: ({}, ["--config", p])),
        st.sampled_from(list(_BAD_VALUES)[:13]).flatmap(
            lambda k: _BAD_VALUES[k].map(lambda v: ({}, ["--set", f"{k}={v}"]))),
        st.sampled_from(["--epochs=x", "--seed=1.5", "--preset=big", "--bogus", "--set=rank"]
                        ).map(lambda a: ({}, [a])),
    ).map(lambda c: (c[0], [*c[1], "--out", "{case}/out", "--quiet"]))
    _fuzz(cli.build_main, sandbox, cases)


@pytest.mark.usefixtures("tripwires")
def test_lrt_emulate(sandbox: Path) -> None:
    model, geo, good = build_store(sandbox)
    np.save(sandbox / "x.npy", np.zeros((2, *model.input_shape), np.int8))
    b = "{root}/build"
    infer = ["--build", b, "--inputs", "{root}/x.npy"]
    cases = st.one_of(
        bad_npy().map(lambda d: ({"x.npy": d}, ["--build", b, "--inputs", "{case}/x.npy",
                                               "--dump-logits", "{case}/y.npy"])),
        bad_path("y.npy").map(lambda p: ({}, [*infer, "--dump-logits", p])),
        bad_image(good, geo).map(lambda d: ({"n.img": d}, [*infer, "--dump-logits",
                                                           "{case}/y.npy", "--nvm",
                                                           "{case}/n.img"])),
        bad_path("n.img").map(lambda p: ({}, [*infer, "--dump-logits", "{case}/y.npy",
                                              "--nvm", p])),
        bad_build(sandbox).map(lambda c: (c[0], ["--build", c[1], "--samples", "3"])),
        bad_path("r.img").map(lambda p: ({}, ["--nvm-report", p])),
        st.integers(max_value=0).map(lambda n: ({}, ["--build", b, "--samples", str(n)])),
        st.sampled_from(["--samples=x", "--emulator=gdb", "--bogus", "--seed=", "--build"]
                        ).map(lambda a: ({}, [a])),
    )
    _fuzz(cli.emulate_main, sandbox, cases)


@pytest.mark.usefixtures("tripwires")
def test_lrt_flash(sandbox: Path) -> None:
    cases = st.one_of(
        bad_board().map(lambda d: ({"board.toml": d}, ["--board", "{case}/board.toml",
                                                       "--build", "{root}/build"])),
        st.sampled_from(["{case}/none", "{case}", "{root}/good.img"]).map(
            lambda p: ({}, ["--board", "nucleo-f446re", "--build", p])),
        st.binary(max_size=64).map(lambda d: ({"fw.elf": d}, ["--board", "nucleo-f446re",
                                                              "--build", "{case}/fw.elf"])),
        _text.filter(lambda m: m not in ("openocd", "pyocd", "pio")).map(
            lambda m: ({}, ["--board", "nucleo-f446re", "--build", "{root}/build",
                            "--method", m])),
        st.sampled_from(["esp32", "", "../x", "host.tom"]).map(
            lambda n: ({}, ["--board", n, "--build", "{root}/build"])),
    )
    _fuzz(cli.flash_main, sandbox, cases)


@pytest.mark.usefixtures("tripwires")
def test_lrt_experiment(sandbox: Path) -> None:
    out = ["--out", "{case}/grid", "--quiet"]
    cases = st.one_of(
        _text.filter(lambda s: any(t.strip() not in ("", "control", "shift", "analog",
                                                      "digital") for t in s.split(","))).map(
            lambda e: ({}, ["--envs", "control," + e])),
        st.sampled_from(["sgd,foo", "LRT", "lrt maxnorm"]).map(lambda s: ({}, ["--schemes", s])),
        st.sampled_from(["a", "1,b", "1.5", "0x"]).map(lambda s: ({}, ["--seeds", s])),
        st.integers(max_value=0).map(lambda n: ({}, ["--samples", str(n)])),
        st.sampled_from(["rnak=3", "rank", "=4", "zzz=1,2"]).map(lambda s: ({}, ["--set", s])),
        st.sampled_from(["rank=1,x", "rank", "lr=a"]).map(lambda s: ({}, ["--sweep", s])),
        st.sampled_from(["--jobs=x", "--preset=big", "--executor=ray", "--bogus"]).map(
            lambda a: ({}, [a])),
    ).map(lambda c: (c[0], [*c[1], *out]))
    _fuzz(cli.experiment_main, sandbox, cases)


@pytest.mark.usefixtures("tripwires")
def test_lrt_pull(sandbox: Path) -> None:
    _, geo, good = build_store(sandbox)
    b = "{root}/build"
    cases = st.one_of(
        bad_image(good, geo, pull=True).map(lambda d: ({"n.img": d}, ["--build", b, "--nvm",
                                                                      "{case}/n.img"])),
        bad_path("n.img").map(lambda p: ({}, ["--build", b, "--nvm", p])),
        bad_build(sandbox).map(lambda c: (c[0], ["--build", c[1], "--nvm", "{root}/good.img"])),
        st.just(({"file": b"x"}, ["--build", b, "--nvm", "{root}/good.img", "--out",
                                  "{case}/file/sub"])),
        st.just(({"file": b"x"}, ["--build", b, "--nvm", "{root}/good.img", "--out",
                                  "{case}/file"])),
    ).map(lambda c: (c[0], [*c[1], *([] if "--out" in c[1] else ["--out", "{case}/o"]),
                            "--no-eval"]))
    _fuzz(cli.pull_main, sandbox, cases)


@pytest.mark.usefixtures("tripwires")
def test_lrt_push(sandbox: Path) -> None:
    _, geo, good = build_store(sandbox)
    good_tfl = (sandbox / "build" / "model.tflite").read_bytes()
    b = "{root}/build"
    tfl = ["--weights", "{root}/build/model.tflite"]
    cases = st.one_of(
        bad_tflite(good_tfl).map(lambda d: ({"w.tflite": d}, ["--build", b, "--weights",
                                                              "{case}/w.tflite"])),
        bad_build(sandbox, ir_only=True).map(lambda c: (
            {k.replace("b/", "w/", 1): v for k, v in c[0].items() if "/ir/" in k},
            ["--build", b, "--weights", "{case}/w"])),
        bad_image(good, geo).map(lambda d: ({"n.img": d}, ["--build", b, *tfl, "--nvm",
                                                           "{case}/n.img"])),
        bad_path("n.img").map(lambda p: ({}, ["--build", b, *tfl, "--nvm", p])),
        bad_build(sandbox).map(lambda c: (c[0], ["--build", c[1], *tfl])),
    )
    _fuzz(cli.push_main, sandbox, cases)

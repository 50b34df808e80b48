"""No silent wrong answers, no lost data on the host side: every reproducer of the audit of the
host tools as a test, over the real host firmware.

* images carry their model's id: a foreign image is refused by tools and firmware and stays
  byte for byte as it was; --format is the explicit way to re-initialise it;
* --inputs runs on the weights of --nvm; lrt-pull refuses a set whose CRC fails and names
  the generation it took; HELLO reports the mount state;
* damaged inputs (images, paths, configs, reports, IR) are one `error:` line and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from helpers.e2e_support import built
from lrt import cli, codegen, nvm, store
from lrt.emulate import EXIT_FOREIGN, open_device
from lrt.emulate import protocol as P
from lrt.errors import UserError
from lrt.pipeline import load_build
from lrt.reference import forward_int8
from lrt.roundtrip import model_with_blob
from lrt.tflite_import import import_tflite

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
Main = Callable[[Sequence[str] | None], int]


def call(main: Main, *args: object, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """A console script's main in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = int(exc.code) if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(res: tuple[int, str, str], *needles: str) -> str:
    rc, _, err = res
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def build_a() -> Path:
    return built("lrt-maxnorm")


@pytest.fixture(scope="module")
def build_b() -> Path:
    return built("inference", preset="tiny")


def geometry(build: Path) -> nvm.NvmGeometry:
    geo = store.build_geometry(*load_build(build))
    assert geo is not None
    return geo


def factory_blob(build: Path) -> bytes:
    _, model = load_build(build)
    return codegen.blob_bytes(model, codegen.blob_layout(model))


def learned_blob(build: Path) -> bytes:
    """The factory set with the last layer's weights changed (a set the device 'learned')."""
    _, model = load_build(build)
    lay = codegen.blob_layout(model)
    blob = bytearray(factory_blob(build))
    last = max(i for i, layer in enumerate(model.layers) if layer.has_weights)
    n = model.layers[last].n_weights
    w = np.frombuffer(blob, np.int8, n, lay.w_offset[last]).astype(np.int16)
    at = lay.w_offset[last]
    blob[at : at + n] = (-w).clip(-128, 127).astype(np.int8).tobytes()
    return bytes(blob)


def image_of(build: Path, path: Path, *blobs: bytes) -> bytes:
    img = nvm.build_image(geometry(build), list(blobs))
    path.write_bytes(img)
    return img


def test_model_id_is_in_every_header_and_distinguishes_models(build_a: Path, build_b: Path,
                                                              tmp_path: Path) -> None:
    a, b = geometry(build_a), geometry(build_b)
    assert a.model_id != b.model_id
    assert f"0x{a.model_id:08x}u" in (build_a / "src" / "lrt_model.h").read_text()
    # the firmware writes it: a fresh device's first commit carries the build's id
    img = tmp_path / "a.img"
    with open_device(build_a, nvm_path=img) as dev:
        info = dev.hello()
    rep = nvm.inspect_image(img, a)
    assert rep.slots[rep.chosen or 0].header.model_id == a.model_id  # type: ignore[union-attr]
    assert info.generation == 1 and info.store & 0x01  # was blank: built-in set committed
    assert rep.blob == factory_blob(build_a)


def test_inputs_honour_nvm(build_a: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """Reproducer: --inputs --nvm ran on the factory weights (50/50 rows differed), exit 0."""
    _, model = load_build(build_a)
    learned = learned_blob(build_a)
    img = image_of(build_a, tmp_path / "learned.img", factory_blob(build_a), learned)
    x = np.random.default_rng(3).integers(-128, 128, (50, *model.input_shape)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    out_nvm, out_plain = tmp_path / "nvm.npy", tmp_path / "plain.npy"
    args = ["--build", build_a, "--inputs", tmp_path / "x.npy"]
    assert call(cli.emulate_main, *args, "--dump-logits", out_nvm, "--nvm", tmp_path /
                "learned.img", capsys=capsys)[0] == 0
    assert call(cli.emulate_main, *args, "--dump-logits", out_plain, capsys=capsys)[0] == 0
    want = forward_int8(model_with_blob(model, learned), x)
    factory = forward_int8(model, x)
    assert np.array_equal(np.load(out_nvm), want)
    assert np.array_equal(np.load(out_plain), factory)
    assert (want != factory).any(axis=1).sum() > 25
    assert (tmp_path / "learned.img").read_bytes() == img  # inference commits nothing


def test_pull_refuses_a_crc_failing_set_and_names_the_generation(
    build_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reproducer: lrt-pull exported weights whose slot CRC failed, exit 0, no warning."""
    geo = geometry(build_a)
    lay = geo.layout()
    path = tmp_path / "one.img"
    img = bytearray(image_of(build_a, path, learned_blob(build_a)))
    img[lay.blob_addr(0) + 100] ^= 0x10  # the only set drifts: degraded
    path.write_bytes(img)
    res = call(cli.pull_main, "--build", build_a, "--nvm", path, "--out", tmp_path / "p",
               "--no-eval", capsys=capsys)
    assert_refused(res, "CRC", "generation 1")
    assert path.read_bytes() == img and not (tmp_path / "p").exists()
    # two sets, the newer damaged: the older is pulled and the fallback said
    img2 = bytearray(image_of(build_a, path, learned_blob(build_a), factory_blob(build_a)))
    img2[lay.blob_addr(1) + 7] ^= 0x01
    path.write_bytes(img2)
    rc, out, err = call(cli.pull_main, "--build", build_a, "--nvm", path, "--out",
                        tmp_path / "p2", "--no-eval", capsys=capsys)
    assert rc == 0, err
    assert "generation 1" in out and "fell back" in out
    pulled = json.loads((tmp_path / "p2" / "pull.json").read_text())
    assert pulled["generation"] == 1 and "fell back" in pulled["store"]
    # the device reports the same in HELLO, and lrt-emulate --nvm-report says it too
    with open_device(build_a, nvm_path=path) as dev:
        info = dev.hello()
    assert info.generation == 1 and info.store & P.STORE_FALLBACK
    rc, out, _ = call(cli.emulate_main, "--build", build_a, "--nvm-report", path, capsys=capsys)
    # exit status 1: a slot failed its checks (the report still says what the device does)
    assert rc == 1 and "Boot: slot 0, generation 1 (fallback)" in out


@pytest.mark.parametrize("command", ["emulate", "push", "inputs"])
def test_foreign_image_is_refused_and_untouched(
    build_a: Path, build_b: Path, tmp_path: Path, command: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Reproducer: running build A on B's image overwrote B's generations."""
    path = tmp_path / "b.img"
    img_b = image_of(build_b, path, factory_blob(build_b), factory_blob(build_b))
    _, model = load_build(build_a)
    np.save(tmp_path / "x.npy", np.zeros((2, *model.input_shape), np.int8))
    args: dict[str, list[object]] = {
        "emulate": ["--build", build_a, "--samples", 5, "--emulator", "host"],
        "push": ["--build", build_a, "--weights", build_a / "model.tflite"],
        "inputs": ["--build", build_a, "--inputs", tmp_path / "x.npy", "--dump-logits",
                   tmp_path / "y.npy"],
    }
    main = cli.push_main if command == "push" else cli.emulate_main
    res = call(main, *args[command], "--nvm", path, capsys=capsys)
    assert_refused(res, "another model", "--format")
    assert path.read_bytes() == img_b
    # --format: the explicit way; then the device runs on A's built-in set
    rc, out, err = call(main, *args[command], "--nvm", path, "--format", capsys=capsys)
    assert rc == 0, err
    if command == "emulate":  # the device's mount state is in the report
        assert "weight store at boot | generation 1; formatted at boot" in out
    rep = nvm.inspect_image(path, geometry(build_a))
    assert rep.chosen is not None and not rep.foreign


def test_firmware_refuses_a_foreign_store_on_its_own(build_a: Path, tmp_path: Path) -> None:
    """Same geometry, another model id (a consistent foreign header): the firmware itself,
    without the tools' check, exits 6 and leaves the file alone; --format re-initialises."""
    other = dataclasses.replace(geometry(build_a), model_id=geometry(build_a).model_id ^ 1)
    path = tmp_path / "other.img"
    img = nvm.build_image(other, [factory_blob(build_a)])
    path.write_bytes(img)
    fw = build_a / json.loads((build_a / "report.json").read_text())["firmware"]
    proc = subprocess.run([str(fw), "--nvm", str(path)], input=P.hello_request(),
                          capture_output=True, timeout=60)
    assert proc.returncode == EXIT_FOREIGN and path.read_bytes() == img
    proc = subprocess.run([str(fw), "--nvm", str(path), "--format"], input=P.hello_request(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0
    info = P.Info.parse(P.decode_frame(proc.stdout)[1])
    assert info.generation == 1 and info.store & 0x20  # formatted, built-in set committed
    rep = nvm.inspect_image(path, geometry(build_a))
    assert rep.chosen is not None and [s.state for s in rep.slots].count("foreign") == 0


def test_bad_image_files_and_paths(build_a: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Reproducer: a truncated or extended image, --nvm DIR, a path in a missing folder were
    tracebacks (LinkError, firmware exit 3)."""
    good = image_of(build_a, tmp_path / "good.img", factory_blob(build_a))
    cases = {
        "short.img": good[:-1],
        "long.img": good + b"\xff",
        "garbage.img": bytes(np.random.default_rng(1).integers(0, 256, len(good), np.uint8)),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        for main, args in ((cli.emulate_main, ["--samples", 3, "--quiet"]),
                           (cli.pull_main, ["--out", tmp_path / "o", "--no-eval"]),
                           (cli.push_main, ["--weights", build_a / "model.tflite"])):
            assert_refused(call(main, "--build", build_a, *args, "--nvm", tmp_path / name,
                                capsys=capsys), name)
            assert (tmp_path / name).read_bytes() == data
    for bad in (tmp_path, tmp_path / "missing" / "x.img"):
        assert_refused(call(cli.emulate_main, "--build", build_a, "--samples", 3, "--nvm", bad,
                            capsys=capsys), str(bad))
    assert not (tmp_path / "missing").exists()


def test_crafted_headers_do_not_fool_the_report(build_a: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Reproducer: a header with unit size 0 crashed --nvm-report and lrt-pull
    (ZeroDivisionError); a foreign but consistent header made the report name another slot
    than the device boots."""
    geo = geometry(build_a)
    lay = geo.layout()
    img = bytearray(nvm.build_image(geo, [factory_blob(build_a), learned_blob(build_a)]))
    h = bytearray(img[: nvm.HEADER_SIZE])
    struct.pack_into("<I", h, 44, 0)  # unit size 0, resealed
    h[60:64] = struct.pack("<I", nvm.crc32(bytes(h[:60])))
    img[: nvm.HEADER_SIZE] = h
    path = tmp_path / "crafted.img"
    path.write_bytes(img)
    for extra in ([], ["--build", build_a]):
        rc, out, err = call(cli.emulate_main, *extra, "--nvm-report", path, capsys=capsys)
        assert rc == 1 and "Traceback" not in err  # 1: the crafted slot fails its checks
    assert "Boot: slot 1, generation 2" in out  # with the build: the device's choice
    rc, out, err = call(cli.pull_main, "--build", build_a, "--nvm", path, "--out", tmp_path / "p",
                        "--no-eval", capsys=capsys)
    assert rc == 0 and "generation 2" in out, err
    with open_device(build_a, nvm_path=path) as dev:
        assert dev.hello().generation == 2
    # a consistent header of another model in the first slot: not what the device boots
    other = dataclasses.replace(geo, model_id=geo.model_id ^ 0x100)
    commits = lay.n_slots + 1  # the last lands in slot 0, with the highest generation
    img[: lay.slot_size] = nvm.build_image(other, [factory_blob(build_a)] * commits)[
        : lay.slot_size]
    path.write_bytes(img)
    rc, out, _ = call(cli.emulate_main, "--build", build_a, "--nvm-report", path, capsys=capsys)
    assert rc == 1 and "Boot: slot 1, generation 2" in out and "foreign" in out
    with open_device(build_a, nvm_path=path) as dev:
        assert dev.hello().generation == 2


def test_damaged_inputs_are_one_line(build_a: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Reproducer: tracebacks (exit 1) for each of these."""
    out = tmp_path / "o"
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"dataset = \"caf\xe9\"\n")
    seed = tmp_path / "seed.toml"
    seed.write_text("seed = 9223372036854775807\n")
    for args, needle in (
        (["--config", latin], "UTF-8"),
        (["--board", latin], "UTF-8"),
        (["--config", seed], "seed"),
        (["--config", tmp_path], "directory"),
    ):
        assert_refused(call(cli.build_main, "--out", out, *args, capsys=capsys), needle)
    assert not out.exists()
    # a .tflite with one byte changed: the importer answers a model or a UserError, nothing else
    tfl = (build_a / "model.tflite").read_bytes()
    rng = np.random.default_rng(5)
    refused = 0
    for _ in range(1000):
        bad = bytearray(tfl)
        bad[int(rng.integers(len(tfl)))] ^= int(rng.integers(1, 256))
        try:
            import_tflite(bytes(bad))
        except UserError:
            refused += 1
    assert refused > 0
    # damaged build folders
    for damage in ("no-ir", "empty-report", "corrupt-report", "report-types"):
        b = tmp_path / damage
        shutil.copytree(build_a, b, ignore=shutil.ignore_patterns("src", "pio", "*.o"))
        if damage == "no-ir":
            shutil.rmtree(b / "ir")
        elif damage == "empty-report":
            (b / "report.json").write_text("")
        elif damage == "corrupt-report":
            (b / "report.json").write_bytes(b"{\"board\": \xff")
        else:
            (b / "report.json").write_text(json.dumps({"board": 3, "firmware": [], "config": 1}))
        assert_refused(call(cli.emulate_main, "--build", b, "--samples", 3, capsys=capsys))
        assert_refused(call(cli.pull_main, "--build", b, "--nvm", tmp_path / "x.img", "--out",
                            tmp_path / "px", capsys=capsys))
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28, 1), np.int8))
    assert_refused(call(cli.emulate_main, "--build", build_a, "--inputs", tmp_path / "x.npy",
                        "--dump-logits", tmp_path / "nope" / "y.npy", capsys=capsys), "nope")
    (tmp_path / "file").write_text("keep")
    image_of(build_a, tmp_path / "ok.img", factory_blob(build_a))
    assert_refused(call(cli.pull_main, "--build", build_a, "--nvm", tmp_path / "ok.img",
                        "--out", tmp_path / "file", capsys=capsys), "file")
    assert (tmp_path / "file").read_text() == "keep"


def test_real_processes_exit_2_with_one_line(build_a: Path, build_b: Path,
                                             tmp_path: Path) -> None:
    """The console scripts themselves (a handful of real processes)."""
    path = tmp_path / "b.img"
    img = image_of(build_b, path, factory_blob(build_b))
    for tool, args in (
        ("lrt-emulate", ["--build", build_a, "--samples", "3", "--nvm", path]),
        ("lrt-push", ["--build", build_a, "--weights", build_a / "model.tflite", "--nvm", path]),
        ("lrt-pull", ["--build", build_a, "--nvm", path, "--out", tmp_path / "o"]),
        ("lrt-flash", ["--board", "nucleo-f446re", "--build", tmp_path / "none"]),
        ("lrt-build", ["--out", tmp_path / "o", "--set", "seed=-1"]),
        ("lrt-experiment", ["--out", tmp_path / "e", "--sweep", "rank=x"]),
    ):
        proc = subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2, (tool, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (tool, proc.stderr)
    assert path.read_bytes() == img


def test_a_firmware_that_stops_at_boot_is_explained(build_a: Path, tmp_path: Path) -> None:
    """A weight store the firmware cannot open (here: a file in a missing directory) ends the
    process at boot with status 3; the reader names the status and what it means instead of
    a bare closed stream."""
    from lrt.emulate import HostRunner, LinkError
    from lrt.emulate.base import BOOT_FAILURES

    runner = HostRunner(build_a / "out" / "host" / "fw", nvm_path=tmp_path / "missing" / "x.img")
    dev = runner.start(timeout=30.0)
    try:
        with pytest.raises(LinkError, match="stopped at boot with status 3") as info:
            dev.hello()
        assert BOOT_FAILURES[3] in str(info.value)
    finally:
        assert dev.close(bye=False) == 3


def test_format_starts_over_and_says_so_once(
    build_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format over an image of this build at generation 2 starts the device over (what the
    flag asks for); the mount state said "was blank" and "formatted" at once."""
    path = tmp_path / "a.img"
    image_of(build_a, path, factory_blob(build_a), learned_blob(build_a))
    rc, out, err = call(cli.emulate_main, "--build", build_a, "--samples", 5, "--nvm", path,
                        "--format", capsys=capsys)  # fmt: skip
    assert rc == 0, err
    assert "generation 1; formatted at boot, built-in weights committed |" in out
    assert "was blank" not in out
    res = call(cli.emulate_main, "--build", build_a, "--samples", 5, "--format", capsys=capsys)
    assert_refused(res, "--format", "no --nvm")


@pytest.mark.parametrize(
    ("flag", "target"),
    [("--json", "report.json"), ("--markdown", "ir/model.json"), ("--nvm", "model.tflite"),
     ("--nvm", "out/host/fw")],
)  # fmt: skip
def test_outputs_never_overwrite_the_build(
    build_a: Path, tmp_path: Path, flag: str, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reproducer: --json B/report.json, --nvm B/model.tflite --format and --nvm B/out/host/fw
    --format each wrote over a file of the build and left it unusable."""
    copy = tmp_path / "b"
    shutil.copytree(build_a, copy, symlinks=True)
    (copy / "ir").mkdir(exist_ok=True)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    extra = ["--format"] if flag == "--nvm" else []
    res = call(cli.emulate_main, "--build", copy, "--samples", 5, flag, copy / target, *extra,
               capsys=capsys)  # fmt: skip
    assert_refused(res, f"{flag} {copy / target} is part of the build", "name a file elsewhere")
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    # a file of one's own in the build folder is fine
    res = call(cli.emulate_main, "--build", copy, "--samples", 5, "--json", copy / "run.json",
               capsys=capsys)  # fmt: skip
    assert res[0] == 0 and (copy / "run.json").is_file()


def test_library_refuses_what_the_cli_refuses(build_a: Path, tmp_path: Path) -> None:
    """Reproducer: run_online created a missing folder for json_path (at the filesystem's
    root, run as root) and took baud without port."""
    import lrt

    with pytest.raises(lrt.UserError, match=r"folder .* does not exist"):
        lrt.run_online(build_a, samples=5, json_path=tmp_path / "absent" / "x.json")
    assert not (tmp_path / "absent").exists()
    with pytest.raises(lrt.UserError, match="--baud sets the rate of --port"):
        lrt.run_online(build_a, samples=5, baud=9600)

"""`import lrt` is light and names the command-line entry points as functions."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lrt.errors import UserError


def test_entry_points_resolve_lazily_without_tensorflow() -> None:
    code = (
        "import sys, lrt\n"
        "import lrt.build, lrt.emulate\n"
        "assert 'lrt.pipeline' not in sys.modules\n"
        "from lrt import pipeline\n"
        "assert lrt.make_firmware is pipeline.build and lrt.run_online is pipeline.emulate\n"
        "assert lrt.load_build is pipeline.load_build\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error() -> None:
    import lrt

    with pytest.raises(AttributeError, match="no_such_thing"):
        lrt.no_such_thing  # noqa: B018


def test_the_api_is_listed_and_typed() -> None:
    import lrt
    from lrt import pipeline

    assert {"make_firmware", "run_online", "load_build", "UserError"} <= set(dir(lrt))
    assert lrt.UserError is pipeline.UserError
    for fn in (pipeline.build, pipeline.emulate, pipeline.load_build):
        assert fn.__doc__ and "UserError" in fn.__doc__ + (pipeline.load_build.__doc__ or "")
    # PEP 561: the wheel ships the marker next to the modules
    assert (Path(lrt.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        ({"bogus": 1}, ["unknown config field 'bogus'", "rank"]),
        ({"rank": 2.5}, ["'rank'", "int", "2.5"]),
        ({"rank": True}, ["'rank'", "True"]),
        ({"seed": "a"}, ["'seed'", "'a'"]),
        ({"train_layers": "conv1"}, ["'train_layers'", "list of strings"]),
    ],
)
def test_keyword_settings_are_checked_like_set(
    overrides: dict[str, object], needles: list[str]
) -> None:
    """A library call's keywords go through the checks --set and config files get: a bad
    one is a UserError naming it, never a TypeError or a compile error in the C it makes."""
    from lrt.config import load_config

    with pytest.raises(UserError) as err:
        load_config(None, **overrides)
    for needle in needles:
        assert needle in str(err.value)
    # the CLI's typed values and tuples pass
    cfg = load_config(None, rank=2, lr=1, train_layers=("dense",), seed=None)
    assert (cfg.rank, cfg.lr, cfg.train_layers) == (2, 1.0, ("dense",))


def test_training_without_tensorflow_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the `train` extra a preset build stops before writing anything, naming the
    extra and the way around it (an imported .tflite)."""
    from lrt import pipeline

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name in ("tensorflow", "keras") else real(name, *a),
    )  # fmt: skip
    with pytest.raises(UserError, match=r"lrt\[train\].*--model") as err:
        pipeline.build("host", tmp_path / "out", preset="tiny")
    assert "TensorFlow" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_native_quiet_shared_by_threads_restores_the_streams(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Two threads inside native_quiet at once, the first to enter leaving first: native
    writes to fds 1/2 stay muted until the last leaves, Python's streams keep printing, and
    afterwards the process's streams are the original ones, open."""
    from lrt import console

    before = sys.stdout, sys.stderr
    inside = threading.Barrier(2)
    first_left = threading.Event()

    def first() -> None:
        with console.native_quiet():
            inside.wait()
            os.write(2, b"native noise one\n")
        first_left.set()

    def second() -> None:
        with console.native_quiet():
            inside.wait()
            first_left.wait()
            os.write(1, b"native noise two\n")
            print("python line", file=sys.stderr)

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (sys.stdout, sys.stderr) == before
    assert not sys.stdout.closed and not sys.stderr.closed
    out, err = capfd.readouterr()
    assert "native noise" not in out + err
    assert "python line" in err
    os.write(2, b"after\n")
    assert "after" in capfd.readouterr().err


def test_native_quiet_shows_the_native_tail_of_a_failure(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from lrt import console

    with pytest.raises(RuntimeError), console.native_quiet():
        os.write(2, b"converter said why\n")
        raise RuntimeError("internal")
    assert "converter said why" in capfd.readouterr().err


def test_a_missing_compiler_names_its_debian_package() -> None:
    """Not a FileNotFoundError from subprocess: the tool and the package that brings it."""
    from lrt import boards, cflags

    with pytest.raises(UserError, match=r"'no-such-cc' not found.*apt install build-essential"):
        cflags.host_cflags(boards.load_board("host"), cc="no-such-cc")
    with pytest.raises(UserError, match="apt install gcc-arm-none-eabi libnewlib-arm-none-eabi"):
        cflags.require_tool(cflags.ARM_PREFIX + "no-such-tool")
    assert cflags.require_tool("sh") == "sh"


@pytest.mark.parametrize(
    "kwargs",
    [{"stats_every": -5}, {"last_n": 0}, {"samples": "5"}, {"samples": True}, {"samples": 2.5}],
)
def test_run_online_refuses_counts_below_one(tmp_path: Path, kwargs: dict[str, object]) -> None:
    """A negative stats_every once streamed no sample and reported accuracy 0 for all of them."""
    import lrt

    name = next(iter(kwargs))
    with pytest.raises(UserError, match=f"{name} .*expected an integer >= 1"):
        lrt.run_online(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_a_failing_thread_shows_its_own_native_tail(capfd: pytest.CaptureFixture[str]) -> None:
    """The thread that fails prints the native output since it entered; one that succeeds
    prints none, even when it leaves last."""
    from lrt import console

    inside = threading.Barrier(2)
    failed = threading.Event()
    errors: list[BaseException] = []
    seen: list[str] = []

    def failing() -> None:
        try:
            with console.native_quiet():
                inside.wait()
                os.write(2, b"why it broke\n")
                raise RuntimeError("internal")
        except RuntimeError as exc:
            errors.append(exc)
        failed.set()

    def succeeding() -> None:
        with console.native_quiet():
            inside.wait()
            failed.wait()
            seen.append(capfd.readouterr().err)
            os.write(2, b"harmless noise\n")

    threads = [threading.Thread(target=f) for f in (failing, succeeding)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1
    assert "why it broke" in seen[0]  # printed by the failing thread itself, at once
    assert "harmless noise" not in capfd.readouterr().err

"""lrt-experiment: the paper's environment x scheme grid on the generated firmware.

Each cell (environment, scheme, seed) streams an online run through the host emulator and
writes one JSON file, with the cell's settings; on a rerun a cell whose file holds the same
settings is skipped (resumable), any other is run again. Cells run through
an executor: a local process pool (default) or a Dask distributed cluster
(``--executor dask --scheduler ADDR``). One offline-trained model per (preset, seed) is
shared by every scheme, so the grid compares training schemes, not training luck.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lrt.config import PRESETS, SCHEMES, parse_setting
from lrt.errors import UserError

ENVIRONMENTS: tuple[str, ...] = ("control", "shift", "analog", "digital")


def option_name(key: str, value: Any) -> str:
    """``key=value`` as part of a file name: a dataset file by its name and the start of its
    content's digest, so two files of one name, or a file changed between runs, never share
    a trained model or a cell."""
    from lrt.data.userdata import file_digest, is_data_file

    text = str(value)
    if is_data_file(text):
        text = f"{Path(text).name}-{file_digest(text)[:8]}"
    return f"{key}={text}"


@dataclass(frozen=True)
class Cell:
    env: str
    scheme: str
    seed: int
    samples: int
    segment: int
    preset: str
    board: str
    # ablations: build-config overrides as sorted (key, value) pairs, part of the cell's key
    options: tuple[tuple[str, Any], ...] = ()
    last_n: int = 500  # window of the "last N samples" accuracy (the ablations' metric)
    model: str = ""  # the --model-dir the cell's firmware starts from ("": the grid's own)

    @property
    def key(self) -> str:
        extra = "".join(f"__{option_name(k, v)}" for k, v in self.options)
        return f"{self.env}__{self.scheme}__s{self.seed}{extra}"

    def overrides(self) -> dict[str, Any]:
        return dict(self.options)


def parser(
    parser_cls: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    p = parser_cls(prog="lrt-experiment", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/grid"),
        help="results directory (default %(default)s)",
    )
    p.add_argument(
        "--preset", choices=PRESETS, help="network preset (default: --model-dir's, else mcu)"
    )
    p.add_argument("--board", default="host", help="board of every cell (default %(default)s)")
    p.add_argument(
        "--samples", type=int, default=10_000, help="online samples per cell (default %(default)s)"
    )
    p.add_argument(
        "--segment",
        type=int,
        default=None,
        help="samples per shift segment (default: a quarter of --samples)",
    )
    p.add_argument(
        "--envs",
        default=",".join(ENVIRONMENTS),
        help="comma-separated environments (default %(default)s)",
    )
    p.add_argument(
        "--schemes",
        default=",".join(SCHEMES),
        help="comma-separated schemes (default %(default)s)",
    )
    p.add_argument(
        "--seeds", default="0", help="comma-separated stream seeds (default %(default)s)"
    )
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="cells run at once (default: CPUs)"
    )
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="where cells run: local processes (default) or a Dask cluster (--scheduler)",
    )
    p.add_argument("--scheduler", help="Dask scheduler address (with --executor dask)")
    p.add_argument(
        "--model-dir",
        type=Path,
        help="reuse this offline-trained model (an lrt-build directory) instead of training",
    )
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="build-config fields for every cell, e.g. --set epochs=0 rank=8 (repeatable)",
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="ablation / hyper-parameter sweep: one cell per value (repeatable: cartesian "
        "product), e.g. --sweep rank=1,2,4,8 --sweep weight_bits=2,4,8",
    )
    p.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="SCHEME:KEY=V1,V2,...",
        help="one scheme's own axis, for the wear-accuracy frontier (repeatable), e.g. "
        "--knob sgd:lr=0.003,0.01,0.03 --knob lrt-maxnorm:gate_errors=1,2,4",
    )
    p.add_argument(
        "--last-n",
        type=int,
        default=500,
        help="sweep tables report accuracy over the last N samples (paper's ablations: 500)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write --out's REPORT.md from every cell it holds (pools several "
        "invocations into one report, e.g. two knobs of one scheme)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="print nothing but errors (REPORT.md has the results)"
    )
    return p


# fields a cell has its own axis for (or that make no sense per cell)
RESERVED_OPTIONS: dict[str, str] = {
    "preset": "use --preset",
    "scheme": "use --schemes",
    "seed": "use --seeds",
    "train_layers": "not supported in experiments",
    "data_dir": "not supported in experiments",
}


def parse_options(
    sets: list[str], sweeps: list[str], sweep_flag: str = "--sweep"
) -> list[tuple[tuple[str, Any], ...]]:
    """The option combinations of --set / --sweep (each sorted by key); sweep_flag names the
    flag the sweeps came from in errors."""
    for item in sets + sweeps:
        key = item.partition("=")[0].strip().replace("-", "_")
        if key in RESERVED_OPTIONS:
            raise UserError(f"--set/--sweep {key}: {RESERVED_OPTIONS[key]}")
    fixed = dict(parse_setting(item, "--set") for item in sets)
    axes: list[list[tuple[str, Any]]] = []
    for item in sweeps:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise UserError(f"{sweep_flag} {item!r}: expected KEY=V1,V2,...")
        axis = [parse_setting(f"{key}={v}", sweep_flag) for v in values.split(",") if v.strip()]
        if axis[0][0] in fixed or any(axis[0][0] == a[0][0] for a in axes):
            raise UserError(f"{sweep_flag} {item!r}: '{axis[0][0]}' is given twice")
        axes.append(axis)
    combos = []
    for picked in itertools.product(*axes):
        combos.append(tuple(sorted({**fixed, **dict(picked)}.items())))
    return combos


def parse_knobs(
    knobs: list[str], schemes: list[str], taken: set[str]
) -> dict[str, list[tuple[tuple[str, Any], ...]]]:
    """--knob SCHEME:KEY=V1,V2: per scheme, the option sets of its own axes (cartesian)."""
    axes: dict[str, list[list[tuple[str, Any]]]] = {}
    for item in knobs:
        scheme, sep, rest = item.partition(":")
        scheme = scheme.strip()
        if not sep or scheme not in schemes:
            raise UserError(f"--knob {item!r}: expected SCHEME:KEY=V1,V2 with a scheme of "
                            f"--schemes ({', '.join(schemes)})")  # fmt: skip
        key = rest.partition("=")[0].strip().replace("-", "_")
        if key in RESERVED_OPTIONS or key in MODEL_OPTIONS or key in taken:
            raise UserError(f"--knob {item!r}: '{key}' cannot be a scheme's own axis here")
        try:
            axis = parse_options([], [rest], sweep_flag="--knob")
        except UserError as exc:
            raise UserError(f"{exc} (in --knob {item!r})") from None
        if any(key == a[0][0][0] for a in axes.get(scheme, [])):
            raise UserError(f"--knob {item!r}: '{key}' is given twice for {scheme}")
        axes.setdefault(scheme, []).append([c[0] for c in axis])
    return {s: [tuple(sorted(p)) for p in itertools.product(*a)] for s, a in axes.items()}


def _split(text: str, allowed: Iterable[str], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    allowed = tuple(allowed)
    bad = [s for s in items if s not in allowed]
    if bad:
        raise UserError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


# options that change the offline-trained model, not only the firmware
MODEL_OPTIONS: tuple[str, ...] = ("epochs", "dataset", "augment_train")


def model_options(cell: Cell) -> dict[str, Any]:
    return {k: v for k, v in cell.options if k in MODEL_OPTIONS}


def model_dir(out: Path, preset: str, seed: int, options: dict[str, Any] | None = None) -> Path:
    extra = "".join(f"-{option_name(k, v)}" for k, v in sorted((options or {}).items()))
    return out / "models" / f"{preset}-s{seed}{extra}"


def build_dir(out: Path, cell: Cell) -> Path:
    extra = "".join(f"-{option_name(k, v)}" for k, v in cell.options)
    return out / "builds" / f"{cell.preset}-{cell.scheme}-s{cell.seed}{extra}"


# what a build directory was built for, beside its report: a build for another board or
# from another model under the same name is rebuilt, not reused
BUILD_STAMP = "experiment-build.json"


def _settings(obj: Any) -> Any:
    """As it reads back from JSON (tuples become lists), for comparing with a stored copy."""
    return json.loads(json.dumps(obj))


def prepare(out: Path, cells: list[Cell], progress: bool, trained: Path | None = None) -> None:
    """Train once per (preset, seed), then build one firmware per scheme (sequential: cheap)."""
    from lrt import pipeline

    # a --model-dir's cells stream from the data it was trained on
    data: dict[str, Any] = {}
    if trained is not None:
        config = pipeline.read_report(trained / pipeline.REPORT_NAME)["config"]
        data = {k: config[k] for k in ("dataset", "data_dir") if config.get(k) is not None}
    for cell in cells:
        mopts = model_options(cell)
        mdir = trained or model_dir(out, cell.preset, cell.seed, mopts)
        if not (mdir / "ir" / "model.json").is_file():
            pipeline.build(
                board="host",
                out=mdir,
                preset=cell.preset,
                scheme="inference",
                seed=cell.seed,
                progress=progress,
                **mopts,
            )
        bdir = build_dir(out, cell)
        stamp = _settings({"board": cell.board, "model": str(mdir.resolve())})
        try:
            built_for = json.loads((bdir / BUILD_STAMP).read_text())
        except (OSError, ValueError):
            built_for = None
        if built_for != stamp or not (bdir / pipeline.REPORT_NAME).is_file():
            pipeline.build(
                board=cell.board,
                out=bdir,
                preset=cell.preset,
                scheme=cell.scheme,
                seed=cell.seed,
                ir_dir=mdir,
                progress=False,
                **{**data, **cell.overrides()},
            )
            (bdir / BUILD_STAMP).write_text(json.dumps(stamp) + "\n")


def run_cell(out: Path, cell: Cell) -> dict[str, Any]:
    """Run one cell and write its JSON (atomically, so an interrupted grid resumes cleanly)."""
    from lrt import pipeline

    result = pipeline.emulate(
        build_dir=build_dir(out, cell),
        samples=cell.samples,
        stream=cell.env,
        segment=cell.segment,
        seed=cell.seed,
        progress=False,
        stats_every=max(cell.samples // 100, 10),
        last_n=cell.last_n,
    )
    data = {"cell": asdict(cell), **result.to_dict()}
    path = out / "cells" / f"{cell.key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return data


def _local_executor(
    out: Path, cells: list[Cell], jobs: int, progress: bool
) -> list[dict[str, Any]]:
    results = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_cell, out, c) for c in cells]
        for fut in tqdm(
            as_completed(futures), total=len(futures), disable=not progress, desc="cells"
        ):
            results.append(fut.result())
    return results


def _dask_executor(
    out: Path, cells: list[Cell], scheduler: str | None, progress: bool
) -> list[dict[str, Any]]:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise UserError("--executor dask needs the 'dask' extra: pip install 'lrt[dask]'") from None
    if not scheduler:
        raise UserError("--executor dask needs --scheduler ADDR (e.g. tcp://host:8786)")
    results = []
    with Client(scheduler) as client:
        futures = client.map(run_cell, [out] * len(cells), cells, pure=False)
        for fut in tqdm(
            dask_completed(futures), total=len(futures), disable=not progress, desc="cells"
        ):
            results.append(fut.result())
    return results


def _is_done(out: Path, cell: Cell) -> bool:
    """The cell's file exists and was computed with exactly this cell's settings."""
    try:
        stored = json.loads((out / "cells" / f"{cell.key}.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and stored.get("cell") == _settings(asdict(cell))


def _check_model_dir(path: Path, preset: str | None) -> str:
    """The preset of the trained build --model-dir names (UserError if it is not one, or
    was trained for another preset than --preset)."""
    from lrt import pipeline

    if not (path / pipeline.REPORT_NAME).is_file() or not (path / "ir" / "model.json").is_file():
        raise UserError(
            f"--model-dir {path} is not an lrt build (no {pipeline.REPORT_NAME} and ir/); "
            "give a directory written by lrt-build, or leave --model-dir out to train"
        )
    config = pipeline.read_report(path / pipeline.REPORT_NAME)["config"]
    trained = config.get("preset")
    if not isinstance(trained, str):
        raise UserError(f"--model-dir {path}: its {pipeline.REPORT_NAME} names no preset")
    if preset is not None and preset != trained:
        raise UserError(
            f"--preset {preset}: --model-dir {path} holds a {trained} model; "
            f"use --preset {trained} or another --model-dir"
        )
    return trained


def run_grid(
    out: Path,
    cells: list[Cell],
    jobs: int = 1,
    executor: str = "local",
    scheduler: str | None = None,
    progress: bool = True,
    trained: Path | None = None,
    report: bool = True,
) -> list[dict[str, Any]]:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, expected a directory")
    out.mkdir(parents=True, exist_ok=True)
    prepare(out, cells, progress, trained)
    todo = [c for c in cells if not _is_done(out, c)]
    if todo:
        if executor == "dask":
            _dask_executor(out, todo, scheduler, progress)
        else:
            _local_executor(out, todo, jobs, progress)
    results = [json.loads((out / "cells" / f"{c.key}.json").read_text()) for c in cells]
    if report:
        from lrt.grid_report import write_grid_report

        write_grid_report(out, results)
    return results


# what every pooled cell must share: points run on other streams or another model are not
# comparable on one frontier
POOL_SHARED: tuple[str, ...] = ("samples", "segment", "preset", "board", "last_n", "model")


def pooled_cells(out: Path) -> list[dict[str, Any]]:
    """Every cell JSON of an experiment directory (UserError when there is none, or when the
    cells were run on different streams or models)."""
    paths = sorted((out / "cells").glob("*.json"))
    if not paths:
        raise UserError(f"--report-only: {out / 'cells'} holds no cell; run the grid first")
    results = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
            data["cell"]["env"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"--report-only: {path} is not a cell result; remove it") from None
        results.append(data)
    for key in POOL_SHARED:
        values = sorted({repr(r["cell"].get(key)) for r in results})
        if len(values) > 1:
            raise UserError(
                f"--report-only: the cells in {out} differ in {key} ({', '.join(values)}); "
                "pool only cells of one stream length, board and model"
            )
    return results


def run_from_args(args: argparse.Namespace) -> int:
    if args.scheduler and args.executor != "dask":
        raise UserError("--scheduler is the Dask scheduler of --executor dask, which is not given")
    if args.report_only:
        defaults = parser()
        given = [
            "--" + dest.replace("_", "-")
            for dest, value in sorted(vars(args).items())
            if dest not in ("out", "report_only", "quiet", "jobs")
            and value != defaults.get_default(dest)
        ]
        if given:
            raise UserError(
                f"--report-only runs nothing, so {', '.join(given)} would have no effect: "
                "leave them out (the report pools the cells --out holds)"
            )
        from lrt.grid_report import write_grid_report

        path = write_grid_report(args.out, pooled_cells(args.out))
        if not args.quiet:
            print(f"report: {path}")
        return 0
    envs = _split(args.envs, ENVIRONMENTS, "environment")
    schemes = _split(args.schemes, SCHEMES, "scheme")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        # a repeated seed would count one stream twice in every mean and standard error
        raise UserError(f"--seeds {args.seeds!r}: expected distinct integers >= 0")
    for flag, value in (("--samples", args.samples), ("--segment", args.segment),
                        ("--last-n", args.last_n), ("--jobs", args.jobs)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: expected >= 1")
    from lrt import boards

    boards.load_board(args.board)  # an unknown board is refused before --out is created
    segment = args.segment or max(args.samples // 4, 1)
    last_n = min(args.last_n, args.samples)
    combos = parse_options(args.set, args.sweep)
    model_keys = sorted({k for c in combos for k, _ in c if k in MODEL_OPTIONS})
    if args.model_dir is not None and model_keys:
        raise UserError(
            f"--model-dir fixes the offline model; {', '.join(model_keys)} cannot be set with it"
        )
    preset = args.preset or "mcu"
    model = ""
    if args.model_dir is not None:
        preset = _check_model_dir(args.model_dir, args.preset)
        model = str(args.model_dir.resolve())
    taken = {k for c in combos for k, _ in c}
    knobs = parse_knobs(args.knob, schemes, taken)
    from lrt.config import load_config

    for options in combos:  # every setting checked before --out is created
        for scheme in schemes:
            for own in knobs.get(scheme, [()]):
                load_config(None, scheme=scheme, **dict(options + own))
    cells = [
        Cell(
            env,
            scheme,
            seed,
            args.samples,
            segment,
            preset,
            args.board,
            tuple(sorted(options + own)),
            last_n,
            model,
        )
        for options in combos
        for seed in seeds
        for env in envs
        for scheme in schemes
        for own in knobs.get(scheme, [()])
    ]
    run_grid(
        args.out,
        cells,
        args.jobs,
        args.executor,
        args.scheduler,
        progress=not args.quiet,
        trained=args.model_dir,
    )
    if not args.quiet:
        print(f"report: {args.out / 'REPORT.md'}")
    return 0

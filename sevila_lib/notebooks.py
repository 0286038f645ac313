"""Batch runner: execute the ordered notebooks headlessly with papermill into `reports/`.

    python -m sevila_lib.notebooks run --profile mini             # every notebook (what `make reports` does)
    python -m sevila_lib.notebooks run --only 03_ablation_frames  # rerun one notebook
    python -m sevila_lib.notebooks run --profile paper -p val_annotations=/data/nextqa/val.csv \\
        -p video_root=/data/videos -p checkpoint=/ckpt/sevila.pth
    python -m sevila_lib.notebooks run --smoke --reports-dir /tmp/r  # the test suite's quick parameter set

Each notebook executes into a hidden temp file beside its report and replaces `reports/NN_name.ipynb` only when
it ran to the end, so an interrupted or failed run (an error, Ctrl-C) never overwrites the last complete executed
notebook with a partial one. The partial copy is kept as `reports/NN_name.partial.ipynb`, with a banner cell
saying that it stopped (papermill marks the error cell). After the first failure no further notebook starts; the
finished notebooks' outputs stay in place.

`--jobs N` runs up to N notebooks side by side (default: one per core, at most 3), each only after the notebooks it
reads (`AFTER`: e.g. 03, 05, 07 and 08 use 02's training runs). Every kernel computes on one thread, so the
numbers are the same whatever N and the machine's core count; a run of every notebook records each one's duration
in `reports/durations.md` (a rerun of some of them leaves that record alone).

Every notebook's parameters cell declares `shared: dict = {}` — the parameters all notebooks share
(`workspace.SHARED`: profile, paths, device, seed, limits) — and a few of its own. `-p NAME=VALUE` with a name of
`SHARED` goes into `shared` (typed by SHARED's default); any other NAME must be declared in the parameters cell
of at least one selected notebook. VALUE must parse as the declared type (`int`, `float`, `bool` — true/false,
yes/no, 1/0 — `str`, `list`, ...); otherwise the runner refuses before running anything, naming the parameter.
Only this runner writes `reports/`: an interactive run's `shared` is empty, so it writes the scratch folder.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import os
import sys
import time
from pathlib import Path

from . import paths

# What a profile puts into every notebook's `shared` parameters (`workspace.SHARED`).
PROFILES: dict[str, dict] = {
    "mini": dict(profile="mini"),  # the embedded default: the moments world + the shipped mini BLIP-2
    "paper": dict(profile="paper", device="cuda"),  # real data and weights on a GPU: pass the paths with -p
}
SMOKE = dict(smoke=True, max_questions=8)  # tiny question limits and training steps, for `make test`


def notebook_paths(notebooks_dir: Path = paths.NOTEBOOKS_DIR) -> list[Path]:
    """The ordered notebooks: NN_name.ipynb."""
    return sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(notebooks: list[Path]) -> dict[str, dict[str, str]]:
    """{parameter: {notebook stem: declared type name}} from each notebook's parameters cell (papermill's
    `inspect_notebook` reads the cell's names, types and defaults without running it)."""
    import papermill

    declared: dict[str, dict[str, str]] = {}
    for path in notebooks:
        for name, info in papermill.inspect_notebook(str(path)).items():
            declared.setdefault(name, {})[path.stem] = info["inferred_type_name"]
    return declared


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}
_KINDS = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list, "dict": dict, "tuple": tuple}


def coerce_parameter(name: str, value, declared_type: str):
    """`value` (a command-line string or a Python value) as `declared_type`, or ValueError naming the parameter.

    Strings are parsed by the declared type: "false"/"no"/"0" is False for a bool (not the truthy string "false"),
    "8" is 8 for an int, and a str parameter takes the text as is. Python values must already have the type.
    """
    optional = declared_type.startswith("Optional[")
    base = declared_type.removeprefix("Optional[").removesuffix("]")
    if base not in _KINDS:  # None, Any, or a type papermill did not infer: a Python literal, else the text
        return _parse_value(value) if isinstance(value, str) else value
    if base == "str" and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and base != "str":
        text = value.strip()
        if optional and text == "None":
            return None
        if base == "bool":
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError(f"parameter {name!r} is declared {declared_type}: {value!r} is not true/false "
                                 f"(or yes/no, 1/0)")
            return text.lower() in _TRUE
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"parameter {name!r} is declared {declared_type}: {value!r} is not a "
                             f"{base} literal") from None
    if value is None and optional:
        return None
    if not isinstance(value, _KINDS[base]) or (base in ("int", "float") and isinstance(value, bool)):
        raise ValueError(f"parameter {name!r} is declared {declared_type}: got {value!r} "
                         f"({type(value).__name__})")
    return float(value) if base == "float" else value


def check_parameters(parameters: dict, notebooks: list[Path]) -> dict:
    """The user's parameters with their values coerced to the declared types (a shared parameter's type is its
    `workspace.SHARED` default's); ValueError names an unknown parameter (with the declared ones) or a value of
    the wrong type."""
    from .workspace import SHARED

    declared = declared_parameters(notebooks)
    checked = {}
    for name, value in parameters.items():
        if name in SHARED:
            checked[name] = coerce_parameter(name, value, type(SHARED[name]).__name__)
            continue
        if name not in declared:
            close = difflib.get_close_matches(name, [*declared, *SHARED], n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(f"unknown parameter {name!r}: neither workspace.SHARED nor a parameters cell of "
                             f"{[p.stem for p in notebooks]} declares it{hint} (declared: {sorted(declared)}; "
                             f"shared: {sorted(SHARED)})")
        for declared_type in sorted(set(declared[name].values())):
            checked[name] = coerce_parameter(name, value, declared_type)
    return checked


def partial_path(target: Path) -> Path:
    """Where the partial copy of an interrupted or failed run of `target` is kept: NN_name.partial.ipynb."""
    return target.with_name(target.stem + ".partial.ipynb")


def _keep_partial(running: Path, target: Path, why: str) -> Path | None:
    """Move the interrupted run's output beside the report, with a banner cell first; None if nothing ran."""
    if not running.exists():
        return None
    import nbformat

    partial = partial_path(target)
    try:
        nb = nbformat.read(running, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            f"**INCOMPLETE RUN ({why}).** This notebook stopped before its end; its outputs are partial. The "
            f"last complete run, if any, is `{target.name}`."))
        nbformat.write(nb, running)
    except Exception:  # an unreadable partial file is still kept as it is
        pass
    os.replace(running, partial)
    return partial


# Which notebooks read what another one made (its training runs or tables); the runner starts a notebook only
# after these have finished, and runs the others side by side (`jobs`).
AFTER: dict[str, tuple[str, ...]] = {
    "03_ablation_frames": ("02_reverse_chain",),  # Localizer† of 02
    "05_ablation_threshold": ("02_reverse_chain",),  # the fine-tuned Answerer of 02 as a labeller
    "06_paper_tables": ("01_forward_chain", "02_reverse_chain", "03_ablation_frames", "04_ablation_prompts",
                        "05_ablation_threshold", "09_iterations"),  # their tables, beside the paper's
    "07_keyframe_selectors": ("02_reverse_chain",),  # the refined Localizer of 02
    "08_main_results": ("02_reverse_chain",),  # every training run of 02
    "09_iterations": ("02_reverse_chain",),  # round 1 is 02's SeViLA (row G)
}
# Each notebook's kernel computes on one thread, so its numbers never depend on the machine's core count (BLAS
# sums in another order on more threads); the runner uses the cores by running notebooks side by side instead.
KERNEL_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def default_jobs() -> int:
    """Notebooks run side by side: one per core, at most 3 (the dependency graph rarely has more ready)."""
    return max(1, min(3, os.cpu_count() or 1))


def run(profile: str = "mini", only: list[str] | None = None, smoke: bool = False,
        parameters: dict | None = None, reports_dir: Path | None = None, kernel: str = "python3",
        notebooks_dir: Path | None = None, jobs: int = 1) -> list[Path]:
    """Execute the notebooks, `jobs` at a time in dependency order (`AFTER`; a dependency that is not selected is
    assumed done); returns the executed copies in notebook order. On the first failure (or Ctrl-C) no further
    notebook starts, the running ones finish, and the error is raised, keeping the previous complete copy of the
    failed notebook and the partial one beside it (module docstring). A run of every notebook writes its durations to
    `reports/durations.md`; a rerun of some of them leaves that record alone."""
    import papermill

    from . import report
    from .workspace import SHARED

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    notebooks_dir = Path(notebooks_dir or paths.NOTEBOOKS_DIR)
    selected = [p for p in notebook_paths(notebooks_dir) if not only or p.stem in only or p.name in only]
    if only and len(selected) != len(only):
        raise ValueError(f"no notebook named {sorted(set(only) - {p.stem for p in selected})}")
    user = check_parameters(dict(parameters or {}), selected)
    reports_dir = Path(reports_dir or paths.REPORTS_DIR)
    reports_dir.mkdir(parents=True, exist_ok=True)
    shared = {**PROFILES[profile], **(SMOKE if smoke else {}), "reports_dir": str(reports_dir.resolve()),
              **{name: value for name, value in user.items() if name in SHARED}}
    params = {"shared": shared, **{name: value for name, value in user.items() if name not in SHARED}}
    os.environ.update(KERNEL_THREADS)  # inherited by every kernel started below

    cpu_seconds: dict[str, float] = {}

    def execute(source: Path) -> float:
        target = reports_dir / source.name
        running = reports_dir / f".{source.stem}.running.ipynb"  # hidden: the reports index skips it
        started = time.time()
        print(f"[{source.stem}] running ...", flush=True)
        try:
            papermill.execute_notebook(str(source), str(running), parameters=params, kernel_name=kernel,
                                       cwd=str(notebooks_dir), progress_bar=False, log_output=False,
                                       kernel_manager_class=_measured_kernel_manager(cpu_seconds, source.stem))
        except BaseException as err:
            why = "interrupted" if isinstance(err, KeyboardInterrupt) else f"failed: {type(err).__name__}"
            partial = _keep_partial(running, target, why)
            kept = f"the last complete run is still {target}" if target.exists() else "no complete run exists"
            status = "INTERRUPTED" if isinstance(err, KeyboardInterrupt) else "FAILED"
            print(f"[{source.stem}] {status} after {time.time() - started:.0f} s; partial notebook: "
                  f"{partial or 'none'}; {kept}", file=sys.stderr)
            if isinstance(err, papermill.PapermillExecutionError):
                print(f"{err.ename}: {err.evalue}", file=sys.stderr)
            raise
        os.replace(running, target)
        partial_path(target).unlink(missing_ok=True)  # a stale partial copy of an earlier run
        seconds = time.time() - started
        print(f"[{source.stem}] done in {seconds:.0f} s -> {target}", flush=True)
        return seconds

    run_started = time.time()
    durations = _run_in_order(selected, execute, jobs)
    if len(selected) == len(notebook_paths(notebooks_dir)):
        _write_durations(reports_dir / "durations.md", durations, jobs, cpu_seconds, time.time() - run_started)
    else:  # a rerun of some notebooks keeps the last full run's record
        print(f"{len(durations)} of the notebooks ran in {time.time() - run_started:.0f} s; "
              f"{reports_dir / 'durations.md'} keeps the last full run's durations", flush=True)
    report.write_index(reports_dir)
    return [reports_dir / p.name for p in selected]


def _run_in_order(selected: list[Path], execute, jobs: int) -> dict[str, float]:
    """`execute(notebook)` for each, at most `jobs` at once, each only after its selected `AFTER` notebooks."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    names = {p.stem for p in selected}
    # Of the notebooks ready to start, those that others wait for first (02's training runs are the critical path).
    waited_for = {d: sum(d in deps for deps in AFTER.values()) for d in names}
    waiting = sorted(selected, key=lambda p: -waited_for[p.stem])  # stable: notebook order among equals
    running, durations, failure = {}, {}, None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while waiting or running:
            ready = [p for p in waiting if all(d in durations for d in AFTER.get(p.stem, ()) if d in names)]
            while failure is None and ready and len(running) < max(1, jobs):
                source = ready.pop(0)
                waiting.remove(source)
                running[pool.submit(execute, source)] = source
            if not running:  # a failure stopped new starts (or nothing can start): done
                break
            try:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # the kernels got the same Ctrl-C; wait for them to wind up
                failure = failure or KeyboardInterrupt()
                wait(list(running))
                continue
            for future in finished:
                source = running.pop(future)
                try:
                    durations[source.stem] = future.result()
                except BaseException as err:
                    failure = failure or err
    if failure is not None:
        raise failure
    return durations


def _measured_kernel_manager(cpu_seconds: dict[str, float], name: str) -> type:
    """The kernel manager papermill starts the kernel with, recording in `cpu_seconds[name]` the CPU time the
    kernel used (user + system, its own and its finished child processes': 02's seed processes) just before it is
    shut down. Wall time says how long a run took; CPU time says how much work each notebook is, whatever ran
    beside it."""
    from jupyter_client.manager import AsyncKernelManager

    class MeasuredKernelManager(AsyncKernelManager):
        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            try:
                import psutil

                used = psutil.Process(self.provisioner.process.pid).cpu_times()
                cpu_seconds[name] = used.user + used.system + used.children_user + used.children_system
            except Exception:  # noqa: BLE001 (psutil missing, or a kernel already gone: no CPU time recorded)
                pass
            await super().shutdown_kernel(now=now, restart=restart)

    return MeasuredKernelManager


def _write_durations(path: Path, durations: dict[str, float], jobs: int, cpu_seconds: dict[str, float] | None = None,
                     total_seconds: float | None = None) -> None:
    from .files import atomic_write_text

    cpu = cpu_seconds or {}
    lines = ["# Notebook durations (this run)", "",
             f"{jobs} notebook(s) at a time, one compute thread each, on {os.cpu_count()} cores. CPU seconds: the "
             "kernel's and its finished child processes' (user + system): how much work the notebook is.", "",
             "| notebook | seconds | CPU seconds |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.0f} | {_seconds(cpu.get(name))} |"
              for name, seconds in durations.items()]
    if total_seconds is not None:
        lines.append(f"| whole run | {total_seconds:.0f} | {_seconds(sum(cpu.values()) if cpu else None)} |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevila_lib.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="execute the notebooks into reports/")
    run_parser.add_argument("--profile", default="mini", choices=sorted(PROFILES))
    run_parser.add_argument("--only", nargs="+", help="notebook names (e.g. 03_ablation_frames) to run")
    run_parser.add_argument("--smoke", action="store_true", help="tiny question limits (what the tests use)")
    run_parser.add_argument("--reports-dir", type=Path, default=None)
    run_parser.add_argument("--jobs", type=_positive, default=default_jobs(),
                            help="notebooks run side by side, in dependency order (default: cores, at most 3)")
    run_parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                            help="override a notebook parameter, parsed as its parameters cell declares")
    sub.add_parser("list", help="list the ordered notebooks")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(p.name for p in notebook_paths()))
        return 0
    bad = [item for item in args.parameter if "=" not in item]
    if bad:
        parser.error(f"-p takes NAME=VALUE, got {bad[0]!r}")
    overrides = dict(item.split("=", 1) for item in args.parameter)  # strings, typed by the parameters cells
    try:
        run(args.profile, args.only, args.smoke, overrides, args.reports_dir, jobs=args.jobs)
    except ValueError as err:  # a bad parameter or notebook name: refused before anything ran
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the message above already names the notebook
        print(f"stopped: {type(err).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

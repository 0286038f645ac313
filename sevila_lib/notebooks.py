"""Batch runner: execute the ordered notebooks headlessly with papermill into `reports/`.

    python -m sevila_lib.notebooks run --profile mini             # every notebook, in order (what `make reports` does)
    python -m sevila_lib.notebooks run --only 03_ablation_frames  # rerun one notebook
    python -m sevila_lib.notebooks run --profile paper -p data_root=/data -p checkpoint=/ckpt/sevila_pretrained.pth
    python -m sevila_lib.notebooks run --smoke --reports-dir /tmp/r  # the test suite's quick parameter set

Stops at the first failure and keeps the failed executed notebook (papermill writes it with the error cell
marked), so nothing already computed is lost; the earlier notebooks' outputs stay in place.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from . import paths

# What a profile passes to every notebook's parameters cell (each notebook ignores what it does not declare).
PROFILES: dict[str, dict] = {
    "mini": dict(profile="mini"),  # the embedded default: the moments world + the shipped mini BLIP-2
    "paper": dict(profile="paper", device="cuda"),  # real data and weights on a GPU: pass the paths with -p
}
SMOKE = dict(smoke=True, max_questions=8)  # tiny question limits and training steps, for `make test`


def notebook_paths(notebooks_dir: Path = paths.NOTEBOOKS_DIR) -> list[Path]:
    """The ordered notebooks: NN_name.ipynb."""
    return sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def run(profile: str = "mini", only: list[str] | None = None, smoke: bool = False,
        parameters: dict | None = None, reports_dir: Path | None = None, kernel: str = "python3") -> list[Path]:
    """Execute the notebooks in order; returns the executed copies. Raises on the first failure."""
    import papermill

    from . import report

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    reports_dir = Path(reports_dir or paths.REPORTS_DIR)
    reports_dir.mkdir(parents=True, exist_ok=True)
    params = {**PROFILES[profile], **(SMOKE if smoke else {}), "reports_dir": str(reports_dir), **(parameters or {})}
    selected = [p for p in notebook_paths() if not only or p.stem in only or p.name in only]
    if only and len(selected) != len(only):
        raise ValueError(f"no notebook named {sorted(set(only) - {p.stem for p in selected})}")
    executed = []
    for source in selected:
        target = reports_dir / source.name
        started = time.time()
        print(f"[{source.stem}] running ...", flush=True)
        try:
            papermill.execute_notebook(str(source), str(target), parameters=params, kernel_name=kernel,
                                       cwd=str(paths.NOTEBOOKS_DIR), progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as err:
            print(f"[{source.stem}] FAILED after {time.time() - started:.0f} s; the executed notebook with the "
                  f"error is {target}\n{err.ename}: {err.evalue}", file=sys.stderr)
            raise
        print(f"[{source.stem}] done in {time.time() - started:.0f} s -> {target}", flush=True)
        executed.append(target)
    report.write_index(reports_dir)
    return executed


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
    run_parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                            help="override a notebook parameter (Python literal or string)")
    sub.add_parser("list", help="list the ordered notebooks")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(p.name for p in notebook_paths()))
        return 0
    overrides = dict(item.split("=", 1) for item in args.parameter)
    try:
        run(args.profile, args.only, args.smoke, {k: _parse_value(v) for k, v in overrides.items()}, args.reports_dir)
    except Exception as err:  # the message above already names the notebook
        print(f"stopped: {type(err).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

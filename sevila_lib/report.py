"""Report helpers: our numbers beside the paper's, plain-text tables, figures, and the reports/ index.

The tables compare against `sevila_lib.paper` (the paper's tables). Markdown and
LaTeX are formatted here by hand, because pandas' `to_markdown` needs `tabulate` and `to_latex` needs jinja2, neither
of which the kit depends on. Files are written atomically (temp file + os.replace) so a crashed run never leaves a
half-written report (`reports/` is generated: one command regenerates it).
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sevila_lib.files import atomic_write_text as _write_atomic, write_dataframe  # noqa: F401 (re-exported)
from sevila_lib.paths import REPORTS_DIR

# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------


def side_by_side(
    ours: pd.DataFrame,
    paper: pd.DataFrame,
    on: str | list[str],
    columns: Sequence[str],
    how: str = "left",
    delta: bool = False,
) -> pd.DataFrame:
    """Our numbers beside the paper's: key column(s) `on`, then `<col> (ours)`, `<col> (paper)` for each column.

    Rows are joined on `on` (`how="left"` keeps our rows; use "outer" to also list paper rows we did not run).
    `delta=True` adds `<col> (Δ)` = ours - paper. A column missing on either side is filled with NaN.
    """
    keys = [on] if isinstance(on, str) else list(on)
    left = ours.reindex(columns=[*keys, *columns])
    right = paper.reindex(columns=[*keys, *columns])
    merged = left.merge(right, on=keys, how=how, suffixes=(" (ours)", " (paper)"))
    out = merged[keys].copy()
    for col in columns:
        out[f"{col} (ours)"] = merged[f"{col} (ours)"]
        out[f"{col} (paper)"] = merged[f"{col} (paper)"]
        if delta:
            out[f"{col} (Δ)"] = merged[f"{col} (ours)"] - merged[f"{col} (paper)"]
    return out


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame, on: str | list[str], ours_columns: Sequence[str],
                 paper_columns: Sequence[str]) -> pd.DataFrame:
    """Our columns (suffixed " (ours)") beside the paper's (suffixed " (paper)") for our rows, matched on `on`.
    Unlike `side_by_side` the two column sets may differ, e.g. the mini world's accuracy beside NExT-QA's."""
    keys = [on] if isinstance(on, str) else list(on)
    left = ours[[*keys, *ours_columns]].rename(columns={c: f"{c} (ours)" for c in ours_columns})
    right = paper[[*keys, *paper_columns]].rename(columns={c: f"{c} (paper)" for c in paper_columns})
    return left.merge(right, on=keys, how="left")


def _cell(value: object, floatfmt: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "✓" if value else "✗"
    if isinstance(value, (float, np.floating)):
        return format(float(value), floatfmt)
    return str(value)


def _rows(df: pd.DataFrame, floatfmt: str, index: bool) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header cells, body cells, and whether each column is numeric (right-aligned)."""
    table = df.reset_index() if index else df
    header = [str(c) for c in table.columns]
    body = [[_cell(v, floatfmt) for v in row] for row in table.itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in table.dtypes]
    return header, body, numeric


def to_markdown(df: pd.DataFrame, floatfmt: str = ".1f", index: bool = False) -> str:
    """A GitHub pipe table. Floats use `floatfmt`, missing cells show "–", booleans ✓/✗; numbers right-aligned."""
    header, body, numeric = _rows(df, floatfmt, index)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in body]
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "†": r"$^\dagger$", "→": r"$\to$", "Δ": r"$\Delta$", "✓": r"\checkmark{}", "✗": r"$\times$",
                   "–": "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(df: pd.DataFrame, floatfmt: str = ".1f", index: bool = False) -> str:
    """A plain `tabular` (no packages needed beyond amssymb for ✓), with LaTeX specials and †/→/Δ escaped."""
    header, body, numeric = _rows(df, floatfmt, index)
    align = "".join("r" if n else "l" for n in numeric)
    row = lambda cells: " & ".join(_latex_escape(c) for c in cells) + r" \\"  # noqa: E731
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\hline", row(header), r"\hline", *map(row, body), r"\hline",
             r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, path_stem: str | Path, floatfmt: str = ".1f") -> list[Path]:
    """Write `df` as `<stem>.md`, `<stem>.tex` and `<stem>.csv` (full precision), each atomically; returns paths."""
    stem = Path(path_stem)
    outputs = {".md": to_markdown(df, floatfmt), ".tex": to_latex(df, floatfmt), ".csv": df.to_csv(index=False)}
    paths = []
    for suffix, text in outputs.items():
        path = stem.with_name(stem.name + suffix)
        _write_atomic(path, text)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------


def _subplots(figsize: tuple[float, float]):
    """A new (fig, ax); outside a Jupyter kernel switch matplotlib to the non-interactive Agg backend first."""
    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, layout="constrained")


def _finish(fig, path: str | Path | None):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    if "ipykernel" not in sys.modules:  # scripts/tests: free pyplot's reference; the Figure itself stays usable
        import matplotlib.pyplot as plt

        plt.close(fig)
    return fig


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted frame indices -> maximal runs of consecutive indices, as (first, last)."""
    idx = sorted({int(i) for i in indices})
    runs: list[tuple[int, int]] = []
    for i in idx:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def plot_frame_scores(
    scores: Sequence[float],
    selected: Sequence[int],
    relevant: Sequence[int] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
):
    """Localizer score per frame (line), the top-k keyframes (red points), the true moment (shaded frames).

    `scores[i]` is the Localizer's score of frame i (official `sevila.py`, `SeViLA.generate`, e.g. P("yes"));
    `selected` and `relevant` are frame indices. Returns the matplotlib Figure; saves a PNG when `path` is given.
    """
    import seaborn as sns

    scores = np.asarray(scores, dtype=float)
    fig, ax = _subplots((7, 3))
    for k, (a, b) in enumerate(_runs(relevant or [])):
        ax.axvspan(a - 0.5, b + 0.5, color="tab:green", alpha=0.15, lw=0, label="relevant" if k == 0 else None)
    sns.lineplot(x=np.arange(len(scores)), y=scores, ax=ax, marker="o", markersize=3, label="frame score")
    sel = np.asarray(sorted(selected), dtype=int)
    ax.scatter(sel, scores[sel], s=60, color="tab:red", zorder=3, label=f"selected (k={len(sel)})")
    ax.set(xlabel="frame index", ylabel="score", title=title or "Localizer frame scores",
           xlim=(-0.5, len(scores) - 0.5))
    ax.legend(loc="best", fontsize="small")
    return _finish(fig, path)


def plot_accuracy_vs(
    df: pd.DataFrame,
    x: str,
    y: str = "accuracy",
    hue: str | None = None,
    title: str | None = None,
    path: str | Path | None = None,
):
    """Line plot of `y` against `x` (e.g. accuracy vs k, accuracy vs τ), one line per `hue` value if given, with
    95% CI error bars where the frame has `<y>_low` / `<y>_high` columns (`experiments.with_ci`).

    A numeric `hue` (e.g. num_frames) is treated as categories, so each line gets a distinct colour.
    """
    import seaborn as sns

    if hue is not None and pd.api.types.is_numeric_dtype(df[hue]):
        df = df.assign(**{hue: pd.Categorical(df[hue].astype(str), [str(v) for v in sorted(df[hue].unique())])})
    fig, ax = _subplots((5, 3.5))
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", ax=ax, errorbar=None)
    if f"{y}_low" in df and f"{y}_high" in df:
        lines = {line.get_label(): line.get_color() for line in ax.get_lines()}
        for name, part in (df.groupby(hue, observed=True) if hue else [(None, df)]):
            positions = [ax.xaxis.convert_units(v) for v in part[x]]  # category axes (e.g. "argmax") too
            ax.errorbar(positions, part[y], yerr=[part[y] - part[f"{y}_low"], part[f"{y}_high"] - part[y]],
                        fmt="none", capsize=3, color=lines.get(str(name), "k") if hue else "k")
        ax.text(0.01, 0.01, "bars: 95% CI (bootstrap over questions)", transform=ax.transAxes, fontsize=7)
    ax.set(title=title or f"{y} vs {x}")
    return _finish(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# Index of reports/
# ---------------------------------------------------------------------------------------------------------------

# kinds, listed in this order (tables' .csv/.tex twins are not listed: each sits beside its .md)
_INDEXED = {".md": "table", ".png": "figure", ".ipynb": "notebook", ".parquet": "predictions (one row per question)",
            ".json": "keyframe selections"}


def write_index(reports_dir: str | Path = REPORTS_DIR) -> Path:
    """Write `<reports_dir>/README.md` linking every table (.md), figure (.png), notebook (.ipynb), predictions
    table (.parquet) and selections file (.json) under it.

    Files are grouped by folder (relative to `reports_dir`), listed tables first, then figures, then executed
    notebooks, each sorted by name. Hidden folders (`.ipynb_checkpoints`, ...) and the index itself are skipped.
    Links are relative, so the index works on GitHub and locally.
    """
    root = Path(reports_dir)
    index = root / "README.md"
    kinds = list(_INDEXED)
    by_folder: dict[str, list[Path]] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path == index or path.suffix not in _INDEXED or not path.is_file():
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        by_folder.setdefault(rel.parent.as_posix(), []).append(rel)
    lines = ["# Reports", "", "Generated files: regenerate them, do not edit by hand (`make reports`; "
             "`benchmarks.md` and `benchmarks.csv` come from `make bench`).", ""]
    for folder in sorted(by_folder, key=lambda f: (f != ".", f)):
        lines += [f"## {'reports' if folder == '.' else folder}/", ""]
        for rel in sorted(by_folder[folder], key=lambda r: (kinds.index(r.suffix), r.name)):
            link = rel.as_posix().replace(" ", "%20")
            lines.append(f"- {_INDEXED[rel.suffix]}: [{rel.name}]({link})")
        lines.append("")
    _write_atomic(index, "\n".join(lines))
    return index


def describe_deltas(table: pd.DataFrame, *label_columns: str) -> str:
    """A notebook's closing text, computed from its table: one line per setting and Δ column (the paired-bootstrap
    differences `metrics.format_delta` wrote) and its direction: "higher" or "lower" only when the CI excludes 0
    (a setting is not a claim; the paper's claims get a verdict in `experiments.effect`)."""
    from . import metrics

    lines = []
    for column in [c for c in table.columns if str(c).startswith("Δ")]:
        for row in table.to_dict("records"):
            d = metrics.parse_delta(row[column])
            if d is not None:
                setting = ", ".join(str(row[c]) for c in label_columns)
                lines.append(f"{setting}: {column} = {row[column]} → {metrics.direction(d)}")
    return "\n".join(lines) or "No comparison in this table has a CI (too few questions or settings)."

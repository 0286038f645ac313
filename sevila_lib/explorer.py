"""Keyframe explorer: one question's frame strip with its frame scores, the selected keyframes, the true moments
and the Answerer's option probabilities — as a static figure (`plot_question`; `plot_keyframes` draws it from plain
values for `sevila_lib.ask`) and as an ipywidgets browser (`keyframe_explorer`, `notebooks/01_forward_chain.ipynb`)
that filters questions and re-selects with any rule and k.

Figures are built with `matplotlib.figure.Figure`, not pyplot, so Jupyter never auto-displays a second, stale copy
under the widget, which shows each figure as a PNG image widget (redrawn in place). The widget needs a running
kernel: a notebook re-opened without one shows the saved static figure (`reports/figures/`) but an empty explorer
until its cell is run again.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .evaluation import Evaluator

FONT = 11  # points: readable at 100% zoom in JupyterLab at the figure's 100 dpi


def _listed(value) -> list:
    """A list column's cell as a list ([] for None/NaN: a variant without scores, a question without moments)."""
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else []


def verdict(row: pd.Series) -> str:
    return "✓" if int(row.prediction) == int(row.answer) else "✗"


def plot_question(evaluator: Evaluator, row: pd.Series, max_frames: int = 16) -> Figure:
    """`plot_keyframes` for one predictions-table row; the title says the question, the predicted and the gold
    option (✓/✗)."""
    sample = next(s for s in evaluator.samples if s.question_id == row.question_id)
    sampled, selected = list(row.sampled_frames), [int(i) for i in row.selected_frames]
    shown = _shown_frames(sampled, selected, max_frames)
    pred, gold = int(row.prediction), int(sample.answer)
    title = (f"{row.question_id} [{sample.question_type}]: {sample.question}\n"
             f"{verdict(row)} predicted {chr(65 + pred)} ({sample.options[pred]}), "
             f"gold {chr(65 + gold)} ({sample.options[gold]})")
    return plot_keyframes(evaluator.reader.read(sample, shown), shown, sampled, _listed(row.get("frame_scores")),
                          selected, sample.options, list(row.option_probs), gold,
                          [int(i) for i in _listed(row.get("relevant_frames"))], title, prediction=pred,
                          score_label=f"{row.get('scorer', 'Localizer')} score",
                          selected_label=f"selected ({row.get('rule', 'top_k')}, k={len(selected)})")


def _shown_frames(sampled: list[int], selected: list[int], max_frames: int) -> list[int]:
    """At most `max_frames` of the sampled frames, evenly spread, plus every selected keyframe."""
    shown = sampled if len(sampled) <= max_frames else [sampled[i] for i in
                                                        np.linspace(0, len(sampled) - 1, max_frames).astype(int)]
    return sorted(set(shown) | set(selected))


def plot_keyframes(frames, shown: list[int], sampled: list[int], frame_scores, selected: list[int],
                   options: list[str], option_probs: list[float], answer: int | None = None,
                   relevant: Sequence[int] = (), title: str = "", prediction: int | None = None,
                   score_label: str = "Localizer score", selected_label: str = "selected") -> Figure:
    """The explorer figure from plain values: thumbnails `frames` (uint8 (len(shown), H, W, 3)) of the video frames
    `shown`, keyframes boxed in orange, relevant frames' numbers in green; the score of each `sampled` frame (empty
    or None: no scores); option probabilities (green: `answer`, the gold one if known; red: a wrong `prediction`).
    Used by `plot_question` and `sevila_lib.ask`."""
    relevant = set(relevant)
    fig = Figure(figsize=(10, 7.2), dpi=100, layout="constrained")  # 1000 px: shown unscaled in JupyterLab
    grid = fig.add_gridspec(3, len(shown), height_ratios=[1.0, 1.3, 1.2])
    for col, (index, frame) in enumerate(zip(shown, frames)):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(frame)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(str(index), fontsize=FONT - 1, color="green" if index in relevant else "black")
        if index in selected:
            for side in ax.spines.values():
                side.set_edgecolor("orange"), side.set_linewidth(3)
    ax = fig.add_subplot(grid[1, :])
    scores = _listed(frame_scores)
    if scores:
        ax.plot(sampled, scores, marker=".", color="tab:blue", label=score_label)
        ax.scatter(selected, [scores[sampled.index(i)] for i in selected], color="orange", s=50, zorder=3,
                   label=selected_label)
        ax.legend(loc="best", fontsize=FONT - 1)
    else:
        ax.vlines(selected, 0, 1, color="orange", label=selected_label)
    for index in relevant:
        ax.axvspan(index - 0.5, index + 0.5, color="green", alpha=0.2)
    ax.set_xlabel("frame index" + (" (green: relevant moment)" if relevant else ""), fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)
    ax = fig.add_subplot(grid[2, :])
    letters = [f"{chr(65 + i)}: {o}" for i, o in enumerate(options)]
    colours = ["tab:green" if i == answer else ("tab:red" if i == prediction else "tab:gray")
               for i in range(len(letters))]
    ax.barh(letters[::-1], list(option_probs)[::-1], color=colours[::-1])
    ax.set_xlim(0, 1)
    ax.set_xlabel("Answerer option probability" + (" (green: gold; red: a wrong prediction)" if answer is not None
                                                   else ""), fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    fig.suptitle(title, fontsize=FONT + 1)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (drawn by Agg; no pyplot, no display hook)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def question_label(row: pd.Series, question: str, width: int = 70) -> str:
    """"✓ q12 [causal] why does …" for the chooser."""
    text = question if len(question) <= width else question[: width - 1] + "…"
    return f"{verdict(row)} {row.question_id} [{row.question_type}] {text}"


def keyframe_explorer(evaluator: Evaluator, table: pd.DataFrame, rules: Sequence[str] | None = None,
                      ks: Sequence[int] = (1, 2, 4, 8)):
    """Browse a predictions table: choose a question (shown with ✓/✗ and its text), show only failures or one
    family, and re-select with another rule or k (the table's scorer; scores and answers are cached by the
    Evaluator, so a change costs only the new Answerer calls)."""
    import ipywidgets as widgets

    from .selection import RULES

    first = table.iloc[0]
    scorer = first.get("scorer", "localizer")
    scorer = "localizer" if scorer in (None, "-") else scorer
    num_frames = int(first.num_frames)
    questions = {s.question_id: s.question or "" for s in evaluator.samples}
    state = {"table": table.set_index("question_id", drop=False)}
    families = ["all"] + sorted(table.question_type.unique())
    rule = widgets.Dropdown(options=list(rules or RULES), value=first.get("rule") if first.get("rule") in (
        rules or RULES) else "top_k", description="rule")
    k = widgets.Dropdown(options=list(ks), value=int(first.num_keyframes) if int(first.num_keyframes) in ks
                         else ks[0], description="k")
    only = widgets.ToggleButtons(options=["all", "failures"], description="show",
                                 style={"button_width": "70px"})
    family = widgets.Dropdown(options=families, description="family")
    choose = widgets.Dropdown(description="question", layout=widgets.Layout(width="95%"))
    picture = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))

    def refresh_choices(change=None):
        rows = state["table"]
        if only.value == "failures":
            rows = rows[rows.prediction.astype(int) != rows.answer.astype(int)]
        if family.value != "all":
            rows = rows[rows.question_type == family.value]
        keep = choose.value
        choose.options = [(question_label(r, questions.get(q, "")), q) for q, r in rows.iterrows()]
        if len(rows):  # setting options leaves no value chosen: keep the question shown, else the first
            choose.value = keep if keep in rows.index else rows.index[0]
        else:
            picture.value = b""

    def reselect(change=None):
        state["table"] = evaluator.select(scorer, rule.value, num_frames, k.value).set_index("question_id",
                                                                                            drop=False)
        refresh_choices()
        show()

    def show(change=None):
        if choose.value is None:
            return
        picture.value = figure_png(plot_question(evaluator, state["table"].loc[choose.value]))

    for control in (only, family):
        control.observe(refresh_choices, names="value")
    for control in (rule, k):
        control.observe(reselect, names="value")
    choose.observe(show, names="value")
    refresh_choices()
    show()
    return widgets.VBox([widgets.HBox([rule, k, only, family]), choose, picture])

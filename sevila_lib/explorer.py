"""Keyframe explorer (also the figure of `sevila_lib.ask`): one question's frame strip with Localizer scores, selected keyframes, true moments and
the Answerer's option probabilities — as a static figure and as an ipywidgets browser
(`notebooks/01_forward_chain.ipynb`)."""
from __future__ import annotations

import matplotlib

if "ipykernel" not in __import__("sys").modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .evaluation import Evaluator


def plot_question(evaluator: Evaluator, row: pd.Series, max_frames: int = 16):
    """Frame strip (selected keyframes boxed in orange, relevant frames marked green), the Localizer's score
    per sampled frame, and the option probabilities of one predictions-table row."""
    sample = next(s for s in evaluator.samples if s.question_id == row.question_id)
    sampled = list(row.sampled_frames)
    shown = _shown_frames(sampled, list(row.selected_frames), max_frames)
    relevant = list(row.relevant_frames) if row.relevant_frames is not None else []
    return plot_keyframes(evaluator.reader.read(sample, shown), shown, sampled, row.frame_scores,
                          list(row.selected_frames), sample.options, list(row.option_probs), sample.answer,
                          relevant, title=f"{row.question_id}: {sample.question}")


def _shown_frames(sampled: list[int], selected: list[int], max_frames: int) -> list[int]:
    """At most `max_frames` of the sampled frames, evenly spread, plus every selected keyframe."""
    shown = sampled if len(sampled) <= max_frames else [sampled[i] for i in
                                                        np.linspace(0, len(sampled) - 1, max_frames).astype(int)]
    return sorted(set(shown) | set(selected))


def plot_keyframes(frames, shown: list[int], sampled: list[int], frame_scores, selected: list[int],
                   options: list[str], option_probs: list[float], answer: int | None = None,
                   relevant: list[int] = (), title: str = ""):
    """The explorer figure from plain values: thumbnails `frames` (uint8 (len(shown), H, W, 3)) of the video
    frames `shown`, keyframes boxed in orange; the Localizer score of each `sampled` frame (None: no scores);
    option probabilities (green: `answer`, the gold one if known). Used by `plot_question` and `sevila_lib.ask`."""
    fig = plt.figure(figsize=(max(8, 0.9 * len(shown)), 4.6))
    grid = fig.add_gridspec(3, len(shown), height_ratios=[1.1, 1.2, 1.0])
    for col, (index, frame) in enumerate(zip(shown, frames)):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(frame)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(str(index), fontsize=7, color="green" if index in relevant else "black")
        if index in selected:
            for side in ax.spines.values():
                side.set_edgecolor("orange"), side.set_linewidth(3)
    ax = fig.add_subplot(grid[1, :])
    if frame_scores is not None:
        ax.plot(sampled, frame_scores, marker=".", color="tab:blue", label="Localizer score")
        ax.scatter(selected, [frame_scores[sampled.index(i)] for i in selected],
                   color="orange", zorder=3, label="selected")
    for index in relevant:
        ax.axvspan(index - 0.5, index + 0.5, color="green", alpha=0.2)
    ax.set_xlabel("frame index" + (" (green: relevant moment)" if len(relevant) else ""))
    ax.legend(loc="upper right", fontsize=7)
    ax = fig.add_subplot(grid[2, :])
    letters = [f"{chr(65 + i)}: {o}" for i, o in enumerate(options)]
    colours = ["tab:green" if i == answer else "tab:gray" for i in range(len(letters))]
    ax.barh(letters[::-1], list(option_probs)[::-1], color=colours[::-1])
    ax.set_xlim(0, 1)
    ax.set_xlabel("Answerer option probability" + (" (green: gold)" if answer is not None else ""))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def keyframe_explorer(evaluator: Evaluator, table: pd.DataFrame):
    """A dropdown of questions; choosing one redraws `plot_question` for it."""
    import ipywidgets as widgets
    from IPython.display import display

    table = table.set_index("question_id", drop=False)
    choose = widgets.Dropdown(options=list(table.index), description="question")
    out = widgets.Output()

    def show(change=None):
        out.clear_output(wait=True)
        with out:
            fig = plot_question(evaluator, table.loc[choose.value])
            display(fig)
            plt.close(fig)

    choose.observe(show, names="value")
    show()
    return widgets.VBox([choose, out])

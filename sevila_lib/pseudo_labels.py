"""The reverse chain's pseudo-labels (paper §3.2, official `train_loc` branch): the frozen Answerer reads each frame
alone, and a frame is a keyframe ("yes") if the Answerer gets the question right from it (argmax, official) or
gives the gold option probability ≥ tau. Also the lookups that serve a frozen part's per-frame output during
training: stored labels (`LabelLookup`) and cached scores or logits (`FrameLookup`)."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import torch
from accelerate.state import PartialState
from torch import Tensor, nn

from .files import atomic_write_text, write_dataframe
from .model import SeViLA

LABEL_COLUMNS = ("question_id", "frame_index", "position", "gold_prob", "correct", "label")
LABEL_POLICIES = ("argmax", "threshold")


@dataclass
class PseudoLabels:
    """The Answerer's verdict on each frame alone. All (B, T)."""

    label: Tensor  # bool: the frame is a keyframe ("yes")
    gold_prob: Tensor  # softmax over the option logits, at the gold option
    correct: Tensor  # bool: argmax == gold


def pseudo_labels(option_logits: Tensor, answers: Sequence[int] | Tensor, policy: str = "argmax",
                  tau: float = 0.5) -> PseudoLabels:
    """Label frames from per-frame option logits (B, T, O) and gold answers (B,).

    argmax (official): "yes" iff argmax == gold — no threshold, no balancing, no fallback (official `sevila.py`,
    reverse chain).
    threshold: "yes" iff softmax(option logits)[gold] ≥ tau.
    """
    if policy not in LABEL_POLICIES:
        raise ValueError(f"unknown label policy {policy!r}; choose from {LABEL_POLICIES}")
    b, t, _ = option_logits.shape
    gold = torch.as_tensor(answers, device=option_logits.device).long().view(b, 1)  # (B, 1)
    probs = option_logits.float().softmax(-1)  # options missing for a question are -inf -> probability 0
    gold_prob = probs.gather(-1, gold[:, :, None].expand(b, t, 1)).squeeze(-1)  # (B, T)
    correct = option_logits.argmax(-1) == gold
    label = correct if policy == "argmax" else gold_prob >= tau
    return PseudoLabels(label, gold_prob, correct)


@contextmanager
def labelling_mode(model: SeViLA, dropout: bool) -> Iterator[None]:
    """Mode for the no-grad passes of a frozen module (keyframe selection, pseudo-labelling).

    dropout=False (kit default): `model.eval()`, deterministic labels. dropout=True: the official behaviour —
    the runner's `model.train()` leaves dropout on in the frozen Q-Former and T5 (official `sevila.py`).
    """
    was_training = model.training
    if dropout:
        nn.Module.train(model, True)  # everything in train mode, T5 included, except the ViT
        model.vision_encoder.eval()
    else:
        model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def label_row_dicts(batch: dict[str, Any], labels: PseudoLabels) -> list[dict[str, Any]]:
    """One table row per (question, sampled frame)."""
    rows = []
    for i, qid in enumerate(batch["question_id"]):
        for pos, frame in enumerate(batch["frame_indices"][i]):
            rows.append(dict(question_id=str(qid), frame_index=int(frame), position=pos,
                             gold_prob=float(labels.gold_prob[i, pos]), correct=bool(labels.correct[i, pos]),
                             label=bool(labels.label[i, pos])))
    return rows


def pseudo_label_stats(table: pd.DataFrame) -> dict[str, float]:
    """Positives per question (mean), fraction of questions without a positive, overall positive rate.
    An online table (with an `epoch` column) counts each question once per epoch."""
    keys = ["question_id", "epoch"] if "epoch" in table.columns else ["question_id"]
    per_question = table.groupby(keys)["label"].sum()
    return {"questions": int(len(per_question)), "frames": int(len(table)),
            "positives_per_question": float(per_question.mean()) if len(per_question) else 0.0,
            "no_positive_fraction": float((per_question == 0).mean()) if len(per_question) else 0.0,
            "positive_rate": float(table["label"].mean()) if len(table) else 0.0}


def report_label_stats(table: pd.DataFrame, source: Path, output_dir: Path) -> dict[str, float]:
    """`pseudo_label_stats`, printed and written to <output_dir>/label_stats.json (main process)."""
    stats = pseudo_label_stats(table)
    if PartialState().is_main_process:
        print(f"pseudo-labels ({source}): " + ", ".join(f"{k} {v:.3g}" for k, v in stats.items()))
        atomic_write_text(output_dir / "label_stats.json", json.dumps({"source": str(source), **stats}, indent=2))
    return stats


def write_label_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a pseudo-label table atomically (temp file + os.replace): .parquet, otherwise CSV."""
    return write_dataframe(table, path)


def read_label_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"question_id": str})
    missing = set(LABEL_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not a pseudo-label table (missing columns {sorted(missing)})")
    return table


class LabelLookup:
    """Stored labels by (question_id, frame_index)."""

    def __init__(self, table: pd.DataFrame, source: str = "table"):
        # Repeated frames of a short window share an index and, on eval-mode frames, the same label: keep one.
        table = table.drop_duplicates(["question_id", "frame_index"])
        self.labels = {(str(q), int(f)): bool(lab) for q, f, lab in
                       zip(table["question_id"], table["frame_index"], table["label"])}
        self.source = source

    def __call__(self, question_ids: Sequence[str], frame_indices: Sequence[Sequence[int]]) -> Tensor:
        try:
            return torch.tensor([[self.labels[(str(q), int(f))] for f in frames]
                                 for q, frames in zip(question_ids, frame_indices)])
        except KeyError as err:
            raise KeyError(f"no stored pseudo-label for (question_id, frame_index)={err.args[0]} in {self.source}; "
                           "stored labels cover the eval-mode frames they were computed on — train on the same "
                           "deterministic frames, or use label_mode='online'") from None


class FrameLookup:
    """A frozen part's output for each (question_id, frame_index), computed once over every frame of each
    training video and reused at every step and epoch: the frozen Localizer's scores (keyframes for Answerer
    fine-tuning) or the frozen Answerer's per-frame option logits (online pseudo-labels of the reverse chain).
    Computing them per step would repeat the same work every epoch.

    Exact (up to float rounding of a different batching) only when a frame's output cannot change between
    steps: no random crop and no dropout in the frozen pass (the mini world's recipe). With the official crop,
    score and label online.
    """

    def __init__(self, values: dict[tuple[str, int], Tensor], what: str):
        self.values, self.what = values, what

    @classmethod
    def from_per_question(cls, per_question: dict[str, Tensor], frame_indices: dict[str, Sequence[int]],
                          what: str) -> "FrameLookup":
        """From {question_id: tensor with one row per frame} and the frame index of each row."""
        return cls({(q, int(f)): value for q, rows in per_question.items()
                    for f, value in zip(frame_indices[q], rows)}, what)

    def __call__(self, question_ids: Sequence[str], frame_indices: Sequence[Sequence[int]]) -> Tensor:
        """(B, T, ...) values for B questions' T frames."""
        try:
            return torch.stack([torch.stack([self.values[(str(q), int(f))] for f in frames])
                                for q, frames in zip(question_ids, frame_indices)])
        except KeyError as err:
            raise KeyError(f"no cached {self.what} for (question_id, frame_index)={err.args[0]}") from None

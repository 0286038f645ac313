"""Frame-index exchange: keyframe selections as JSON, so the kit's selections can feed other evaluation harnesses
(lmms-eval, a fork of AKS or BOLT, ...) and selections made elsewhere can be evaluated here with the kit's Answerer
(`Evaluator.run_selections`).

    {"format": "sevila-kit/keyframes", "version": 1,
     "sampling": {"num_frames": 32, "rule": "segment_middle"},       # how the candidate frames were sampled
     "selector": {"scorer": "localizer", "rule": "top_k", "num_keyframes": 4},
     "questions": {"<question_id>": {"video": "...", "frame_indices": [...],   # the sampled frames (video frame
                                     "keyframes": [...], "scores": [...]}}}    # numbers), the chosen ones, scores

Frame indices are 0-based frame numbers of the decoded video (the official decord/PyAV numbering); keyframes are a
subset of `frame_indices`, in temporal order; `scores` (optional) has one value per sampled frame, so the file also
serves `scorers.FileScorer`. "segment_middle" is the kit's (and the official) evaluation sampling: the middle frame
of each of n equal segments of the question's window.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .files import atomic_write_text

FORMAT, VERSION = "sevila-kit/keyframes", 1


@dataclass
class Selection:
    frame_indices: list[int]
    keyframes: list[int]
    scores: list[float] | None = None
    video: str | None = None


@dataclass
class Selections:
    questions: dict[str, Selection]
    sampling: dict = field(default_factory=dict)
    selector: dict = field(default_factory=dict)
    source: str = "selections"


def from_predictions(table: pd.DataFrame) -> Selections:
    """The selections of one predictions table (one variant / selector: `Evaluator.run` or `.select`)."""
    for column in ("variant", "scorer", "rule", "num_frames", "num_keyframes"):
        if column in table and table[column].nunique() > 1:
            raise ValueError(f"the table mixes several values of {column!r}; write one selector at a time")
    first = table.iloc[0] if len(table) else {}
    questions = {}
    for row in table.itertuples():
        scores = getattr(row, "frame_scores", None)
        scores = [float(s) for s in scores] if isinstance(scores, (list, tuple)) or hasattr(scores, "tolist") else None
        questions[str(row.question_id)] = Selection([int(f) for f in row.sampled_frames],
                                                    [int(f) for f in row.selected_frames], scores,
                                                    getattr(row, "video", None))
    return Selections(questions, {"num_frames": int(first.get("num_frames", 0)), "rule": "segment_middle"},
                      {"variant": first.get("variant"), "scorer": first.get("scorer"), "rule": first.get("rule"),
                       "num_keyframes": int(first.get("num_keyframes", 0))})


def write_selections(selections: Selections | pd.DataFrame, path: str | Path) -> Path:
    """Write selections (or a predictions table's) as frame-index JSON, atomically."""
    if isinstance(selections, pd.DataFrame):
        selections = from_predictions(selections)
    body = {"format": FORMAT, "version": VERSION, "sampling": selections.sampling, "selector": selections.selector,
            "questions": {qid: {k: v for k, v in vars(s).items() if v is not None}
                          for qid, s in selections.questions.items()}}
    return atomic_write_text(path, json.dumps(body, indent=1, default=str))


def read_selections(path: str | Path) -> Selections:
    """Read and check a frame-index JSON file; every problem names the file and the question."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("questions"), dict):
        raise ValueError(f"{path}: expected an object with a 'questions' mapping (format {FORMAT})")
    if data.get("format", FORMAT) != FORMAT or data.get("version", VERSION) > VERSION:
        raise ValueError(f"{path}: format {data.get('format')!r} version {data.get('version')!r}; "
                         f"this kit reads {FORMAT} version ≤ {VERSION}")
    questions = {}
    for qid, entry in data["questions"].items():
        where = f"{path}: question {qid!r}"
        try:
            frames = [int(f) for f in entry["frame_indices"]]
            keyframes = [int(f) for f in entry["keyframes"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: needs integer lists 'frame_indices' and 'keyframes'") from None
        if not keyframes or any(f < 0 for f in frames):
            raise ValueError(f"{where}: no keyframes, or a negative frame index")
        if not set(keyframes) <= set(frames):
            raise ValueError(f"{where}: keyframes {sorted(set(keyframes) - set(frames))} are not among its "
                             f"frame_indices")
        if keyframes != sorted(keyframes) or len(set(keyframes)) != len(keyframes):
            raise ValueError(f"{where}: keyframes must be distinct and in temporal order, got {keyframes}")
        scores = entry.get("scores")
        if scores is not None:
            if len(scores) != len(frames) or not all(isinstance(s, (int, float)) and math.isfinite(s)
                                                     for s in scores):
                raise ValueError(f"{where}: 'scores' must hold one finite number per frame index")
            scores = [float(s) for s in scores]
        questions[str(qid)] = Selection(frames, keyframes, scores, entry.get("video"))
    return Selections(questions, data.get("sampling", {}), data.get("selector", {}), str(path))

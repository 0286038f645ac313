"""Per-frame relevance scorers: a `chain.FrameBatch` of B questions × T frames -> scores (B, T), higher = more
relevant. The first half of every keyframe selector (the second half is a rule in `selection.py`).

| name                  | score of a frame                                                        | paper            |
|-----------------------|-------------------------------------------------------------------------|------------------|
| `localizer`           | the Localizer's "yes" logit for "does this frame answer?" (official)    | §3.1, Table 6    |
| `localizer_prob`      | P(yes) over the ("no", "yes") logits, the paper's wording                | §3.1             |
| `answerer_confidence` | the Answerer's highest option probability from this frame alone          | BLIP-2^voting    |
| `similarity`          | image–text cosine similarity with the question (CLIP; mini CLIP offline) | Table 6 "CLIP"   |
| `file`                | read from a JSON file: question id -> one score per sampled frame        | any external one |

    scorer = scorers.get_scorer("similarity", model="mini")   # by name, with parameters
    scores = scorer(frame_batch)                               # (B, T)

Scores are computed once per (question, n) by the Evaluator and reused by every rule and k. A scorer whose
frames are scored each on its own (`per_frame`) is run over every frame of a short video once, and any n is read
from those scores; `parts` names the model parts its scores depend on, which key the Evaluator's score files.
What is kept is a scorer's `stored()` output (for both Localizer kinds: the ("no", "yes") logits, one pass; for
the Answerer's confidence: its per-frame option logits).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .chain import FrameBatch
from .scoring import score_from_no_yes


class Scorer:
    """Base: a named, parameterised map FrameBatch -> (B, T) scores. `label` names it in tables and caches."""

    name = "scorer"
    per_frame = True  # a frame's score does not depend on the other sampled frames
    parts: tuple[str, ...] = ("vision_encoder", "localizer", "answerer", "llm")  # the model parts scores depend on

    def __init__(self, **params):
        self.params = params

    @property
    def label(self) -> str:
        shown = {k: v for k, v in self.params.items() if v not in (None, "official", "")}
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else "")

    def __repr__(self) -> str:
        return f"<scorer {self.label}>"

    def __call__(self, batch: FrameBatch) -> Tensor:
        raise NotImplementedError

    def stored(self) -> "Scorer":
        """The scorer whose per-frame output the Evaluator keeps (score files); this scorer's scores follow from it
        by `from_stored`. Default: itself."""
        return self

    def from_stored(self, values: Tensor) -> Tensor:
        return values


class LocalizerScorer(Scorer):
    """SeViLA's Localizer: each frame alone with the localisation prompt; the "yes" logit at the first decoder
    step (official `kind="logit"`) or P(yes) over ("no", "yes") (`kind="yes_no_prob"`)."""

    name = "localizer"
    parts = ("vision_encoder", "localizer", "llm")

    def __init__(self, kind: str = "logit", prompt: str = "official"):
        super().__init__(prompt=prompt)
        self.kind, self.prompt = kind, prompt
        self.name = "localizer" if kind == "logit" else "localizer_prob"

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> Tensor:
        return score_from_no_yes(batch.no_yes_logits(self.prompt), self.kind)

    def stored(self) -> Scorer:
        return LocalizerLogits(self.prompt)  # both score kinds follow from one pass's ("no", "yes") logits

    def from_stored(self, values: Tensor) -> Tensor:
        return score_from_no_yes(values, self.kind)


class LocalizerLogits(Scorer):
    """The Localizer's ("no", "yes") logits of each frame, (B, T, 2): what the Evaluator keeps for either score
    kind of `LocalizerScorer`, so "localizer" and "localizer_prob" cost one pass."""

    name = "localizer_no_yes"
    parts = LocalizerScorer.parts

    def __init__(self, prompt: str = "official"):
        super().__init__(prompt=prompt)
        self.prompt = prompt

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> Tensor:
        return batch.no_yes_logits(self.prompt)


class AnswererConfidence(Scorer):
    """The Answerer reads each frame alone ("Frame: " format, as BLIP-2^voting does) and the frame's score is its
    highest option probability: the voting signal used as a relevance score."""

    name = "answerer_confidence"
    parts = ("vision_encoder", "answerer", "llm")

    def __init__(self, readout: str = "official"):
        super().__init__(readout=readout)
        self.readout = readout

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> Tensor:
        return self.from_stored(self.stored()(batch))

    def stored(self) -> Scorer:
        return AnswererLogits(self.readout)  # the per-frame logits, shared with the reverse chain's labels

    def from_stored(self, values: Tensor) -> Tensor:
        return values.float().softmax(-1).amax(-1)


class AnswererLogits(Scorer):
    """The Answerer's option logits from each frame alone ("Frame: " format), (B, T, options): what the Evaluator
    keeps for `AnswererConfidence` and for `Evaluator.per_frame_logits` (the reverse chain's labels)."""

    name = "answer_each_frame"
    parts = AnswererConfidence.parts

    def __init__(self, readout: str = "official"):
        super().__init__(readout=readout)
        self.readout = readout

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> Tensor:
        q = batch.questions
        return batch.model.answer_each_frame(batch.features, q.qa_texts, q.num_options, self.readout)


class ClipSimilarity(Scorer):
    """Image–text similarity between each frame and the question (paper Table 6's "CLIP ViT-B/32 similarity" row).
    `model`: "mini" (the shipped mini CLIP trained on the moments world), a local `save_pretrained` folder, or a hub
    id such as "openai/clip-vit-base-patch32" (the paper's)."""

    name = "similarity"
    parts = ()  # CLIP only (its own weights are named in the label)

    def __init__(self, model: str = "mini", device: str | None = None):
        super().__init__(model=None if model == "mini" else model)
        self.model_name, self.device = model, device
        self._clip = None

    @property
    def clip(self):
        if self._clip is None:
            from .similarity import SimilarityScorer

            self._clip = SimilarityScorer.from_pretrained(self.model_name, device=self.device or "cpu")
        return self._clip

    @torch.inference_mode()
    def __call__(self, batch: FrameBatch) -> Tensor:
        return self.clip.score(batch.pixels, batch.questions.texts).to(batch.features.device)


class FileScorer(Scorer):
    """Scores computed elsewhere, read from JSON: either {question_id: [one score per sampled frame]} or the kit's
    frame-selection file (`selection_files.write_selections`) whose questions carry "scores" and "frame_indices".
    A question missing from the file, or with another number of frames, is an error naming it; when the file
    records frame indices they must equal the frames sampled here."""

    name = "file"
    per_frame = False  # one score per sampled frame of the file's n
    parts = ()

    def __init__(self, path: str | Path):
        super().__init__(path=str(Path(path).resolve()))  # the label keys the Evaluator's score cache
        self.path = Path(path)
        data = json.loads(self.path.read_text())
        entries = data.get("questions", data) if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise ValueError(f"{self.path}: expected a JSON object question_id -> scores")
        self.scores: dict[str, list[float]] = {}
        self.frames: dict[str, list[int]] = {}
        for qid, entry in entries.items():
            values = entry.get("scores") if isinstance(entry, dict) else entry
            if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(f"{self.path}: question {qid!r}: scores must be a list of numbers")
            self.scores[str(qid)] = [float(v) for v in values]
            if isinstance(entry, dict) and "frame_indices" in entry:
                self.frames[str(qid)] = [int(f) for f in entry["frame_indices"]]

    def __call__(self, batch: FrameBatch) -> Tensor:
        rows = []
        t = batch.features.shape[1]
        for qid, frames in zip(batch.questions.ids, batch.frame_indices):
            if qid not in self.scores:
                raise KeyError(f"{self.path}: no scores for question {qid!r}")
            if len(self.scores[qid]) != t:
                raise ValueError(f"{self.path}: question {qid!r} has {len(self.scores[qid])} scores, "
                                 f"the kit sampled {t} frames")
            if qid in self.frames and self.frames[qid] != list(frames):
                raise ValueError(f"{self.path}: question {qid!r} was scored on frames {self.frames[qid]}, "
                                 f"the kit sampled {list(frames)}")
            rows.append(self.scores[qid])
        return torch.tensor(rows, dtype=torch.float32)


SCORERS: dict[str, Any] = {
    "localizer": lambda **p: LocalizerScorer(kind="logit", **p),
    "localizer_prob": lambda **p: LocalizerScorer(kind="yes_no_prob", **p),
    "answerer_confidence": AnswererConfidence,
    "similarity": ClipSimilarity,
    "file": FileScorer,
}


def get_scorer(scorer: str | Scorer, **params) -> Scorer:
    """A scorer by name (with its parameters), or the given scorer itself."""
    if isinstance(scorer, Scorer):
        return scorer
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; choose from {sorted(SCORERS)}")
    return SCORERS[scorer](**params)

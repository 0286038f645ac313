"""The forward chain, written once (paper §3.1): frames → ViT features → scorer → rule → keyframes → Answerer.

    features (B, T, P, Dv)       raw ViT tokens of T sampled frames (model.encode_frames or a feature cache)
      │ scorer (scorers.py)       per-frame relevance (B, T): the Localizer's "yes", a similarity, a file, ...
      │ rule (selection.py)       k positions per question, temporal order
      ▼ gather_keyframes          (B, k, P, Dv): the ViT is never run again
    Answerer                      "Frame 1: … Frame k: " + question → option logits (model.keyframe_inputs)

`SeViLA.forward_chain`, `evaluation.Evaluator` and the training stages all call `select_keyframes` and
`answer_keyframes`/`keyframe_loss` here; nothing else gathers keyframes or lays out the Answerer's input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import prompts
from .selection import Rule, gather_keyframes, get_rule


@dataclass
class Questions:
    """B questions as the chain's parts read them."""

    ids: list[str]
    qa_texts: list[str]  # the Answerer's text (question and lettered options)
    num_options: list[int]
    texts: list[str]  # the question alone (what a similarity scorer compares frames with)
    samples: list | None = None  # the records, when known: Localizer texts for any prompt
    loc_texts_given: dict[str, list[str]] = field(default_factory=dict)  # prompt -> Localizer texts

    @classmethod
    def from_samples(cls, samples: Sequence) -> "Questions":
        return cls([s.question_id for s in samples], [prompts.sample_qa_text(s) for s in samples],
                   [len(s.options) for s in samples], [s.question or "" for s in samples], list(samples))

    @classmethod
    def from_batch(cls, batch: dict[str, Any]) -> "Questions":
        """From a training batch (`datasets.collate_video_qa`): its texts use the dataset's prompt."""
        ids = [str(q) for q in batch["question_id"]]
        return cls(ids, batch["qa_text"], list(batch["num_options"]), batch.get("question") or batch["qa_text"],
                   batch.get("sample"), {batch.get("prompt", "official"): batch["loc_text"]})

    def loc_texts(self, prompt: str = "official") -> list[str]:
        """The Localizer's text of every question under `prompt` (official or a paper Table 16 alternative)."""
        if prompt in self.loc_texts_given:
            return self.loc_texts_given[prompt]
        if self.samples is None:
            raise ValueError(f"no Localizer texts for prompt {prompt!r}: these questions carry only "
                             f"{sorted(self.loc_texts_given)}")
        return [prompts.sample_loc_text(s, prompt) for s in self.samples]


@dataclass
class FrameBatch:
    """B questions' T sampled frames, as the scorers and the Answerer read them. Parts that several scorers share
    (the Localizer bridge's tokens, the pixels) are computed once, on first use."""

    model: Any  # SeViLA
    features: Tensor  # (B, T, P, Dv) raw ViT tokens
    questions: Questions
    frame_indices: list[list[int]]  # the video frame number of each of the T positions
    read_pixels: Callable[[], Tensor] | None = None  # -> (B, T, 3, H, W), for scorers that need pixels

    @cached_property
    def localizer_tokens(self) -> Tensor:
        """The Localizer bridge's tokens (B, T, Q, D), computed once per distinct frame: the questions of one video
        (four per video in the world) share its frames, and the bridge does not read the question. Frames are
        shared only when their features are equal (a training crop makes two copies of a frame differ)."""
        if self.questions.samples is None or torch.is_grad_enabled():
            return self.model.localizer_tokens(self.features)
        b, t = self.features.shape[:2]
        flat = self.features.flatten(0, 1)
        keys = [(sample.video, index) for sample, indices in zip(self.questions.samples, self.frame_indices)
                for index in indices]
        first: dict = {}
        for position, key in enumerate(keys):
            first.setdefault(key, position)
        rows = {key: row for row, key in enumerate(first)}
        copies = [rows[key] for key in keys]
        distinct = flat[list(first.values())]
        if not torch.equal(distinct[copies], flat):
            return self.model.localizer_tokens(self.features)
        return self.model.localizer_tokens(distinct[None])[0][copies].unflatten(0, (b, t))

    @cached_property
    def _no_yes_logits(self) -> dict[str, Tensor]:
        return {}

    def no_yes_logits(self, prompt: str) -> Tensor:
        """The Localizer's ("no", "yes") logits of every frame under `prompt`, (B, T, 2): one T5 pass per prompt
        serves both score kinds (the official "yes" logit and P(yes))."""
        if prompt not in self._no_yes_logits:
            self._no_yes_logits[prompt] = self.model.localize_visual(self.localizer_tokens,
                                                                     self.questions.loc_texts(prompt), "no_yes")
        return self._no_yes_logits[prompt]

    @cached_property
    def pixels(self) -> Tensor:
        if self.read_pixels is None:
            raise ValueError("this scorer needs the frames' pixels, and this batch carries only ViT features")
        return self.read_pixels()


def select_keyframes(scores: Tensor, rule: str | Rule, k: int, keys: Sequence[str] | None = None) -> Tensor:
    """k positions per question, temporal order. scores (B, T) -> (B, k)"""
    return get_rule(rule)(scores, k, keys)


def answer_keyframes(model, features: Tensor, keyframes: Tensor, qa_texts: Sequence[str],
                     num_options: int | Sequence[int], readout: str = "official") -> Tensor:
    """The Answerer's option logits from the keyframes of T frames. features (B, T, P, Dv), keyframes (B, k)"""
    return model.answer(gather_keyframes(features, keyframes), qa_texts, num_options, readout)


def keyframe_loss(model, features: Tensor, keyframes: Tensor, qa_texts: Sequence[str],
                  answers: Sequence[int]) -> Tensor:
    """The Answerer's training loss ("Option X") on the keyframes of T frames (Answerer fine-tuning)."""
    return model.answerer_loss(gather_keyframes(features, keyframes), qa_texts, answers)


@dataclass
class ChainOutput:
    """What the forward chain returns for a batch of B questions over T sampled frames."""

    frame_scores: Tensor  # (B, T) relevance of every sampled frame
    keyframes: Tensor  # (B, k) positions among the T sampled frames, temporal order
    option_logits: Tensor  # (B, num_options) letter logits; -inf beyond a question's own option count
    option_probs: Tensor  # (B, num_options) softmax of option_logits
    prediction: Tensor  # (B,) predicted option index


@torch.inference_mode()
def forward_chain(batch: FrameBatch, scorer, rule: str | Rule = "top_k", k: int = 4,
                  readout: str = "official") -> ChainOutput:
    """Scorer → rule → gather → Answerer for one batch. `scorer` is a `scorers.Scorer` (or any callable
    FrameBatch -> (B, T) scores)."""
    scores = scorer(batch)
    keyframes = select_keyframes(scores, rule, k, batch.questions.ids)
    logits = answer_keyframes(batch.model, batch.features, keyframes, batch.questions.qa_texts,
                              batch.questions.num_options, readout)
    return ChainOutput(scores, keyframes, logits, logits.softmax(-1), logits.argmax(-1))

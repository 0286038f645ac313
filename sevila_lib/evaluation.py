"""Evaluation runner: one predictions table per run, with a disk cache of frozen-ViT features (spec §3.4, §7).

Variants (rows of the paper's Tables 1–3, 6, 7 and 9):
  "uniform"      Answerer on k frames sampled uniformly from the video (BLIP-2^concat, Table 3 row B)
  "all"          Answerer on all n sampled frames concatenated (Table 3 row A)
  "localizer"    the forward chain: Localizer scores n frames, Answerer reads the top k (SeViLA)
  "ground_truth" Answerer on k of the n frames chosen by the known relevant moments (an upper bound)
  "random"       Answerer on k random frames of the n (a sanity floor)
Per-frame answers (`per_frame`) give BLIP-2^voting and the oracle of Table 9.

The ViT is frozen, so each sampled frame's features are computed once and cached on disk, keyed by the video,
the frame index and a fingerprint of the vision encoder's weights and input size: sweeps over k, n, prompts and
thresholds never decode or re-encode a frame twice, and changing the model changes the key.
Introduced in `notebooks/01_forward_chain.ipynb`.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from . import prompts, scoring
from .model import SeViLA
from .records import VideoQASample
from .video import FrameReader, VideoError, frames_to_tensor, relevant_frame_mask, segment_frame_indices

VARIANTS = ("uniform", "all", "localizer", "ground_truth", "random")


def model_fingerprint(model: SeViLA) -> str:
    """A short hash of everything that determines a frame's ViT features."""
    digest = hashlib.sha256(f"{model.config.image_size}|{model.config.vision_dtype}".encode())
    hash_weights(digest, model.vision_encoder)
    return digest.hexdigest()[:16]


def hash_weights(digest, module: torch.nn.Module) -> None:
    """Feed every parameter and buffer of `module` (names and float32 bytes) into a hashlib `digest`."""
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())


def video_key(reader: FrameReader, sample: VideoQASample) -> str:
    """Identifies a video for the cache: the reader's own key if it has one, else its file path, size and time."""
    if hasattr(reader, "cache_key"):
        return str(reader.cache_key(sample))
    if hasattr(reader, "path"):
        path = reader.path(sample)
        stat = os.stat(path)
        return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{type(reader).__name__}|{sample.video}"


class FeatureCache:
    """Frozen-ViT features per (video, frame index): an in-memory LRU in front of safetensors files on disk.

    `root=None` keeps features in memory only. The memory layer holds at most `max_videos` videos and at most
    `max_bytes` of features (least recently used first out), so evaluating more questions does not grow memory
    (streamed evaluation): 256 videos of the mini model take ~16 MB, but at ViT-g (32 frames × 257 × 1408
    floats) one video takes ~46 MB, so the byte budget is what binds there.
    """

    def __init__(self, root: str | Path | None, fingerprint: str, max_videos: int = 256, max_bytes: int = 2 ** 30):
        self.dir = Path(root) / fingerprint if root is not None else None
        self.max_videos, self.max_bytes = max_videos, max_bytes
        self._memory: OrderedDict[str, dict[int, Tensor]] = OrderedDict()
        self._nbytes = 0  # of the tensors in `_memory`, kept up to date so eviction never re-sums them
        self.hits = self.misses = 0

    def _file(self, key: str) -> Path:
        return self.dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    def _evict(self) -> None:
        """Drop least recently used videos (never the newest) until both budgets hold."""
        while len(self._memory) > 1 and (len(self._memory) > self.max_videos or self._nbytes > self.max_bytes):
            _, frames = self._memory.popitem(last=False)
            self._nbytes -= sum(t.nbytes for t in frames.values())

    def _load(self, key: str) -> dict[int, Tensor]:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        frames = {}
        if self.dir is not None and self._file(key).exists():
            frames = {int(i): t for i, t in load_file(self._file(key)).items()}
        self._memory[key] = frames
        self._nbytes += sum(t.nbytes for t in frames.values())
        self._evict()
        return frames

    def get(self, key: str, indices: Iterable[int]) -> tuple[dict[int, Tensor], list[int]]:
        """Cached features of `indices` and the indices still missing."""
        stored = self._load(key)
        wanted = sorted(set(indices))
        missing = [i for i in wanted if i not in stored]
        self.hits += len(wanted) - len(missing)
        self.misses += len(missing)
        return stored, missing

    def put(self, key: str, features: dict[int, Tensor]) -> None:
        stored = self._load(key)
        new = {i: f.contiguous() for i, f in features.items()}
        self._nbytes += sum(t.nbytes for t in new.values()) - sum(stored[i].nbytes for i in new if i in stored)
        stored.update(new)
        self._evict()
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self._file(key)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            save_file({str(i): t.cpu() for i, t in stored.items()}, str(tmp))
            os.replace(tmp, path)  # atomic: a killed run never leaves a half-written feature file


@dataclass
class Skipped:
    question_id: str
    reason: str


@dataclass
class Evaluator:
    """Runs the variants over a list of samples, sharing features, frame samplings, localizer scores and answers.

    >>> ev = Evaluator(model, samples, reader, cache_dir=paths.CACHE_DIR / "features")
    >>> table = ev.run("localizer", num_frames=32, num_keyframes=4)

    Localizer scores and answers are kept for the Evaluator's lifetime, so it assumes its model's weights do
    not change: after training a bridge, evaluate with a new Evaluator (as `Workspace.evaluator` does).
    """

    model: SeViLA
    samples: Sequence[VideoQASample]
    reader: FrameReader
    cache_dir: str | Path | None = None
    batch_size: int = 8
    on_error: str = "raise"  # or "skip": a bad video is recorded in `skipped`, never replaced by another sample
    progress: bool = True
    skipped: list[Skipped] = field(default_factory=list)

    def __post_init__(self):
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        self.cache = FeatureCache(self.cache_dir, model_fingerprint(self.model))
        self._scores: dict[tuple, dict[str, Tensor]] = {}
        self._answer_logits: dict[tuple, Tensor] = {}
        self._bad: set[str] = set()

    # ---- frames and features ----------------------------------------------------------------------------
    def frame_indices(self, sample: VideoQASample, num_frames: int) -> list[int]:
        """The n evaluation frames of a sample: the middle frame of each of n equal segments of its window."""
        info = self.reader.info(sample)
        try:
            indices, _ = segment_frame_indices(info.num_frames, info.fps, num_frames, "uniform",
                                               start=sample.start, end=sample.end)
        except ValueError as err:
            raise VideoError(getattr(self.reader, "path", lambda s: s.video)(sample), str(err),
                             sample.question_id) from err
        return indices

    def features(self, sample: VideoQASample, indices: Sequence[int]) -> Tensor:
        """Raw ViT tokens of the frames at `indices` (repeats allowed). (len, P, Dv)"""
        key = video_key(self.reader, sample)
        stored, missing = self.cache.get(key, indices)
        if missing:
            frames = frames_to_tensor(self.reader.read(sample, missing), self.model.config.image_size)
            encoded = self.model.encode_frames(frames[None])[0].cpu()
            self.cache.put(key, dict(zip(missing, encoded)))
            stored = self.cache.get(key, [])[0]
        return torch.stack([stored[i] for i in indices])

    def _batches(self, num_frames: int, desc: str):
        """Yield (samples, indices per sample) in batches, skipping (or raising on) unreadable videos."""
        batch, batch_indices = [], []
        for sample in tqdm(self.samples, desc=desc, disable=not self.progress, leave=False):
            if sample.question_id in self._bad:
                continue
            try:
                indices = self.frame_indices(sample, num_frames)
            except (VideoError, OSError) as err:
                if self.on_error == "raise":
                    raise
                self._bad.add(sample.question_id)
                self.skipped.append(Skipped(sample.question_id, str(err)))
                continue
            batch.append(sample)
            batch_indices.append(indices)
            if len(batch) == self.batch_size:
                yield batch, batch_indices
                batch, batch_indices = [], []
        if batch:
            yield batch, batch_indices

    def _stack(self, batch, batch_indices) -> Tensor:
        return torch.stack([self.features(s, idx) for s, idx in zip(batch, batch_indices)]).to(self.model.device)

    # ---- localizer scores, computed once per (n, prompt, kind) and reused for every k --------------------
    @torch.inference_mode()
    def frame_scores(self, num_frames: int, prompt: str = "official", score_kind: str = "logit",
                     also: Sequence[str] = ()) -> dict[str, Tensor]:
        """Localizer scores of every question's n frames, by question id. Prompts in `also` are scored in
        the same pass (kept for later calls): the bridge tokens do not depend on the prompt, so a sweep over
        prompts runs the Localizer's Q-Former once per frame instead of once per prompt."""
        wanted = [p for p in dict.fromkeys([prompt, *also]) if (num_frames, p, score_kind) not in self._scores]
        if wanted:
            scores: dict[str, dict[str, Tensor]] = {p: {} for p in wanted}
            for batch, indices in self._batches(num_frames, f"localizer n={num_frames}"):
                visual = self.model.localizer_tokens(self._stack(batch, indices))
                for p in wanted:
                    texts = [prompts.sample_loc_text(s, p) for s in batch]
                    batch_scores = self.model.localize_visual(visual, texts, score_kind).cpu()
                    scores[p].update({s.question_id: sc for s, sc in zip(batch, batch_scores)})
            self._scores.update({(num_frames, p, score_kind): scores[p] for p in wanted})
        return self._scores[(num_frames, prompt, score_kind)]

    # ---- the variants -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, variant: str, num_frames: int = 32, num_keyframes: int = 4, prompt: str = "official",
            readout: str = "official", score_kind: str = "logit", seed: int = 0) -> pd.DataFrame:
        """One predictions table (one row per question) for a variant. See the module docstring."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
        sample_n = num_keyframes if variant == "uniform" else num_frames
        scores = self.frame_scores(num_frames, prompt, score_kind) if variant == "localizer" else {}
        rng = np.random.default_rng(seed)
        rows = []
        for batch, indices in self._batches(sample_n, f"{variant} {num_frames}->{num_keyframes}"):
            if variant in ("uniform", "all"):
                chosen = [list(range(len(idx))) for idx in indices]
            elif variant == "localizer":
                chosen = scoring.select_keyframes(torch.stack([scores[s.question_id] for s in batch]),
                                                  num_keyframes).tolist()
            elif variant == "ground_truth":
                chosen = [ground_truth_keyframes(self._relevant(s, idx), num_keyframes) for s, idx in zip(batch, indices)]
            else:  # random
                chosen = [sorted(rng.choice(len(idx), num_keyframes, replace=False).tolist()) for idx in indices]
            selected = [[idx[c] for c in ch] for idx, ch in zip(indices, chosen)]
            logits = self._answers(batch, selected, readout)
            for sample, idx, frames, lg in zip(batch, indices, selected, logits):
                rows.append(self._row(sample, variant, num_frames, num_keyframes, prompt, idx, frames,
                                      scores[sample.question_id].tolist() if scores else None, lg))
        return pd.DataFrame(rows)

    def _answers(self, batch: Sequence[VideoQASample], selected: Sequence[Sequence[int]], readout: str) -> list[Tensor]:
        """Answerer logits for each question's selected frames. The Answerer is a pure function of (question,
        frames), so a selection met before (another prompt or k picking the same frames, uniform == ground
        truth, ...) is looked up instead of recomputed; the table holds a few floats per entry."""
        keys = [(s.question_id, tuple(frames), readout) for s, frames in zip(batch, selected)]
        todo = [i for i, key in enumerate(keys) if key not in self._answer_logits]
        if todo:
            feats = torch.stack([self.features(batch[i], selected[i]) for i in todo]).to(self.model.device)
            logits = self.model.answer(feats, [prompts.sample_qa_text(batch[i]) for i in todo],
                                       [len(batch[i].options) for i in todo], readout).cpu()
            self._answer_logits.update({keys[i]: lg for i, lg in zip(todo, logits)})
        return [self._answer_logits[key] for key in keys]

    @torch.inference_mode()
    def per_frame_logits(self, num_frames: int = 4, readout: str = "official") -> dict[str, Tensor]:
        """The Answerer's option logits from each of n uniformly sampled frames alone ("Frame: " format), by
        question id: (n, options) per question."""
        logits = {}
        for batch, indices in self._batches(num_frames, f"per-frame n={num_frames}"):
            batch_logits = self.model.answer_each_frame(self._stack(batch, indices),
                                                        [prompts.sample_qa_text(s) for s in batch],
                                                        [len(s.options) for s in batch], readout).cpu()
            logits.update({s.question_id: lg for s, lg in zip(batch, batch_logits)})
        return logits

    def per_frame(self, num_frames: int = 4, readout: str = "official") -> pd.DataFrame:
        """`per_frame_logits` as one row per (question, frame), for BLIP-2^voting and the oracle (paper Table 9
        uses n = 4)."""
        rows = []
        logits = self.per_frame_logits(num_frames, readout)
        for sample in self.samples:
            if sample.question_id not in logits:  # skipped: unreadable video
                continue
            for index, lg in zip(self.frame_indices(sample, num_frames), logits[sample.question_id]):
                rows.append(dict(question_id=sample.question_id, question_type=sample.question_type,
                                 dataset=sample.dataset, frame_index=index, prediction=int(lg.argmax()),
                                 answer=sample.answer, relevant=self._is_relevant(sample, index)))
        return pd.DataFrame(rows)

    # ---- helpers ----------------------------------------------------------------------------------------
    def _is_relevant(self, sample: VideoQASample, index: int) -> bool | None:
        if not sample.moments:
            return None
        return relevant_frame_mask([index], self.reader.info(sample).fps, sample.moments)[0]

    def _relevant(self, sample: VideoQASample, indices: Sequence[int]) -> list[bool]:
        if not sample.moments:
            raise ValueError(f"{sample.question_id}: ground-truth keyframes need known moments")
        return relevant_frame_mask(indices, self.reader.info(sample).fps, sample.moments)

    def _row(self, sample, variant, num_frames, num_keyframes, prompt, sampled, selected, frame_scores, logits):
        relevant = None
        if sample.moments:  # every relevant frame of the whole video
            every = range(self.reader.info(sample).num_frames)
            relevant = [i for i, r in zip(every, self._relevant(sample, every)) if r]
        probs = logits.softmax(-1)
        return dict(question_id=sample.question_id, question_type=sample.question_type, dataset=sample.dataset,
                    variant=variant, num_frames=num_frames, num_keyframes=num_keyframes, prompt=prompt,
                    sampled_frames=list(sampled), selected_frames=selected, frame_scores=frame_scores,
                    option_probs=probs[: len(sample.options)].tolist(), prediction=int(logits.argmax()),
                    answer=sample.answer, relevant_frames=relevant)


def ground_truth_keyframes(relevant: Sequence[bool], k: int) -> list[int]:
    """k positions chosen by the known moments: relevant frames first (spread evenly over them when there are
    more than k), then the irrelevant frames nearest to a relevant one; returned in temporal order."""
    positives = [i for i, r in enumerate(relevant) if r]
    if len(positives) >= k:
        picks = [positives[j] for j in np.linspace(0, len(positives) - 1, k).round().astype(int)]
        if len(set(picks)) == k:
            return sorted(picks)
        return positives[:k]
    others = [i for i, r in enumerate(relevant) if not r]
    distance = (lambda i: min(abs(i - p) for p in positives)) if positives else (lambda i: 0)
    return sorted(positives + sorted(others, key=lambda i: (distance(i), i))[: k - len(positives)])


def save_predictions(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a predictions table atomically (parquet keeps the list columns; .csv also works)."""
    from .report import write_dataframe

    return write_dataframe(table, path)


def summary(table: pd.DataFrame, **labels) -> dict:
    """One results row for a predictions table: `labels` (e.g. variant, k), accuracy in the paper's columns
    (percent), and, where relevant frames are known, keyframe hit-rate and recall (percent)."""
    from . import metrics

    row = {**labels, "questions": len(table), **metrics.summarize(table).round(2).to_dict()}
    if "relevant_frames" in table and table["relevant_frames"].notna().any():
        localized = table[table["question_type"] != "counting"] if "counting" in set(table["question_type"]) else table
        row["hit_rate"] = round(100 * metrics.keyframe_hit_rate(localized), 2)
        row["recall"] = round(100 * metrics.keyframe_recall(localized), 2)
    return row

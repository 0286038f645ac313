"""Evaluation runner: one predictions table per run, with a disk cache of frozen-ViT features (official `vqa.py`).

Variants (rows of the paper's Tables 1–3, 6, 7 and 9):
  "uniform"      Answerer on k frames sampled uniformly from the video (BLIP-2^concat, Table 3 row B)
  "all"          Answerer on all n sampled frames concatenated (Table 3 row A)
  "localizer"    the forward chain: Localizer scores n frames, Answerer reads the top k (SeViLA)
  "ground_truth" Answerer on k of the n frames chosen by the known relevant moments (an upper bound)
  "random"       Answerer on one random frame in each of k segments of the n (a sanity floor; paper Table 8)
Any keyframe selector, a scorer (`scorers.py`) followed by a rule (`selection.py`), runs with `select(scorer, rule)`,
and every scorer × rule with `grid(...)` (paper Table 6 and the field's selectors); all of them go through the one
chain in `chain.py`. Per-frame answers (`per_frame`) give BLIP-2^voting and the oracle of Table 9.

The ViT is frozen, so each sampled frame's features are computed once and cached on disk, keyed by the video,
the frame index and a fingerprint of the vision encoder's weights and input size: sweeps over k, n, prompts and
thresholds never decode or re-encode a frame twice, and changing the model changes the key.
Introduced in `notebooks/01_forward_chain.ipynb`.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from torch import Tensor
from tqdm.auto import tqdm

from . import prompts
from .files import save_safetensors, write_dataframe
from .chain import FrameBatch, Questions, answer_keyframes, select_keyframes
from .model import SeViLA
from .scorers import AnswererLogits, LocalizerScorer, Scorer, get_scorer
from .selection import Rule, get_rule
from .records import VideoQASample
from .video import (FrameReader, VideoError, frame_count, frames_to_tensor, relevant_frame_mask,
                    segment_frame_indices)

VARIANTS = ("uniform", "all", "localizer", "ground_truth", "random")
# Videos this short (the moments world: 32 frames) have their ViT features computed whole, and per-frame scorers
# score every frame once: any n is then read from those scores, so a grid over n costs one pass.
WHOLE_VIDEO_FRAMES = 64
SCORE_FILES_VERSION = "1"  # bump when a scorer's computation changes under the same label


def model_fingerprint(model: SeViLA) -> str:
    """A short hash of everything that determines a frame's ViT features."""
    digest = hashlib.sha256(f"{model.config.image_size}|{model.config.vision_dtype}".encode())
    hash_weights(digest, model.vision_encoder)
    return digest.hexdigest()[:16]


_FROZEN_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def parts_fingerprint(model: SeViLA, parts: Sequence[str]) -> str:
    """A short hash of the model parts a scorer's scores depend on (e.g. ViT, Localizer bridge and T5 for the
    Localizer). The frozen ViT and T5 are hashed once per module object (training runs share them, never change
    them); the bridges, which training changes, every time."""
    digest = hashlib.sha256(str(model.config).encode())
    for part in parts:
        module = getattr(model, part)
        if part in ("vision_encoder", "llm"):
            if module not in _FROZEN_HASHES:
                frozen = hashlib.sha256()
                hash_weights(frozen, module)
                _FROZEN_HASHES[module] = frozen.hexdigest()
            digest.update(f"{part}|{_FROZEN_HASHES[module]}".encode())
        else:
            digest.update(part.encode())
            hash_weights(digest, module)
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

    Each file stores, in its safetensors metadata, the video key it was written for and a SHA-256 of its
    tensors. A file that cannot be read (cut short), whose checksum does not match (corrupt), or that was written
    for another video is never used: it is deleted with a warning naming it, and its frames are recomputed.
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
        frames = self._read(key) if self.dir is not None else {}
        self._memory[key] = frames
        self._nbytes += sum(t.nbytes for t in frames.values())
        self._evict()
        return frames

    @staticmethod
    def _checksum(frames: dict[int, Tensor]) -> str:
        digest = hashlib.sha256()
        for i in sorted(frames):
            digest.update(f"{i}|{frames[i].dtype}|{tuple(frames[i].shape)}|".encode())
            digest.update(frames[i].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _read(self, key: str) -> dict[int, Tensor]:
        """The frames stored on disk for `key`, or {} (with a warning, file deleted) if the file is unusable."""
        path = self._file(key)
        if not path.exists():
            return {}
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                frames = {int(i): handle.get_tensor(i) for i in handle.keys()}
        except Exception as err:  # SafetensorError for a file cut short or a damaged header
            return self._discard(path, f"cannot be read ({err})")
        if metadata.get("video_key") != key:
            found = metadata.get("video_key")
            return self._discard(path, f"was written for another video ({found!r}, not {key!r})" if found
                                 else "has no video key (written by an older version)")
        if metadata.get("sha256") != self._checksum(frames):
            return self._discard(path, "does not match its checksum (corrupt)")
        return frames

    @staticmethod
    def _discard(path: Path, reason: str) -> dict[int, Tensor]:
        warnings.warn(f"feature cache file {path} {reason}: not used, its frames are recomputed", stacklevel=4)
        path.unlink(missing_ok=True)
        return {}

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
            # atomic: a killed run never leaves a half-written feature file
            save_safetensors({str(i): t for i, t in stored.items()}, self._file(key),
                             metadata={"video_key": key, "sha256": self._checksum(stored)})


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
    score_dir: str | Path | None = None  # score files shared by Evaluators over the same questions (None: memory)
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
        self._truncated: dict[tuple[str, bool], bool] = {}
        self._video_length: int | None | bool = False  # False: not looked up yet

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
        """Raw ViT tokens of the frames at `indices` (repeats allowed). (len, P, Dv)

        A frame's features never depend on which other frames shared its ViT call (another batch size can round
        the last bits differently, and a cache filled by an earlier run would then change this run's numbers):
        a short video (at most `WHOLE_VIDEO_FRAMES`) is always encoded whole in one call, a longer one frame by
        frame."""
        key = video_key(self.reader, sample)
        stored, missing = self.cache.get(key, indices)
        if missing:
            total = self.reader.info(sample).num_frames
            calls = [list(range(total))] if total <= WHOLE_VIDEO_FRAMES else [[i] for i in missing]
            for call in calls:
                frames = frames_to_tensor(self.reader.read(sample, call), self.model.config.image_size)
                self.cache.put(key, dict(zip(call, self.model.encode_frames(frames[None])[0].cpu())))
            stored = self.cache.get(key, [])[0]
        return torch.stack([stored[i] for i in indices])

    def _batches(self, num_frames: int, desc: str, every: int | None = None):
        """Yield (samples, indices per sample) in batches, skipping (or raising on) unreadable videos; `every`:
        all that many frames of each video instead of n sampled ones."""
        batch, batch_indices = [], []
        for sample in tqdm(self.samples, desc=desc, disable=not self.progress, leave=False):
            if sample.question_id in self._bad:
                continue
            try:
                indices = list(range(every)) if every else self.frame_indices(sample, num_frames)
                if self.on_error == "skip":  # decode now: a file that fails mid-way is skipped, not fatal later
                    self.features(sample, indices)
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

    def _frame_batch(self, batch: Sequence[VideoQASample], indices: Sequence[Sequence[int]],
                     features: Tensor | None = None) -> FrameBatch:
        """The chain's view of a batch: its features (stacked now unless given) and, on demand, its pixels."""
        def read_pixels() -> Tensor:
            size = self.model.config.image_size
            return torch.stack([frames_to_tensor(self.reader.read(s, idx), size) for s, idx in zip(batch, indices)])

        return FrameBatch(self.model, self._stack(batch, indices) if features is None else features,
                          Questions.from_samples(batch), [list(idx) for idx in indices], read_pixels)

    # ---- per-frame scores, computed once per (n, scorer) and reused by every rule and k -----------------
    @torch.inference_mode()
    def scores(self, num_frames: int, scorers: Sequence[str | Scorer]) -> list[dict[str, Tensor]]:
        """Every question's n per-frame scores under each scorer, by question id, in one pass over the videos:
        ViT features are read once per batch and parts that scorers share (the Localizer bridge's tokens for
        several prompts or score kinds) are computed once. Kept for the Evaluator's lifetime.

        On short videos of one length (the world) a per-frame scorer scores every frame of each video once and
        every n reads its frames from those scores (`every_frame_scores`); those are also kept in `score_dir`."""
        scorers = [get_scorer(s) for s in scorers]
        wanted = list({s.label: s for s in scorers if (num_frames, s.label) not in self._scores}.values())
        length = self.whole_video_length()
        if length and any(s.per_frame for s in wanted):
            kept = {s.stored().label: s.stored() for s in wanted if s.per_frame}  # e.g. both Localizer score kinds
            every = self.every_frame_scores(list(kept.values()))
            for scorer in (s for s in wanted if s.per_frame):
                values = every[scorer.stored().label]
                self._scores[(num_frames, scorer.label)] = {
                    q.question_id: scorer.from_stored(values[q.question_id][self.frame_indices(q, num_frames)])
                    for q in self.samples if q.question_id in values}
            wanted = [s for s in wanted if not s.per_frame]
        if wanted:
            self._scores.update(self._score_pass(num_frames, wanted, None))
        return [self._scores[(num_frames, s.label)] for s in scorers]

    def whole_video_length(self) -> int | None:
        """The length of the samples' videos when all have one length of at most `WHOLE_VIDEO_FRAMES`, else None."""
        if self._video_length is False:
            try:
                lengths = {self.reader.info(s).num_frames for s in self.samples}
            except (VideoError, OSError):  # an unreadable video: score sampled frames (its question is skipped there)
                lengths = set()
            self._video_length = lengths.pop() if len(lengths) == 1 and min(lengths) <= WHOLE_VIDEO_FRAMES else None
        return self._video_length

    def _score_pass(self, num_frames: int, scorers: Sequence[Scorer], every: int | None) -> dict[tuple, dict]:
        """One pass over the videos scoring n sampled frames (or all `every` frames) of each question."""
        found: dict[str, dict[str, Tensor]] = {s.label: {} for s in scorers}
        for batch, indices in self._batches(num_frames, f"scores n={every or num_frames}", every):
            frame_batch = self._frame_batch(batch, indices)
            for scorer in scorers:
                values = scorer(frame_batch).float().cpu()
                found[scorer.label].update({s.question_id: v for s, v in zip(batch, values)})
        key = "every" if every else num_frames
        return {(key, label): table for label, table in found.items()}

    def every_frame_scores(self, scorers: Sequence[Scorer]) -> dict[str, dict[str, Tensor]]:
        """{scorer label: {question id: score of every frame of its video}}, read from `score_dir` when an earlier
        Evaluator with the same model parts scored the same questions in the same batches (so the numbers never
        depend on what ran before), else computed in one pass and written there."""
        length, files, todo = self.whole_video_length(), {}, []
        for scorer in scorers:
            if ("every", scorer.label) in self._scores:
                continue
            files[scorer.label] = self._score_file(scorer.label, scorer.parts)
            stored = self._read_scores(files[scorer.label])
            if stored is None:
                todo.append(scorer)
            else:
                self._scores[("every", scorer.label)] = stored
        if todo:
            computed = self._score_pass(length, todo, length)
            self._scores.update(computed)
            for scorer in todo:
                if files[scorer.label] is not None and not self.skipped:  # never a pass that skipped a video
                    save_safetensors({q: v.contiguous() for q, v in computed[("every", scorer.label)].items()},
                                     files[scorer.label], metadata={"scorer": scorer.label})
        return {s.label: self._scores[("every", s.label)] for s in scorers}

    def _score_file(self, label: str, parts: Sequence[str]) -> Path | None:
        """Where the per-frame outputs `label` of this Evaluator's questions, computed from the model `parts` in
        this Evaluator's batches, are kept (None: no `score_dir`)."""
        if self.score_dir is None:
            return None
        ids = "\n".join(s.question_id for s in self.samples)
        key = "|".join([SCORE_FILES_VERSION, label, parts_fingerprint(self.model, parts),
                        str(self.batch_size), str(self.whole_video_length()), ids])
        return Path(self.score_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    @staticmethod
    def _read_scores(path: Path | None) -> dict[str, Tensor] | None:
        if path is None or not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {q: handle.get_tensor(q) for q in handle.keys()}
        except Exception as err:  # a file cut short: recomputed
            warnings.warn(f"score file {path} cannot be read ({err}): its scores are recomputed", stacklevel=3)
            path.unlink(missing_ok=True)
            return None

    def frame_scores(self, num_frames: int, prompt: str = "official", score_kind: str = "logit",
                     also: Sequence[str] = ()) -> dict[str, Tensor]:
        """The Localizer's scores of every question's n frames, by question id. Prompts in `also` are scored in the
        same pass (kept for later calls): the bridge's tokens do not depend on the prompt, so a sweep over prompts
        runs the Localizer's Q-Former once per frame instead of once per prompt."""
        prompts_ = list(dict.fromkeys([prompt, *also]))
        return self.scores(num_frames, [LocalizerScorer(score_kind, p) for p in prompts_])[0]

    # ---- predictions tables -----------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, variant: str = "localizer", num_frames: int = 32, num_keyframes: int = 4, prompt: str = "official",
            readout: str = "official", score_kind: str = "logit", seed: int = 0,
            rule: str | Rule = "top_k") -> pd.DataFrame:
        """One predictions table (one row per question) for a variant. See the module docstring. `rule` is the
        selection rule of the "localizer" variant (official: top-k)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
        if variant == "localizer":
            return self.select(LocalizerScorer(score_kind, prompt), rule, num_frames, num_keyframes, readout,
                               variant="localizer", prompt=prompt)
        if variant == "random":
            return self.select(None, Rule("random", seed=seed), num_frames, num_keyframes, readout, variant="random")
        if variant == "ground_truth":
            def pick(batch, indices, k):
                return torch.tensor([ground_truth_keyframes(self._relevant(s, idx), k)
                                     for s, idx in zip(batch, indices)])
        else:  # "uniform" reads k frames sampled from the whole video, "all" reads all n: every sampled frame
            def pick(batch, indices, k):
                return torch.arange(len(indices[0])).expand(len(batch), -1)
        sample_n = num_keyframes if variant == "uniform" else num_frames
        return self._predict(variant, sample_n, num_frames, num_keyframes, readout, pick, None, "-", prompt)

    @torch.inference_mode()
    def select(self, scorer: str | Scorer | None, rule: str | Rule, num_frames: int = 32, num_keyframes: int = 4,
               readout: str = "official", variant: str | None = None, prompt: str = "official") -> pd.DataFrame:
        """Predictions of one keyframe selector: `scorer` scores the n sampled frames (None for rules that ignore
        scores), `rule` keeps k of them, the Answerer reads those."""
        rule = get_rule(rule)
        scorer = get_scorer(scorer) if scorer is not None else None
        scores = self.scores(num_frames, [scorer])[0] if scorer is not None else None
        label = variant or f"{scorer.label if scorer else '-'} + {rule.label}"

        def pick(batch, indices, k):
            values = (torch.stack([scores[s.question_id] for s in batch]) if scores is not None
                      else torch.zeros(len(batch), len(indices[0])))
            return select_keyframes(values, rule, k, [s.question_id for s in batch])

        return self._predict(label, num_frames, num_frames, num_keyframes, readout, pick, scores,
                             scorer.label if scorer else "-", prompt, rule.label)

    def grid(self, scorers: Sequence[str | Scorer | None], rules: Sequence[str | Rule], num_frames: int = 32,
             num_keyframes: int = 4, readout: str = "official") -> pd.DataFrame:
        """Every scorer × rule on the same questions, one predictions table. Scores are computed once per scorer
        and rules are pure functions of them, so the grid costs one scoring pass per scorer plus the Answerer
        calls for the distinct selections (a selection met before is looked up)."""
        scorers = [get_scorer(s) if s is not None else None for s in scorers]
        self.scores(num_frames, [s for s in scorers if s is not None])  # one pass over the videos
        return pd.concat([self.select(s, r, num_frames, num_keyframes, readout) for s in scorers for r in rules],
                         ignore_index=True)

    @torch.inference_mode()
    def run_selections(self, selections, readout: str = "official") -> pd.DataFrame:
        """Predictions of the kit's Answerer on keyframes chosen elsewhere (`selection_files.read_selections`, or
        a path to such a JSON file). The file's questions must be questions of this Evaluator; the Evaluator's
        questions the file leaves out are recorded in `skipped`, never answered from other frames."""
        from .selection_files import Selections, read_selections

        chosen: Selections = selections if isinstance(selections, Selections) else read_selections(selections)
        known = {s.question_id for s in self.samples}
        unknown = sorted(set(chosen.questions) - known)
        if unknown:
            raise KeyError(f"{chosen.source}: questions not in this evaluation: {unknown[:5]}"
                           f"{' …' if len(unknown) > 5 else ''}")
        self.skipped += [Skipped(s.question_id, f"not in {chosen.source}") for s in self.samples
                         if s.question_id not in chosen.questions]
        todo = [s for s in self.samples if s.question_id in chosen.questions]
        rows = []
        for start in range(0, len(todo), self.batch_size):
            for k in sorted({len(chosen.questions[s.question_id].keyframes) for s in todo[start:start + self.batch_size]}):
                batch = [s for s in todo[start:start + self.batch_size]
                         if len(chosen.questions[s.question_id].keyframes) == k]
                picks = [chosen.questions[s.question_id] for s in batch]
                for sample, pick in zip(batch, picks):
                    length = self.reader.info(sample).num_frames
                    if max(pick.frame_indices) >= length:
                        raise ValueError(f"{chosen.source}: question {sample.question_id!r} names frame "
                                         f"{max(pick.frame_indices)} of a {length}-frame video")
                indices = [p.frame_indices for p in picks]
                keyframes = torch.tensor([[p.frame_indices.index(f) for f in p.keyframes] for p in picks])
                logits = self._answers(batch, indices, keyframes, readout)
                for sample, pick, lg in zip(batch, picks, logits):
                    rows.append(self._row(sample, "file", len(pick.frame_indices), k, "-", pick.frame_indices,
                                          pick.keyframes, pick.scores, lg, chosen.selector.get("scorer") or "-",
                                          chosen.selector.get("rule") or "-"))
        order = {s.question_id: i for i, s in enumerate(self.samples)}
        return pd.DataFrame(sorted(rows, key=lambda r: order[r["question_id"]]))

    def _predict(self, variant, sample_n, num_frames, num_keyframes, readout, pick, scores, scorer_label, prompt,
                 rule_label="-") -> pd.DataFrame:
        rows = []
        for batch, indices in self._batches(sample_n, f"{variant} {num_frames}->{num_keyframes}"):
            keyframes = pick(batch, indices, num_keyframes)  # (B, k) positions among the sampled frames
            logits = self._answers(batch, indices, keyframes, readout)
            for sample, idx, positions, lg in zip(batch, indices, keyframes.tolist(), logits):
                rows.append(self._row(sample, variant, num_frames, num_keyframes, prompt, idx,
                                      [idx[p] for p in positions],
                                      scores[sample.question_id].tolist() if scores is not None else None, lg,
                                      scorer_label, rule_label))
        return pd.DataFrame(rows)

    def _answers(self, batch: Sequence[VideoQASample], indices: Sequence[Sequence[int]], keyframes: Tensor,
                 readout: str) -> list[Tensor]:
        """Answerer logits for each question's keyframes (positions among its sampled frames). The Answerer is a
        pure function of (question, frames), so a selection met before (another prompt, rule or k picking the same
        frames, uniform == ground truth, ...) is looked up instead of recomputed; the table holds a few floats."""
        keys = [(s.question_id, tuple(idx[p] for p in kf), readout)
                for s, idx, kf in zip(batch, indices, keyframes.tolist())]
        todo = [i for i, key in enumerate(keys) if key not in self._answer_logits]
        if todo:
            sub = [batch[i] for i in todo]
            frames = self._frame_batch(sub, [indices[i] for i in todo])
            logits = answer_keyframes(self.model, frames.features, keyframes[todo], frames.questions.qa_texts,
                                      frames.questions.num_options, readout).cpu()
            self._answer_logits.update({keys[i]: lg for i, lg in zip(todo, logits)})
        return [self._answer_logits[key] for key in keys]

    @torch.inference_mode()
    def per_frame_logits(self, num_frames: int = 4, readout: str = "official") -> dict[str, Tensor]:
        """The Answerer's option logits from each of n uniformly sampled frames alone ("Frame: " format), by
        question id: (n, options) per question. On short videos with n = every frame (the reverse chain's labels
        on the world) they are `every_frame_scores` of `AnswererLogits`: kept in `score_dir` for every process
        that needs them, and shared with the `answerer_confidence` scorer."""
        if num_frames == self.whole_video_length():
            stored = AnswererLogits(readout)
            every = self.every_frame_scores([stored])[stored.label]
            return {q.question_id: every[q.question_id][self.frame_indices(q, num_frames)] for q in self.samples
                    if q.question_id in every}
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
    def _options_truncated(self, sample: VideoQASample, localizer: bool) -> bool:
        """Did the prompt cut (`max_text_length` tokens, official 77, applied silently by the official code) remove
        an option from the Answerer's prompt, or from the Localizer's when it chose the frames? The Localizer's
        options come before its instruction, so any of its prompts gives the same answer."""
        if not sample.options:
            return False
        key = (sample.question_id, localizer)
        if key not in self._truncated:
            cut = lambda text: prompts.truncated_options(self.model.tokenizer, text,  # noqa: E731
                                                         self.model.config.max_text_length)
            self._truncated[key] = cut(prompts.sample_qa_text(sample)) or (
                localizer and cut(prompts.sample_loc_text(sample)))
        return self._truncated[key]

    def _is_relevant(self, sample: VideoQASample, index: int) -> bool | None:
        if not sample.moments:
            return None
        return relevant_frame_mask([index], self.reader.info(sample).fps, sample.moments)[0]

    def _relevant(self, sample: VideoQASample, indices: Sequence[int]) -> list[bool]:
        if not sample.moments:
            raise ValueError(f"{sample.question_id}: ground-truth keyframes need known moments")
        return relevant_frame_mask(indices, self.reader.info(sample).fps, sample.moments)

    def _row(self, sample, variant, num_frames, num_keyframes, prompt, sampled, selected, frame_scores, logits,
             scorer="-", rule="-"):
        relevant = None
        if sample.moments:  # every relevant frame of the whole video
            every = range(self.reader.info(sample).num_frames)
            relevant = [i for i, r in zip(every, self._relevant(sample, every)) if r]
        probs = logits.softmax(-1)
        truncated = self._options_truncated(sample, scorer.startswith("localizer"))
        return dict(question_id=sample.question_id, question_type=sample.question_type, dataset=sample.dataset,
                    video=sample.video, options_truncated=truncated,
                    variant=variant, scorer=scorer, rule=rule, num_frames=num_frames, num_keyframes=num_keyframes,
                    prompt=prompt,
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
    return write_dataframe(table, path)


def summary(table: pd.DataFrame, **labels) -> dict:
    """One results row for a predictions table: `labels` (e.g. variant, k), accuracy in the paper's columns
    (percent), and, where relevant frames are known, keyframe hit-rate and recall (percent). `options_truncated`
    counts the questions whose prompt lost an option to the 77-token cut (the official code does not say)."""
    from . import metrics

    row = {**labels, "questions": len(table), **metrics.summarize(table).round(2).to_dict()}
    if "options_truncated" in table:
        row["options_truncated"] = int(table["options_truncated"].astype(bool).sum())
    if "relevant_frames" in table and table["relevant_frames"].notna().any():
        localized = table[table["question_type"] != "counting"] if "counting" in set(table["question_type"]) else table
        row["hit_rate"] = round(100 * metrics.keyframe_hit_rate(localized), 2)
        row["recall"] = round(100 * metrics.keyframe_recall(localized), 2)
    return row


# ---------------------------------------------------------------------------------------------------------
# Several processes (GPUs or nodes): shard by video, gather one table
# ---------------------------------------------------------------------------------------------------------

def shard_by_video(samples: Sequence[VideoQASample], process_index: int, num_processes: int) -> list[VideoQASample]:
    """The questions one process evaluates: whole videos, dealt in turn in order of first appearance, so every
    video's ViT features are computed by exactly one process (and cached by it), never twice across the shards."""
    owner: dict[str, int] = {}
    for sample in samples:
        owner.setdefault(sample.video, len(owner) % num_processes)
    return [s for s in samples if owner[s.video] == process_index]


def process_state():
    """Accelerate's view of the processes; several CPU processes (torchrun, no GPU) must ask for `cpu=True` or
    Accelerate treats them as independent runs (as `training.make_accelerator` does)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)


def evaluate_distributed(ev: Evaluator, evaluate) -> pd.DataFrame:
    """`evaluate(evaluator)` (e.g. `lambda e: e.select("localizer", "top_k")`) on this process's shard of `ev`'s
    questions, gathered into the table one process would write (rows in `ev.samples` order) on every process.
    Works under `accelerate launch` or `torchrun` (CPU processes need ACCELERATE_USE_CPU=true); one process simply
    evaluates everything."""
    from dataclasses import replace

    from accelerate.utils import gather_object

    state = process_state()
    if state.num_processes == 1:
        return evaluate(ev)
    mine = replace(ev, samples=shard_by_video(ev.samples, state.process_index, state.num_processes), skipped=[])
    table = evaluate(mine)
    rows = gather_object(table.to_dict("records"))
    skipped = gather_object([vars(s) for s in mine.skipped])
    ev.skipped += [Skipped(**s) for s in skipped]
    order = {s.question_id: i for i, s in enumerate(ev.samples)}
    # A question evaluated twice (never, with whole-video shards) would show here as a duplicate id.
    rows.sort(key=lambda r: (order[r["question_id"]], str(r.get("scorer")), str(r.get("rule"))))
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m sevila_lib.evaluation --profile mini --scorer localizer --rule top_k --out preds.parquet
    (under `accelerate launch --num_processes N` or `torchrun --nproc_per_node N` to shard the questions)."""
    import argparse
    import sys

    from .workspace import open_workspace

    parser = argparse.ArgumentParser(prog="python -m sevila_lib.evaluation", description=main.__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-questions", type=int, default=0)
    parser.add_argument("--scorer", default="localizer", help="a name in scorers.SCORERS")
    parser.add_argument("--rule", default="top_k", help="a name in selection.RULES")
    parser.add_argument("--num-frames", type=frame_count, default=32)
    parser.add_argument("--keyframes", type=frame_count, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=None, help="ViT feature cache (default: the workspace's)")
    parser.add_argument("--out", required=True, help="predictions table (.parquet or .csv)")
    args = parser.parse_args(argv)
    state = process_state()
    device = str(state.device) if args.device == "auto" else args.device
    try:  # names checked before any work: one line, not a traceback
        get_scorer(args.scorer), get_rule(args.rule)
        ws = open_workspace(args.profile, device=device, max_questions=args.max_questions or None)
        if args.split not in ws.questions:
            raise ValueError(f"unknown split {args.split!r}; choose from {sorted(ws.questions)}")
    except (ValueError, TypeError) as err:  # TypeError: a scorer that needs parameters (file: its path)
        print(f"error: {err}", file=sys.stderr)
        return 2
    ev = ws.evaluator(args.split, **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    table = evaluate_distributed(ev, lambda e: e.select(args.scorer, args.rule, args.num_frames, args.keyframes))
    if state.is_main_process:
        from . import metrics

        save_predictions(table, args.out)
        unlabelled = int(table["answer"].isna().sum()) if len(table) else 0
        score = (f"no accuracy: {unlabelled} questions have no gold answer (a test split?)" if unlabelled
                 else f"accuracy {100 * metrics.accuracy(table):.1f}%")
        print(f"{len(table)} questions ({state.num_processes} processes), {score}, skipped {len(ev.skipped)} "
              f"-> {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

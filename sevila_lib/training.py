"""Training SeViLA's bridges: one Hugging Face Accelerate loop for the paper's three stages (official `sevila.py`,
LAVIS `runner_base.py`).

* `pretrain_localizer`   moment-retrieval pre-training (official `blip2_fmr.py`): a sampled frame is "yes" iff its
                         time lies in a relevant window (the dataset's `relevant` flags); loss `SeViLA.localizer_loss`.
* `train_answerer`       the forward chain (official `sevila.py`, Answerer fine-tuning): the frozen Localizer keeps k
                         of the n training frames (or uniform / random picks, paper Table 8); loss
                         `SeViLA.answerer_loss`.
* `refine_localizer`     the reverse chain (official `sevila.py`, reverse chain): the frozen Answerer labels every
                         frame alone, the Localizer learns those yes/no labels, recomputed every step ("online",
                         official) or read from a table computed once ("stored").
* `iterative_refinement` alternates the two chains for N rounds (paper Table 14; the official repo has no code).

The loop (LAVIS `runner_base.py`): AdamW (0.9, 0.999), weight decay 0.05 on parameters with ndim ≥ 2 (the official rule, so
the 3-D query tokens ARE decayed), LAVIS's `linear_warmup_cosine_lr`, gradient accumulation and mixed precision
through Accelerate, and only the stage's bridge trainable. Checkpoints hold that bridge (safetensors) plus
optimizer/scheduler/RNG state and the data position, so `resume=True` continues bit for bit.

Run from a notebook (call the stage functions) or the command line, on CPU, one GPU or several:
    python -m sevila_lib.training train_answerer --config cfg.json --model mini --data world
    accelerate launch --num_processes 4 -m sevila_lib.training refine_localizer --preset nextqa_refine ...
    torchrun --nproc_per_node 2 -m sevila_lib.training ...      (several CPU processes, gloo)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import gather_object, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from . import chain
from .checkpoints import load_bridges, save_bridges
from .checkpointing import Position, checkpoint_candidates, data_fingerprint, resume_checkpoint, save_checkpoint
from .model import SeViLA
from .pseudo_labels import (LABEL_COLUMNS, FrameLookup, LabelLookup, PseudoLabels, label_row_dicts,  # noqa: F401
                            labelling_mode, pseudo_label_stats, pseudo_labels, read_label_table, report_label_stats,
                            write_label_table)
from .schedule import (LinearWarmupCosineLR, build_optimizer, decays, linear_warmup_cosine_lr,  # noqa: F401
                       param_groups)
from .selection import Rule
from .train_config import CHOICES, PRESETS, STAGE_BRIDGE, TrainConfig, preset  # noqa: F401

LOG_COLUMNS = ("step", "epoch", "loss", "lr", "samples")


# ---------------------------------------------------------------------------------------------------------
# The loss of one stage, as a module (so DDP sees a forward())
# ---------------------------------------------------------------------------------------------------------

class StageLoss(nn.Module):
    """batch -> loss for one stage. SeViLA's training methods are not `forward`, and DistributedDataParallel
    only synchronises gradients of computations that run through a wrapped module's forward."""

    def __init__(self, model: SeViLA, config: TrainConfig, stored: LabelLookup | None = None,
                 keyframe_scores: FrameLookup | None = None, frame_answers: FrameLookup | None = None,
                 vit_features: Callable | None = None):
        super().__init__()
        self.model, self.config, self.stored, self.vit_features = model, config, stored, vit_features
        self.keyframe_scores, self.frame_answers = keyframe_scores, frame_answers
        # Checked once here, before any step: a cached frozen pass was computed without dropout.
        if config.labelling_dropout and keyframe_scores is not None:
            raise ValueError("cached Localizer scores cannot reproduce dropout in the selection pass")
        if config.labelling_dropout and frame_answers is not None:
            raise ValueError("cached Answerer logits cannot reproduce dropout in the labelling pass")
        self.epoch = 0
        self.label_rows: list[dict[str, Any]] = []  # online pseudo-labels since the last optimizer step

    def forward(self, batch: dict[str, Any]) -> Tensor:
        frames = batch["frames"]
        if frames.shape[1] != self.config.num_frames:
            raise ValueError(f"batch has {frames.shape[1]} frames per video, config.num_frames is "
                             f"{self.config.num_frames}")
        if self.vit_features is not None:  # the frozen ViT's features from a cache (exact: no crop, no dropout)
            indices = batch["frame_indices"]
            indices = indices.tolist() if torch.is_tensor(indices) else indices
            features = self.vit_features(batch["question_id"], indices).to(frames.device)
        else:
            features = self.model.encode_frames(frames)  # (B, n, P, Dv), frozen ViT run once
        stage = self.config.stage
        if stage == "train_answerer":
            keyframes = self.keyframes(features, batch)  # (B, k)
            return chain.keyframe_loss(self.model, features, keyframes, batch["qa_text"], batch["answer"])
        if stage == "pretrain_localizer":
            labels = _relevant(batch)
        elif self.stored is not None:
            labels = self.stored(batch["question_id"], batch["frame_indices"])
        else:
            labels = self.online_labels(features, batch)
        return self.model.localizer_loss(features, batch["loc_text"], labels.to(features.device))

    def keyframes(self, features: Tensor, batch: dict[str, Any]) -> Tensor:
        """The k training keyframes through the chain's selection: the frozen Localizer's scores (cached or
        computed now) with top-k, or the uniform / random rule (paper Table 8)."""
        k, source, ids = self.config.num_keyframes, self.config.keyframe_source, batch["question_id"]
        if source == "random":  # fresh each epoch, per question (never per batch or process)
            return chain.select_keyframes(torch.zeros(features.shape[:2]), Rule("random", seed=(
                self.config.seed, self.epoch)), k, ids)
        if source == "uniform":
            return chain.select_keyframes(torch.zeros(features.shape[:2]), "uniform", k, ids)
        if self.keyframe_scores is not None:
            return chain.select_keyframes(self.keyframe_scores(ids, batch["frame_indices"]), "top_k", k, ids)
        with torch.no_grad(), labelling_mode(self.model, self.config.labelling_dropout):
            scores = self.model.localize(features, batch["loc_text"])
        return chain.select_keyframes(scores, "top_k", k, ids)

    def online_labels(self, features: Tensor, batch: dict[str, Any]) -> Tensor:
        if self.frame_answers is not None:
            logits = self.frame_answers(batch["question_id"], batch["frame_indices"]).to(features.device)
        else:
            with torch.no_grad(), labelling_mode(self.model, self.config.labelling_dropout):
                logits = self.model.answer_each_frame(features, _qa_texts(batch), batch["num_options"],
                                                      readout="teacher_forced")  # (B, n, O)
        labels = pseudo_labels(logits, batch["answer"], self.config.label_policy, self.config.tau)
        self.label_rows += [dict(row, epoch=self.epoch) for row in label_row_dicts(batch, labels)]
        return labels.label


def _relevant(batch: dict[str, Any]) -> Tensor:
    if any(flags is None for flags in batch["relevant"]):
        raise ValueError("pretrain_localizer needs per-frame `relevant` labels (moment-retrieval samples with "
                         "relevant windows); got an item without them")
    return torch.tensor([list(map(bool, flags)) for flags in batch["relevant"]])


def _qa_texts(batch: dict[str, Any]) -> list[str]:
    if any(text is None for text in batch["qa_text"]):
        raise ValueError("this stage needs multiple-choice QA items (qa_text); got a moment-retrieval item")
    return batch["qa_text"]


# ---------------------------------------------------------------------------------------------------------
# Data order, accelerator, logs
# ---------------------------------------------------------------------------------------------------------

class EpochSampler(Sampler[int]):
    """A permutation that depends only on (seed, epoch). Accelerate hands whole batches of this order to the
    processes in turn, so with P processes × batch b, global step s covers the same items as one process with
    batch P·b (the distributed test checks it)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())

    def __len__(self) -> int:
        return self.size


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An Accelerator for one stage: gradient accumulation and mixed precision. DDP runs without
    `find_unused_parameters` (official: True): transformers' Q-Former has no text-side layers, so every parameter
    of the trained bridge gets a gradient at every step, and DDP would fail loudly if one did not."""
    precision = config.mixed_precision
    if precision == "auto":
        precision = "fp16" if torch.cuda.is_available() else "no"
    # Without `cpu=True` Accelerate treats several CPU processes (torchrun, no GPU) as independent runs.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    kwargs = dict(gradient_accumulation_steps=config.grad_accum_steps, mixed_precision=precision, cpu=multi_cpu,
                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    try:
        return Accelerator(**kwargs)
    except ValueError as err:
        # Accelerate keeps one process-wide state; in a single-process notebook a later stage may ask for another
        # precision. Resetting is safe only without a process group.
        if "already been initialized" not in str(err) or AcceleratorState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


class RowLog:
    """A CSV appended as the run goes (nothing piles up in memory); the first column is the optimizer step.
    On resume, rows the interrupted run wrote after its checkpoint are dropped first, so they are not doubled."""

    def __init__(self, path: Path, columns: Sequence[str], enabled: bool = True, resume_step: int | None = None):
        self.path, self.columns, self.enabled = path, tuple(columns), enabled
        if not enabled:
            return
        rows: list[list[str]] = []
        if resume_step is not None and path.exists():
            with path.open(newline="") as handle:
                rows = [r for r in list(csv.reader(handle))[1:] if r and int(r[0]) <= resume_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as handle:
            csv.writer(handle).writerows([self.columns, *rows])
        os.replace(tmp, path)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.enabled and rows:
            with self.path.open("a", newline="") as handle:
                csv.writer(handle).writerows([[row[c] for c in self.columns] for row in rows])


# ---------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What a stage returns: enough for a notebook to plot the losses and load the trained bridge."""

    stage: str
    final_step: int
    losses: list[float]  # mean loss of each optimizer step run by THIS call (a resumed call: the remaining ones)
    log_path: Path  # CSV of all steps (step, epoch, loss, lr, samples)
    checkpoint_dir: Path  # the final checkpoint: load its bridge with `checkpoints.load_bridges`
    output_dir: Path
    label_stats: dict[str, float] | None = None  # refine_localizer: `pseudo_label_stats` of the labels used
    labels_path: Path | None = None  # refine_localizer: the stored table, or the online labels seen


@contextmanager
def _train_only(model: SeViLA, bridge: str, llm_dropout: bool) -> Iterator[None]:
    """Only `bridge` requires grad, the model is in train mode (ViT, and T5 unless llm_dropout, stay in eval);
    the caller's flags and modes come back afterwards."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training, was_dropout = model.training, model.frozen_dropout
    model.requires_grad_(False)
    getattr(model, bridge).requires_grad_(True)
    model.frozen_dropout = llm_dropout
    model.train()
    try:
        yield
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.frozen_dropout = was_dropout
        model.train(was_training)


@contextmanager
def _dataset_setting(dataset: Dataset, **values: Any) -> Iterator[None]:
    """Temporarily set attributes the dataset has (`num_frames`, `train`); others are left alone."""
    old = {k: getattr(dataset, k) for k in values if hasattr(dataset, k)}
    for k in old:
        setattr(dataset, k, values[k])
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(dataset, k, v)


def _default_collate() -> Callable:
    from .datasets import collate_video_qa  # the kit's batch format (frames stacked, other keys as lists)

    return collate_video_qa


def _loader(dataset: Dataset, config: TrainConfig, collate_fn: Callable | None, shuffle: bool):
    sampler = EpochSampler(len(dataset), config.seed, shuffle)
    # Its own generator: DataLoader draws a base seed per epoch, which must not consume the global torch RNG
    # (dropout's), or a resumed run would see different dropout masks.
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        collate_fn=collate_fn or _default_collate(),
                        generator=torch.Generator().manual_seed(config.seed))
    return loader, sampler


def _ignore_frozen_in_ddp(stage: StageLoss, bridge: str) -> None:
    # DDP would broadcast every frozen ViT/T5 tensor at wrap time and buffers every step; only the bridge matters.
    frozen = [n for n, p in stage.named_parameters() if not p.requires_grad]
    frozen += [n for n, _ in stage.named_buffers() if not n.startswith(f"model.{bridge}.")]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(stage, frozen)


def run_stage(model: SeViLA, dataset: Dataset, config: TrainConfig, *, resume: bool = False,
              stored: LabelLookup | None = None, keyframe_scores: FrameLookup | None = None,
              frame_answers: FrameLookup | None = None,
              collate_fn: Callable | None = None,
              step_callback: Callable[[int, float], None] | None = None,
              vit_features: Callable | None = None) -> TrainResult:
    """The one training loop behind every stage. `step_callback(step, loss)` runs after each optimizer step,
    before that step's checkpoint (tests raise in it to simulate a crash). `vit_features(question_ids,
    frame_indices)`: the frozen ViT's features from a cache instead of running it every step (mini profile)."""
    unlabelled = [s.question_id for s in getattr(dataset, "samples", []) if s.answer is None]
    if unlabelled and config.stage != "pretrain_localizer":  # refused before anything is written
        raise ValueError(f"{config.stage} learns from gold answers; {len(unlabelled)} question(s) have none (a test "
                         f"split?): {', '.join(unlabelled[:5])}{' ...' if len(unlabelled) > 5 else ''}")
    accelerator = make_accelerator(config)
    set_seed(config.seed)
    out = Path(config.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "train_config.json")
    if getattr(dataset, "num_frames", config.num_frames) != config.num_frames:
        raise ValueError(f"the dataset samples {dataset.num_frames} frames, config.num_frames is {config.num_frames}")

    with _train_only(model, config.bridge, config.llm_dropout):
        stage = StageLoss(model, config, stored, keyframe_scores, frame_answers, vit_features)
        optimizer = build_optimizer(stage, config)
        scheduler = LinearWarmupCosineLR(optimizer, config)
        loader, sampler = _loader(dataset, config, collate_fn, config.shuffle)
        _ignore_frozen_in_ddp(stage, config.bridge)
        wrapped, optimizer, loader = accelerator.prepare(stage, optimizer, loader)
        trainable = [p for p in stage.parameters() if p.requires_grad]

        data = data_fingerprint(dataset)
        position, checkpoint = Position(), None
        if resume:  # the newest readable checkpoint; a changed recipe or other data is refused
            checkpoint, position = resume_checkpoint(out, accelerator, model, config, optimizer, scheduler, data)
        if checkpoint is not None:
            accelerator.print(f"resumed from {checkpoint} (step {position.step}, epoch {position.epoch}, "
                              f"batch {position.batches})")
        if position.batches >= len(loader):  # the checkpoint closed its epoch
            position = replace(position, epoch=position.epoch + 1, batches=0)
        resume_step = position.step if checkpoint else None
        log = RowLog(out / "log.csv", LOG_COLUMNS, accelerator.is_main_process, resume_step)
        # Online pseudo-labels, one file per process (merged at the end) for their statistics.
        label_log = RowLog(out / "online_labels" / f"rank-{accelerator.process_index}.csv",
                           ("step", "epoch", *LABEL_COLUMNS), stored is None and config.stage == "refine_localizer",
                           resume_step)

        steps_per_epoch = math.ceil(len(loader) / config.grad_accum_steps)
        total = config.epochs * steps_per_epoch if config.max_steps is None else min(
            config.max_steps, config.epochs * steps_per_epoch)
        bar = tqdm(total=total, initial=position.step, desc=config.stage, dynamic_ncols=True,
                   disable=True if not (config.progress_bar and accelerator.is_main_process) else None)
        losses: list[float] = []
        window: list[Tensor] = []
        window_samples = 0
        last_saved = position.step if checkpoint else -1
        done = position.step >= total
        for epoch in range(position.epoch, config.epochs):
            if done:
                break
            stage.epoch = epoch
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)  # train-mode frame choice and crop depend on (seed, epoch, index)
            skip = position.batches if epoch == position.epoch else 0
            epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
            epoch_loader.set_epoch(epoch)  # Accelerate re-applies its own epoch counter at every iter()
            iteration = skip
            for batch in epoch_loader:
                if batch is None:  # every item of this batch was skipped by the dataset (on_error="skip")
                    if accelerator.num_processes > 1:
                        raise RuntimeError("an empty batch on one process would stall the others; fix the data")
                    iteration += 1
                    continue
                scheduler.step(epoch, iteration)  # LAVIS sets the lr before every batch
                with accelerator.accumulate(wrapped):
                    loss = wrapped(batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                iteration += 1
                window.append(loss.detach().float())
                window_samples += len(batch["question_id"])
                if not accelerator.sync_gradients:
                    continue
                step_loss = accelerator.reduce(torch.stack(window).mean(), "mean").item()
                step_samples = int(accelerator.reduce(torch.tensor(window_samples, device=accelerator.device),
                                                      "sum").item())
                window, window_samples = [], 0
                position = Position(position.step + 1, epoch, iteration, position.samples + step_samples)
                losses.append(step_loss)
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.lr:.2e}")
                if position.step % config.log_every == 0:
                    log.write([dict(step=position.step, epoch=epoch, loss=step_loss, lr=scheduler.lr,
                                    samples=position.samples)])
                label_log.write([dict(row, step=position.step) for row in stage.label_rows])
                stage.label_rows.clear()
                if step_callback is not None:
                    step_callback(position.step, step_loss)
                if config.checkpoint_every and position.step % config.checkpoint_every == 0:
                    checkpoint = save_checkpoint(accelerator, model, config, optimizer, scheduler, position, data)
                    last_saved = position.step
                if position.step >= total:
                    done = True
                    break
        bar.close()
        if last_saved != position.step:
            checkpoint = save_checkpoint(accelerator, model, config, optimizer, scheduler, position, data)
        accelerator.free_memory()  # drop DDP hooks and references before the next stage wraps the model again
    result = TrainResult(config.stage, position.step, losses, out / "log.csv", Path(checkpoint), out)
    if label_log.enabled:
        result.labels_path = out / "pseudo_labels_online.csv"
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            parts = sorted((out / "online_labels").glob("rank-*.csv"))
            write_label_table(pd.concat([pd.read_csv(f, dtype={"question_id": str}) for f in parts])
                              .sort_values(["step", "question_id", "position"]), result.labels_path)
        accelerator.wait_for_everyone()
        result.label_stats = report_label_stats(read_label_table(result.labels_path), result.labels_path, out)
    return result


# ---------------------------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------------------------

def _check_stage(config: TrainConfig, stage: str) -> TrainConfig:
    if config.stage != stage:
        raise ValueError(f"{stage}() got a config for stage {config.stage!r}")
    return config


def train_answerer(model: SeViLA, dataset: Dataset, config: TrainConfig, *, resume: bool = False,
                   collate_fn: Callable | None = None, step_callback: Callable | None = None,
                   keyframe_scores: FrameLookup | None = None, vit_features: Callable | None = None) -> TrainResult:
    """Fine-tune the Answerer on k keyframes of the n training frames (forward chain, official `sevila.py`, Answerer
    fine-tuning).

    keyframe_source: "localizer" — the frozen Localizer's top-k (official); "uniform" — segment midpoints;
    "random" — one random frame per segment, fresh each epoch (paper Table 8's "Random" training).
    keyframe_scores: the frozen Localizer's scores computed once (see `FrameLookup`) instead of every step.
    """
    return run_stage(model, dataset, _check_stage(config, "train_answerer"), resume=resume, collate_fn=collate_fn,
                     step_callback=step_callback, keyframe_scores=keyframe_scores, vit_features=vit_features)


def pretrain_localizer(model: SeViLA, moment_dataset: Dataset, config: TrainConfig, *, resume: bool = False,
                       collate_fn: Callable | None = None, step_callback: Callable | None = None,
                       vit_features: Callable | None = None) -> TrainResult:
    """Pre-train the Localizer on moment retrieval (QVHighlights, official `blip2_fmr.py`): per-frame yes/no from
    `relevant`."""
    return run_stage(model, moment_dataset, _check_stage(config, "pretrain_localizer"), resume=resume,
                     collate_fn=collate_fn, step_callback=step_callback, vit_features=vit_features)


def compute_pseudo_labels(model: SeViLA, dataset: Dataset, config: TrainConfig,
                          path: str | os.PathLike | None = None, collate_fn: Callable | None = None) -> pd.DataFrame:
    """Label every frame of `dataset` once with the frozen Answerer (each frame alone, teacher-forced letter
    logits) and write the table (question_id, frame_index, position, gold_prob, correct, label) atomically.

    Frames are the dataset's eval-mode frames (segment midpoints, no crop: a `train` flag is switched off while
    labelling), so the same (question_id, frame_index) pairs come back when training on eval-mode frames.
    """
    accelerator = make_accelerator(config)
    set_seed(config.seed)
    path = Path(path or config.labels_path or Path(config.output_dir) / "pseudo_labels.csv")
    loader, _ = _loader(dataset, config, collate_fn, shuffle=False)
    loader = accelerator.prepare(loader)
    model.to(accelerator.device)
    rows: list[dict[str, Any]] = []
    with _dataset_setting(dataset, train=False), torch.no_grad(), labelling_mode(model, config.labelling_dropout):
        for batch in tqdm(loader, desc="pseudo-labels", disable=True if not (
                config.progress_bar and accelerator.is_main_process) else None):
            if batch is None:
                continue
            features = model.encode_frames(batch["frames"])
            logits = model.answer_each_frame(features, _qa_texts(batch), batch["num_options"],
                                             readout="teacher_forced")  # (B, n, O)
            rows += label_row_dicts(batch, pseudo_labels(logits, batch["answer"], config.label_policy, config.tau))
    if accelerator.num_processes > 1:
        rows = gather_object(rows)  # even_batches repeats a few items on the last batch: dropped below
    table = pd.DataFrame(rows, columns=list(LABEL_COLUMNS)).drop_duplicates(["question_id", "position"])
    if accelerator.is_main_process:
        write_label_table(table, path)
    accelerator.wait_for_everyone()
    return table


def refine_localizer(model: SeViLA, dataset: Dataset, config: TrainConfig, *, resume: bool = False,
                     collate_fn: Callable | None = None, step_callback: Callable | None = None,
                     frame_answers: FrameLookup | None = None, vit_features: Callable | None = None) -> TrainResult:
    """Refine the Localizer on the frozen Answerer's pseudo-labels (reverse chain, official `sevila.py`, reverse chain).

    online (official): labels recomputed every step on that step's frames (from `frame_answers`, the frozen
    Answerer's per-frame logits computed once, when given: see `FrameLookup`). stored: labels computed once over the
    dataset's eval-mode frames into a table (`compute_pseudo_labels`); training then also runs on eval-mode
    frames (no random frame choice or crop), because labels are looked up by (question_id, frame_index).
    An existing table is used as is when it was named explicitly (`labels_path`, e.g. a table relabelled at
    another threshold) or when resuming; otherwise the labels are computed.
    """
    config = _check_stage(config, "refine_localizer")
    if config.label_mode == "online":
        return run_stage(model, dataset, config, resume=resume, collate_fn=collate_fn, step_callback=step_callback,
                         frame_answers=frame_answers, vit_features=vit_features)
    if frame_answers is not None:
        raise ValueError("frame_answers serve online labels; stored labels come from their own table")
    path = Path(config.labels_path or Path(config.output_dir) / "pseudo_labels.csv")
    reuse = path.exists() and (resume or bool(config.labels_path))
    table = read_label_table(path) if reuse else compute_pseudo_labels(model, dataset, config, path, collate_fn)
    stats = report_label_stats(table, path, Path(config.output_dir))
    with _dataset_setting(dataset, train=False):
        result = run_stage(model, dataset, config, resume=resume, stored=LabelLookup(table, str(path)),
                           collate_fn=collate_fn, step_callback=step_callback, vit_features=vit_features)
    result.label_stats, result.labels_path = stats, path
    return result


@dataclass
class RoundResult:
    """One round of iterative refinement: both stages' results and a folder with both bridges after the round."""

    round: int
    answerer: TrainResult
    localizer: TrainResult
    bridges_dir: Path  # `checkpoints.load_bridges(model, bridges_dir)` restores the model after this round


def iterative_refinement(model: SeViLA, qa_dataset: Dataset, rounds: int, answerer_config: TrainConfig,
                         localizer_config: TrainConfig, output_dir: str | os.PathLike | None = None, *,
                         resume: bool = False, collate_fn: Callable | None = None) -> list[RoundResult]:
    """Alternate Answerer fine-tuning (with the current Localizer) and Localizer refinement (pseudo-labels from the
    current Answerer) for `rounds` rounds (paper Table 14). Layout: <output_dir>/round-<r>/{answerer,localizer,
    bridges}. The dataset's `num_frames` is switched to each stage's n while it runs."""
    base = Path(output_dir or Path(answerer_config.output_dir).parent / "iterative")
    results = []
    for r in range(1, rounds + 1):
        round_dir = base / f"round-{r}"
        a_cfg = replace(_check_stage(answerer_config, "train_answerer"), output_dir=str(round_dir / "answerer"))
        l_cfg = replace(_check_stage(localizer_config, "refine_localizer"), output_dir=str(round_dir / "localizer"),
                        labels_path="")  # each round labels with its own answerer
        with _dataset_setting(qa_dataset, num_frames=a_cfg.num_frames):
            answerer = train_answerer(model, qa_dataset, a_cfg, resume=resume, collate_fn=collate_fn)
        with _dataset_setting(qa_dataset, num_frames=l_cfg.num_frames):
            localizer = refine_localizer(model, qa_dataset, l_cfg, resume=resume, collate_fn=collate_fn)
        if PartialState().is_main_process:
            save_bridges(model, round_dir / "bridges", which="both")
        PartialState().wait_for_everyone()
        results.append(RoundResult(r, answerer, localizer, round_dir / "bridges"))
    return results


STAGE_FUNCTIONS = {"train_answerer": train_answerer, "pretrain_localizer": pretrain_localizer,
                   "refine_localizer": refine_localizer}


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------

def build_dataset(data: str, config: TrainConfig, image_size: int, split: str = "train",
                  annotations: str | None = None, videos: str | None = None, map_path: str | None = None) -> Dataset:
    """The training dataset for the command line, in train mode (random frames and crop).

    data="world": the mini world (moment queries for pretrain_localizer, QA otherwise). data=<dataset name>
    (nextqa, star, how2qa, tvqa, vlep, qvh, unified): `annotations` file + `videos` folder, read by
    `datasets.read_annotations` and decoded with `video.VideoFileReader`.
    """
    from .datasets import DATASETS, VideoQADataset, read_annotations

    if data == "world":
        from .world import MomentsWorld, WorldFrameReader

        world = MomentsWorld()
        samples = world.moment_samples(split) if config.stage == "pretrain_localizer" else world.qa_samples(split)
        reader = WorldFrameReader(world)
    elif data in DATASETS + ("unified",):
        if not (annotations and videos):
            raise ValueError(f"--data {data} needs --annotations FILE and --videos DIR")
        from .video import VideoFileReader

        samples, reader = read_annotations(data, annotations, map_path), VideoFileReader(videos)
    else:
        raise ValueError(f"unknown data {data!r}; use 'world' or one of {DATASETS + ('unified',)}")
    return VideoQADataset(samples, reader, num_frames=config.num_frames, image_size=image_size, train=True,
                          seed=config.seed)


def _config_from_args(path: str | None, preset_name: str | None, stage: str, output_dir: str | None) -> TrainConfig:
    values: dict[str, Any] = dict(PRESETS[preset_name]) if preset_name else {}
    if path:
        values.update(json.loads(Path(path).read_text()))
    values["stage"] = stage
    if output_dir:
        values["output_dir"] = output_dir
    return TrainConfig.from_dict(values)


CLI_CHECKPOINT_EVERY = 200  # optimizer steps: minutes of work at most are lost to a crash on the paper recipes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevila_lib.training", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=[*STAGE_FUNCTIONS, "iterate"])
    parser.add_argument("--config", help="TrainConfig JSON (for iterate: the answerer's)")
    parser.add_argument("--localizer-config", help="iterate: the refine_localizer TrainConfig JSON")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from an official recipe")
    parser.add_argument("--rounds", type=int, default=2, help="iterate: number of rounds")
    parser.add_argument("--model", default="mini", help="BLIP-2 checkpoint directory or hub id; 'mini' = shipped")
    parser.add_argument("--bridges", action="append", default=[], help="kit bridges to load first (repeatable)")
    parser.add_argument("--data", default="world", help="'world' or a dataset name (then --annotations, --videos)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--annotations")
    parser.add_argument("--videos")
    parser.add_argument("--map", help="NExT-QA map_vid_vidorID.json")
    parser.add_argument("--output-dir")
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/latest")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help=f"optimizer steps between checkpoints (default: the config's, else "
                             f"{CLI_CHECKPOINT_EVERY}; 0 = only the final one)")
    args = parser.parse_args(argv)

    from .checkpoints import from_hf_blip2

    model, _ = from_hf_blip2(args.model)
    for directory in args.bridges:
        load_bridges(model, directory)
    stage = "train_answerer" if args.stage == "iterate" else args.stage
    config = _config_from_args(args.config, args.preset, stage, args.output_dir)
    # Work is kept: the command line checkpoints by default, and never starts over a run's checkpoints.
    every = args.checkpoint_every if args.checkpoint_every is not None else (
        config.checkpoint_every or CLI_CHECKPOINT_EVERY)
    config = replace(config, checkpoint_every=every)
    existing = checkpoint_candidates(config.output_dir)
    if args.stage != "iterate" and existing and not args.resume:
        print(f"error: {config.output_dir} already holds checkpoints (newest {existing[0].name}); pass --resume to "
              f"continue that run, or choose another --output-dir", file=sys.stderr)
        return 2
    dataset = build_dataset(args.data, config, model.config.image_size, args.split, args.annotations, args.videos,
                            args.map)
    if args.stage == "iterate":
        loc_config = _config_from_args(args.localizer_config, None, "refine_localizer", None)
        for r in iterative_refinement(model, dataset, args.rounds, config, loc_config, args.output_dir,
                                      resume=args.resume):
            print(f"round {r.round}: answerer step {r.answerer.final_step}, localizer step {r.localizer.final_step}, "
                  f"bridges {r.bridges_dir}")
        return 0
    result = STAGE_FUNCTIONS[stage](model, dataset, config, resume=args.resume)
    if PartialState().is_main_process:
        print(f"{result.stage}: {result.final_step} steps, last loss "
              f"{result.losses[-1] if result.losses else float('nan'):.4f}, checkpoint {result.checkpoint_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

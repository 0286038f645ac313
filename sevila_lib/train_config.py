"""What one training run is: `TrainConfig` (every knob of a stage, one-to-one with notebook parameters) and the
official recipes (`PRESETS`, from the official run scripts). The loop that runs a config is `training.py`."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import paths
from .files import atomic_write_text

STAGE_BRIDGE = {"pretrain_localizer": "localizer", "train_answerer": "answerer", "refine_localizer": "localizer"}
CHOICES = {
    "stage": tuple(STAGE_BRIDGE),
    "keyframe_source": ("localizer", "uniform", "random"),
    "label_mode": ("online", "stored"),
    "label_policy": ("argmax", "threshold"),
    "mixed_precision": ("no", "fp16", "bf16", "auto"),
}

@dataclass
class TrainConfig:
    """One training run. Notebook parameters map one-to-one onto these fields; unknown keys are rejected.

    Steps count optimizer steps; iterations count batches per process (the LAVIS warm-up counts these).
    Global batch = batch_size × processes × grad_accum_steps.
    """

    stage: str = "train_answerer"  # "pretrain_localizer" | "train_answerer" | "refine_localizer"
    # optimiser and schedule (LAVIS `runner_base.py`)
    init_lr: float = 3e-5
    min_lr: float = 0.0
    warmup_lr: float = 1e-8
    warmup_steps: int = 1000  # iterations of linear warm-up in epoch 0 (0 = none)
    weight_decay: float = 0.05
    epochs: int = 10
    batch_size: int = 8  # per process (official scripts: per GPU, 4 GPUs)
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None  # official: no clipping
    # frames
    num_frames: int = 32  # n: frames the dataset samples per video
    num_keyframes: int = 4  # k: frames the Answerer reads (train_answerer)
    keyframe_source: str = "localizer"  # "localizer" (official) | "uniform" | "random" (paper Table 8)
    # pseudo-labels (refine_localizer, official `sevila.py`, reverse chain)
    label_mode: str = "online"  # "online" (official: every step) | "stored" (once, into a table)
    label_policy: str = "argmax"  # "argmax" (official: argmax == gold) | "threshold" (P(gold) ≥ tau)
    tau: float = 0.5
    labelling_dropout: bool = False  # True = official: dropout on in the no-grad labelling/selection passes
    llm_dropout: bool = False  # True = official: T5 dropout on in the gradient pass (`SeViLA.frozen_dropout`)
    labels_path: str = ""  # stored table (.csv or .parquet); "" = <output_dir>/pseudo_labels.csv
    # run
    seed: int = 42
    output_dir: str = ""  # "" = reports/runs/<stage>
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0 = only the final one
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule still follows `epochs`)
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" | "auto" (fp16 on CUDA as official AMP, "no" on CPU)
    log_every: int = 1
    num_workers: int = 0
    shuffle: bool = True
    progress_bar: bool = True  # tqdm; also off when stderr is not a terminal

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; choose from {allowed}")
        for name in ("epochs", "batch_size", "grad_accum_steps", "num_frames", "num_keyframes", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.stage == "train_answerer" and self.num_keyframes > self.num_frames:
            raise ValueError(f"cannot keep {self.num_keyframes} keyframes of {self.num_frames} frames")
        if not self.output_dir:
            self.output_dir = str(paths.REPORTS_DIR / "runs" / self.stage)

    @property
    def bridge(self) -> str:
        """The bridge this stage trains ("localizer" or "answerer")."""
        return STAGE_BRIDGE[self.stage]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Unknown TrainConfig keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))


# The official recipes (official run scripts; batch sizes are per GPU on 4 GPUs). Dropout switches stay at the
# kit's defaults (off); set labelling_dropout / llm_dropout to True for the official behaviour (official `sevila.py`).
PRESETS: dict[str, dict[str, Any]] = {
    "qvh_pretrain": dict(stage="pretrain_localizer", init_lr=3e-5, warmup_steps=1000, epochs=80, batch_size=16,
                         grad_accum_steps=1, num_frames=4, mixed_precision="auto"),
    "nextqa_answerer": dict(stage="train_answerer", init_lr=3e-5, warmup_steps=1000, epochs=10, batch_size=8,
                            grad_accum_steps=2, num_frames=32, num_keyframes=4, keyframe_source="localizer",
                            mixed_precision="auto"),
    "nextqa_refine": dict(stage="refine_localizer", init_lr=3e-5, warmup_steps=500, epochs=10, batch_size=16,
                          grad_accum_steps=1, num_frames=4, num_keyframes=4, label_mode="online",
                          label_policy="argmax", mixed_precision="auto"),
}


def preset(name: str, **overrides) -> TrainConfig:
    """A named official recipe with optional overrides, e.g. `preset("nextqa_refine", epochs=1)`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown training preset {name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], **overrides})

"""Helpers for tests/test_training.py: a random dataset in the kit's batch format, and a script that runs one short
training stage — on one process, or on two under `accelerate launch --cpu --num_processes 2` (the distributed test).

    python tests/training_worker.py MODEL_DIR OUT_DIR BATCH_SIZE
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from sevila_lib import prompts

QUESTIONS = [
    ("why does the person lie down without wearing her footwear?",
     ["follow woman.", "cleasn environment.", "resting.", "hot indoor.", "sunbathing in beach."]),
    ("what colour is the ball?", ["red.", "blue.", "green.", "yellow.", "white."]),
]


class RandomVideoQA(Dataset):
    """`size` items shaped like `datasets.VideoQADataset`'s: random frames (T, 3, S, S), the two test questions,
    answers cycling through the options, `relevant` flags on every other frame. Item i depends only on
    (seed, i), and `set_epoch` changes nothing, so every run and every process sees the same data."""

    def __init__(self, size: int = 8, num_frames: int = 6, image_size: int = 16, seed: int = 0,
                 moments: bool = False):
        generator = torch.Generator().manual_seed(seed)
        self.frames = torch.randn(size, num_frames, 3, image_size, image_size, generator=generator)
        self.num_frames, self.moments, self.epoch = num_frames, moments, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        question, options = QUESTIONS[index % 2]
        answer = index % len(options)
        return {
            "frames": self.frames[index],
            "frame_indices": list(range(0, 4 * self.num_frames, 4)),
            "question_id": f"q{index}",
            "qa_text": None if self.moments else prompts.answerer_text(question, options),
            "loc_text": (prompts.moment_query_text(question) if self.moments
                         else prompts.localizer_text(question, options)),
            "target": None if self.moments else prompts.answer_target(answer),
            "answer": None if self.moments else answer,
            "num_options": 0 if self.moments else len(options),
            "relevant": [(index + t) % 2 == 0 for t in range(self.num_frames)] if self.moments else None,
            "repeated": False,
        }


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The kit's batch format (as `datasets.collate_video_qa`): frames stacked, every other key a list."""
    batch = {key: [item[key] for item in items] for key in items[0]}
    batch["frames"] = torch.stack(batch["frames"])  # (B, T, 3, S, S)
    return batch


def distributed_configs(out_dir: str, batch_size: int) -> list:
    """Answerer fine-tuning, then online and stored refinement of the localizer, on the same model in sequence.
    Uniform keyframes and dropout off (in the saved model) leave no randomness that differs between processes."""
    from sevila_lib.training import TrainConfig

    common = dict(init_lr=1e-3, warmup_steps=2, epochs=2, batch_size=batch_size, num_frames=6, num_keyframes=3,
                  seed=0, progress_bar=False)
    return [TrainConfig(stage="train_answerer", keyframe_source="uniform", output_dir=f"{out_dir}/answerer", **common),
            TrainConfig(stage="refine_localizer", label_policy="threshold", tau=0.2, output_dir=f"{out_dir}/online",
                        **common),
            TrainConfig(stage="refine_localizer", label_mode="stored", output_dir=f"{out_dir}/stored", **common)]


def main(argv: Sequence[str]) -> None:
    torch.set_num_threads(1)
    from sevila_lib.checkpoints import from_hf_blip2
    from sevila_lib.training import STAGE_FUNCTIONS

    model_dir, out_dir, batch_size = argv[0], argv[1], int(argv[2])
    model, _ = from_hf_blip2(model_dir)
    for config in distributed_configs(out_dir, batch_size):
        STAGE_FUNCTIONS[config.stage](model, RandomVideoQA(size=8), config, collate_fn=collate)


if __name__ == "__main__":
    main(sys.argv[1:])

"""5. Training throughput: Answerer fine-tuning and Localizer refinement through the kit's training loop.

`training.train_answerer` (keyframe_source="localizer": the frozen Localizer picks k = 4 of n = 32 frames every
step, then the Answerer trains on them) and `training.refine_localizer` (online pseudo-labels, n = 4: the frozen
Answerer labels each frame, then the Localizer trains), each for a few optimizer steps over
`datasets.VideoQADataset` in train mode (random frame choice and crop) on synthetic videos at the model's
image size. samples/s is timed between the step callbacks of the first and the last step, so start-up, the
first step's warm-up and the final checkpoint are excluded.
"""
from __future__ import annotations

import tempfile
import time

from bench_common import Context, SyntheticReader, synthetic_samples
from sevila_lib import training
from sevila_lib.datasets import VideoQADataset
from sevila_lib.model import SeViLA

SECTION = "5. training"


def _samples_per_second(model: SeViLA, stage: str, batch: int, steps: int, frames: int, **config) -> float:
    dataset = VideoQADataset(synthetic_samples(batch * steps), SyntheticReader(model.config.image_size, 32),
                             num_frames=frames, image_size=model.config.image_size, train=True)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        cfg = training.TrainConfig(stage=stage, batch_size=batch, max_steps=steps, epochs=1, num_frames=frames,
                                   warmup_steps=0, seed=0, output_dir=out, progress_bar=False, shuffle=False,
                                   **config)
        run = training.train_answerer if stage == "train_answerer" else training.refine_localizer
        run(model, dataset, cfg, step_callback=lambda step, loss: stamps.append(time.perf_counter()))
    assert len(stamps) == steps
    return batch * (steps - 1) / (stamps[-1] - stamps[0])


def run(ctx: Context, shape: str, model: SeViLA, chain_questions_per_second: float | None = None) -> None:
    steps = 3
    answerer_batch, refine_batch = (1, 2) if shape == "base" else (2, 4)
    r = ctx.results
    rate = _samples_per_second(model, "train_answerer", answerer_batch, steps, 32, keyframe_source="localizer",
                               num_keyframes=4)
    r.add(SECTION, "Answerer fine-tuning (localizer keyframes, n=32, k=4), samples/s", shape, rate, "samples/s",
          note=f"batch {answerer_batch}, steps 2–{steps} timed")
    if chain_questions_per_second:
        r.add(SECTION, "Answerer fine-tuning sample time / forward-chain question time", shape,
              chain_questions_per_second / rate, "ratio",
              note="includes the ViT on 32 frames and a backward pass; the chain starts from cached features")
    rate = _samples_per_second(model, "refine_localizer", refine_batch, steps, 4, label_mode="online")
    r.add(SECTION, "Localizer refinement (online pseudo-labels, n=4), samples/s", shape, rate, "samples/s",
          note=f"batch {refine_batch}, steps 2–{steps} timed")

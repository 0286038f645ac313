"""Shared pieces of the benchmarks: result rows, interleaved best-of timing, model shapes, synthetic inputs.

Every speed figure is a ratio of two timings taken in one process, interleaved (a, b, a, b, ...) and reduced to
the best of the rounds, because the CPU cores are shared with other work; absolute rates are orientation only.
"""
from __future__ import annotations

import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as plain scripts from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sevila_lib import mini, paths, prompts  # noqa: E402
from sevila_lib.config import preset  # noqa: E402
from sevila_lib.model import SeViLA  # noqa: E402
from sevila_lib.records import VideoQASample  # noqa: E402
from sevila_lib.tokenizer import build_world_tokenizer  # noqa: E402
from sevila_lib.video import VideoInfo  # noqa: E402
from sevila_lib.world import MomentsWorld  # noqa: E402

WORLD = MomentsWorld()


@dataclass
class Results:
    rows: list[dict] = field(default_factory=list)

    def add(self, section: str, metric: str, shape: str, value: float, unit: str, target: str = "",
            note: str = "") -> None:
        met = ""
        if target:
            op, bound = target.split()
            met = "yes" if (value >= float(bound) if op == ">=" else value <= float(bound)) else "no"
        self.rows.append(dict(section=section, metric=metric, shape=shape, value=float(value), unit=unit,
                              target=target, met=met, note=note))
        verdict = f"  target {target}: {met}" if target else ""
        print(f"  [{section}] {metric} ({shape}): {fmt(value)} {unit}{verdict}", flush=True)


def fmt(value: float) -> str:
    if value != value:
        return "n/a"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{value:.2e}"


def best_times(fns: dict, rounds: int, outputs: dict | None = None) -> dict[str, float]:
    """Best-of-`rounds` seconds of each function, interleaved so a change of load hits all of them alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            if outputs is not None:
                outputs[name] = out
    return best


def matmul_flops(size: int = 2048) -> float:
    """FLOP/s of one size×size fp32 matmul (best of 3): the reference for efficiency fractions."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    return 2 * size ** 3 / best_times({"mm": lambda: a @ b}, 3)["mm"]


def count_flops(model: SeViLA, fn) -> int:
    """FLOPs of `fn()` by torch's FlopCounterMode (matrix products, convolutions, attention incl. its CPU kernel)."""
    from torch.utils import flop_counter

    def sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # the module tracker cannot hook inference tensors
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu}
    try:
        with torch.no_grad(), flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            fn()
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    return counter.get_total_flops()


def build_model(shape: str) -> SeViLA:
    """"mini": the shipped mini BLIP-2; "tiny"/"base": the presets with random weights (base: vocabulary 32128,
    the Flan-T5 size) and the world tokenizer."""
    torch.manual_seed(0)
    if shape == "mini":
        return mini.load_mini().eval()
    tokenizer = build_world_tokenizer(WORLD.texts())
    return SeViLA(preset(shape, vocab_size=32128 if shape == "base" else len(tokenizer)), tokenizer).eval()


def describe(shape: str, model: SeViLA) -> str:
    c = model.config.blip2
    v, q, t = c.vision_config, c.qformer_config, c.text_config
    m = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    return (f"| {shape} | {v.image_size}px/{v.patch_size}, width {v.hidden_size}, {v.num_hidden_layers} layers | "
            f"width {q.hidden_size}, {q.num_hidden_layers} layers, {c.num_query_tokens} queries | d_model {t.d_model}, "
            f"{t.num_layers}+{t.num_decoder_layers} layers, vocab {t.vocab_size} | ViT {m(model.vision_encoder):.1f}, "
            f"bridges 2×{m(model.localizer):.1f}, T5 {m(model.llm):.1f} |")


def world_questions(n: int) -> list[VideoQASample]:
    samples = WORLD.qa_samples("val")
    return [samples[i % len(samples)] for i in range(n)]


def texts(n: int, prompt: str = "official") -> tuple[list[str], list[str]]:
    qs = world_questions(n)
    return [prompts.sample_qa_text(s) for s in qs], [prompts.sample_loc_text(s, prompt) for s in qs]


def random_features(model: SeViLA, questions: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Stand-in raw ViT tokens (B, T, P, Dv): the chain's speed does not depend on their values."""
    v = model.config.blip2.vision_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    return torch.randn(questions, frames, tokens, v.hidden_size, generator=torch.Generator().manual_seed(seed))


class SyntheticReader:
    """Videos made on demand from (video id, frame index): a reader over 800 videos stores nothing."""

    def __init__(self, image_size: int, num_frames: int = 32, fps: float = 4.0):
        self.image_size, self.num_frames, self.fps, self.reads = image_size, num_frames, fps, 0

    def info(self, sample: VideoQASample) -> VideoInfo:
        return VideoInfo(self.num_frames, self.fps)

    def read(self, sample: VideoQASample, indices) -> np.ndarray:
        self.reads += len(indices)
        seed = zlib.crc32(sample.video.encode())
        return np.stack([np.random.default_rng([seed, int(i)]).integers(0, 256, (self.image_size, self.image_size, 3),
                                                                          dtype=np.uint8) for i in indices])

    def cache_key(self, sample: VideoQASample) -> str:
        return f"synthetic:{sample.video}"


def synthetic_samples(n: int, tag: str = "syn") -> list[VideoQASample]:
    """n questions, each about its own synthetic video, with the world's question texts."""
    return [VideoQASample(f"{tag}-{i}", f"{tag}-video-{i:05d}", s.question, list(s.options), s.answer,
                          s.question_type, dataset="world") for i, s in enumerate(world_questions(n))]


REPORT = paths.REPORTS_DIR / "benchmarks.md"

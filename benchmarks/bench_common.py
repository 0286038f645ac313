"""Shared pieces of the benchmarks: result rows, side-by-side timing, model shapes, synthetic inputs.

Every speed figure in reports/benchmarks.md is a ratio or a fraction of two timings taken in the same process,
interleaved (a, b, a, b, ...) and reduced to the best (least disturbed) of the rounds, because the 2 CPU cores
are shared with other work. Absolute rates (questions/s, frames/s) are printed for orientation only.
"""
from __future__ import annotations

import math
import os
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as plain scripts from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sevila_lib import mini, prompts  # noqa: E402
from sevila_lib.config import preset  # noqa: E402
from sevila_lib.model import SeViLA  # noqa: E402
from sevila_lib.records import VideoQASample  # noqa: E402
from sevila_lib.tokenizer import build_world_tokenizer  # noqa: E402
from sevila_lib.video import VideoInfo  # noqa: E402
from sevila_lib.world import MomentsWorld  # noqa: E402

MATMUL_SIZE = 2048


# ---- results --------------------------------------------------------------------------------------------
@dataclass
class Row:
    section: str
    metric: str
    shape: str
    value: float
    unit: str
    target: str = ""  # e.g. ">= 1.5"; empty when the row is informative only
    met: str = ""  # "yes" / "no" / ""
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # section -> free text lines for the report

    def add(self, section: str, metric: str, shape: str, value: float, unit: str, target: str = "",
            note: str = "") -> Row:
        met = ""
        if target:
            op, bound = target.split()
            met = "yes" if {">=": value >= float(bound), "<=": value <= float(bound)}[op] else "no"
        row = Row(section, metric, shape, float(value), unit, target, met, note)
        self.rows.append(row)
        verdict = f"  target {target}: {met}" if target else ""
        print(f"  [{section}] {metric} ({shape}): {fmt(value)} {unit}{verdict}", flush=True)
        return row

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{value:.2e}"


# ---- run context ----------------------------------------------------------------------------------------
@dataclass
class Context:
    quick: bool
    threads: int
    out: Path
    results: Results = field(default_factory=Results)

    @property
    def small(self) -> str:  # the cheap shape
        return "tiny" if self.quick else "mini"

    @property
    def large(self) -> str:  # the shape the targets are judged at
        return "mini" if self.quick else "base"

    def size(self, shape: str, what: str):
        """Per-shape sizes: questions per batch and timing rounds (few at the base shape: 2 cores)."""
        table = {
            "tiny": dict(questions=4, rounds=2),
            "mini": dict(questions=4 if self.quick else 8, rounds=2 if self.quick else 3),
            "base": dict(questions=2, rounds=2),
        }
        return table[shape][what]


def choose_threads(requested: int) -> tuple[int, str]:
    """`requested` > 0: use it. 0 (auto): the cores not busy with other processes right now (at least 1),
    because OpenMP threads on a core another process is using stall at every barrier: many small ops then
    take several times longer and the timings mean little."""
    cores = os.cpu_count() or 1
    if requested > 0:
        return requested, f"{requested} (as requested; {cores} cores)"
    import psutil

    busy = psutil.cpu_percent(interval=1.0) / 100 * cores
    threads = max(1, min(cores, int(math.floor(cores - busy + 0.5))))
    return threads, (f"{threads} (auto: {busy:.1f} of {cores} cores were busy with other work at start; "
                     f"`--threads N` overrides)")


# ---- timing ---------------------------------------------------------------------------------------------
def best_times(fns: dict[str, Callable[[], object]], rounds: int, outputs: dict | None = None) -> dict[str, float]:
    """Best-of-`rounds` seconds of each function, run interleaved so a change of load hits all of them.
    `outputs`, if given, receives each function's last return value (for checks, without extra runs)."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            if outputs is not None:
                outputs[name] = out
    return best


def matmul_seconds(size: int = MATMUL_SIZE, reps: int = 3) -> float:
    """Seconds for one size×size fp32 matmul (best of `reps`, after a warm-up)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops_per_second(seconds: float, size: int = MATMUL_SIZE) -> float:
    return 2 * size ** 3 / seconds


@contextmanager
def frozen(model: torch.nn.Module):
    """No parameter requires grad inside (FlopCounterMode's module tracker cannot hook inference tensors)."""
    flags = {p: p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def count_flops(model: torch.nn.Module, fn: Callable[[], object]) -> int:
    """FLOPs of `fn()` as torch's FlopCounterMode counts them: matrix products (mm, addmm, bmm, baddbmm),
    convolutions and scaled-dot-product attention (its CPU kernel added here, torch has no formula for it);
    element-wise ops, norms and softmax are not counted."""
    from torch.utils import flop_counter

    def sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu}
    with frozen(model), torch.no_grad(), flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


# ---- model shapes ---------------------------------------------------------------------------------------
_TOKENIZER = None


def world_tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = build_world_tokenizer(MomentsWorld().texts())
    return _TOKENIZER


def build_model(shape: str, fast_init: bool = False) -> SeViLA:
    """"tiny"/"base": the presets with random weights (seed 0) and the world tokenizer (base: vocabulary 32128,
    the real Flan-T5 size; the tokenizer's ids stay below 238). "mini": the shipped mini BLIP-2 if present.
    fast_init: skip the random initialisation and fill every weight with cheap uniform noise (memory probes)."""
    torch.manual_seed(0)
    if shape == "mini":
        if (ROOT / "data/mini_blip2/model.safetensors").exists():
            return mini.load_mini(ROOT / "data/mini_blip2").eval()
        return SeViLA(mini.mini_config(len(world_tokenizer())), world_tokenizer()).eval()
    config = preset(shape, vocab_size=32128 if shape == "base" else len(world_tokenizer()))
    if not fast_init:
        return SeViLA(config, world_tokenizer()).eval()
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = SeViLA(config, world_tokenizer()).eval()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.uniform_(-0.05, 0.05)  # touch every page: RSS must hold the weights
    return model


def vision_tokens(model: SeViLA) -> int:
    vision = model.config.blip2.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


def describe(shape: str, model: SeViLA) -> dict:
    """The numbers that define a shape, for the report."""
    c = model.config.blip2
    v, q, t = c.vision_config, c.qformer_config, c.text_config
    count = lambda module: sum(p.numel() for p in module.parameters()) / 1e6  # noqa: E731
    return {
        "shape": shape,
        "weights": "trained mini BLIP-2" if shape == "mini" and (ROOT / "data/mini_blip2/model.safetensors").exists()
        else "random",
        "ViT": f"{v.image_size}px/{v.patch_size} → {vision_tokens(model)} tokens, width {v.hidden_size}, "
               f"{v.num_hidden_layers} layers",
        "Q-Former": f"width {q.hidden_size}, {q.num_hidden_layers} layers, {c.num_query_tokens} queries",
        "T5": f"d_model {t.d_model}, d_ff {t.d_ff}, {t.num_layers}+{t.num_decoder_layers} layers, "
              f"{t.num_heads} heads, vocab {t.vocab_size}",
        "params (M)": f"ViT {count(model.vision_encoder):.1f}, bridges 2×{count(model.localizer):.1f}, "
                      f"T5 {count(model.llm):.1f}",
    }


# ---- synthetic inputs -----------------------------------------------------------------------------------
_WORLD = None


def world() -> MomentsWorld:
    global _WORLD
    if _WORLD is None:
        _WORLD = MomentsWorld()
    return _WORLD


def world_questions(n: int) -> list[VideoQASample]:
    """n question records with the mini world's texts (varied lengths, 5 options), cycling if n > 200."""
    samples = world().qa_samples("val")
    return [samples[i % len(samples)] for i in range(n)]


def texts(n: int, prompt: str = "official") -> tuple[list[str], list[str]]:
    """(answerer texts, localizer texts) of n world questions."""
    qs = world_questions(n)
    return [prompts.sample_qa_text(s) for s in qs], [prompts.sample_loc_text(s, prompt) for s in qs]


def random_features(model: SeViLA, questions: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Stand-in raw ViT tokens (B, T, P, Dv): the forward chain's speed does not depend on their values."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(questions, frames, vision_tokens(model), model.config.vision_width, generator=generator)


class SyntheticReader:
    """Videos made on demand from (video id, frame index): nothing is stored, so a reader over 200 videos holds
    no more memory than one over 50. Frames are uint8 (H, W, 3) at `image_size`, `num_frames` per video."""

    def __init__(self, image_size: int, num_frames: int = 32, fps: float = 4.0):
        self.image_size, self.num_frames, self.fps = image_size, num_frames, fps
        self.reads = 0

    def info(self, sample: VideoQASample) -> VideoInfo:
        return VideoInfo(self.num_frames, self.fps)

    def read(self, sample: VideoQASample, indices) -> np.ndarray:
        self.reads += len(indices)
        seed = zlib.crc32(sample.video.encode())
        return np.stack([np.random.default_rng([seed, int(i)]).integers(0, 256, (self.image_size, self.image_size, 3),
                                                                          dtype=np.uint8) for i in indices])

    def cache_key(self, sample: VideoQASample) -> str:
        return f"synthetic:{sample.video}"


def synthetic_samples(n: int) -> list[VideoQASample]:
    """n questions, each about its own synthetic video, with the world's question texts."""
    return [VideoQASample(f"syn-{i}", f"video-{i:05d}", s.question, list(s.options), s.answer, s.question_type,
                          dataset="world") for i, s in enumerate(world_questions(n))]

"""2. Ablation sweep: k ∈ {1, 2, 4, 8} × the three localizer prompts on the same questions (paper Tables 6, 16).

  kit:        one `Evaluator` (in-memory feature cache; the Localizer's bridge run once per frame for all three
              prompts, its scores reused for every k; answers of a selection met before looked up),
              `run("localizer", num_frames=32, num_keyframes=k, prompt=p)` for the 12 settings.
  recompute:  what the official scripts do, one run per setting: read the frames, ViT-encode them, run the
              forward chain (localizer scores, top-k, answerer), nothing kept between settings. It calls the
              same kit functions, so the ratio measures reuse alone, not the read-out (section 1).
Two sets of videos, both with the trained mini BLIP-2 and mini-world question texts:
  world   the mini world's rendered 32×32 videos (`WorldFrameReader`): reading frames costs ~nothing;
  clips   the three real clips of data/sample_videos (PyAV decoding through `VideoFileReader`), 4 questions each.
Both paths make the same batches and the same per-video ViT calls, so predictions and keyframes must agree
exactly. Without the answer memo the ratio is bounded by 12·(R + L + A) / (R + B + 3·(L − B) + 12·A) (R: read +
ViT, L: localizer with its bridge B, A: answerer per question): when reading is free and the localizer's T5
dominates, by about 4.
"""
from __future__ import annotations

import time

import torch

from bench_common import ROOT, Context, world, world_questions
from sevila_lib import prompts
from sevila_lib.evaluation import Evaluator
from sevila_lib.model import SeViLA
from sevila_lib.records import VideoQASample
from sevila_lib.video import VideoFileReader, frames_to_tensor, segment_frame_indices
from sevila_lib.world import WorldFrameReader

SECTION = "2. k × prompt sweep"
KS = (1, 2, 4, 8)
FRAMES = 32
BATCH = 8
CLIPS = ("bikes", "carphone_pristine", "carphone_distorted")


def settings():
    return [(k, p) for p in prompts.LOCALIZER_PROMPTS for k in KS]


def kit_sweep(model: SeViLA, samples, reader) -> dict:
    ev = Evaluator(model, samples, reader, batch_size=BATCH, progress=False)
    names = list(prompts.LOCALIZER_PROMPTS)
    ev.frame_scores(FRAMES, names[0], also=names)  # every prompt in one pass: the bridge runs once per frame
    out = {}
    for k, prompt in settings():
        table = ev.run("localizer", num_frames=FRAMES, num_keyframes=k, prompt=prompt)
        out[(k, prompt)] = (table.prediction.tolist(), table.selected_frames.tolist())
    return out


@torch.inference_mode()
def recompute_sweep(model: SeViLA, samples, reader) -> dict:
    out = {}
    for k, prompt in settings():
        predictions, selected = [], []
        for start in range(0, len(samples), BATCH):
            batch = samples[start:start + BATCH]
            indices = []
            for s in batch:
                info = reader.info(s)
                indices.append(segment_frame_indices(info.num_frames, info.fps, FRAMES, "uniform",
                                                     start=s.start, end=s.end)[0])
            # one ViT call per video, as the Evaluator makes them (so the features are bit-identical)
            features = torch.stack([
                model.encode_frames(frames_to_tensor(reader.read(s, idx), model.config.image_size)[None])[0]
                for s, idx in zip(batch, indices)])
            chain = model.forward_chain(features, [prompts.sample_qa_text(s) for s in batch],
                                        [prompts.sample_loc_text(s, prompt) for s in batch],
                                        [len(s.options) for s in batch], k)
            predictions += chain.prediction.tolist()
            selected += [[idx[c] for c in row] for idx, row in zip(indices, chain.keyframes.tolist())]
        out[(k, prompt)] = (predictions, selected)
    return out


def clip_samples(per_clip: int) -> list[VideoQASample]:
    texts = world_questions(per_clip * len(CLIPS))
    return [VideoQASample(f"clip-{i}", CLIPS[i // per_clip], s.question, list(s.options), s.answer,
                          s.question_type, dataset="world") for i, s in enumerate(texts)]


def _measure(ctx: Context, shape: str, model: SeViLA, name: str, samples, reader, rounds: int, what: str) -> None:
    best = {"kit": float("inf"), "recompute": float("inf")}
    results = {}
    for _ in range(rounds):  # interleaved rounds, best of each
        for label, fn in (("kit", kit_sweep), ("recompute", recompute_sweep)):
            started = time.perf_counter()
            results[label] = fn(model, samples, reader)
            best[label] = min(best[label], time.perf_counter() - started)
    same = results["kit"] == results["recompute"]
    assert same, f"{name}: the Evaluator's sweep and the recomputed sweep disagree"
    ctx.results.add(SECTION, f"speed-up of the Evaluator sweep over recomputing all {len(settings())} settings, "
                             f"{name}", shape, best["recompute"] / best["kit"], "×", ">= 5",
                    note=f"{len(samples)} questions on {len({s.video for s in samples})} videos ({what}), n={FRAMES}, "
                         f"batch {BATCH}, best of {rounds}; recompute {best['recompute']:.1f} s, "
                         f"Evaluator {best['kit']:.1f} s; predictions and keyframes identical in all settings: {same}")


def run(ctx: Context, shape: str, model: SeViLA) -> None:
    rounds = 1 if ctx.quick else 2
    samples = world().qa_samples("val")[:8 if ctx.quick else 32]
    _measure(ctx, shape, model, "mini-world videos", samples, WorldFrameReader(world()), rounds,
             "rendered in memory: reading frames is nearly free")
    if (ROOT / "data/sample_videos/bikes.mp4").exists():
        _measure(ctx, shape, model, "real clips", clip_samples(2 if ctx.quick else 4),
                 VideoFileReader(ROOT / "data/sample_videos"), rounds,
                 "data/sample_videos, decoded with PyAV at every read")


def estimate(ctx: Context, shape: str, vit: float, chain: float, answer: dict[int, float], bridge: float) -> None:
    """The sweep's speed-up predicted from component times measured at `shape` (per question, seconds), with
    frames read for free: recompute = Σ over 12 settings of (ViT + chain with k); Evaluator = ViT once + the
    localizer bridge once + the localizer's T5 part once per prompt + the answerer per setting (chain's
    localizer part = chain − answer(k=4)); the answerer memo (identical selections) is not counted, so this
    is a lower bound of the Evaluator's speed-up."""
    localize = chain - answer[4]
    n_prompts = len(prompts.LOCALIZER_PROMPTS)
    answers = n_prompts * sum(answer[k] for k in KS)
    recompute = sum(vit + localize + answer[k] for k, _ in settings())
    kit = vit + bridge + n_prompts * (localize - bridge) + answers
    parts = (f"per question: ViT {vit:.3g} s, localizer {localize:.3g} s (bridge {bridge:.3g} s), answerer "
             f"k=1/2/4/8 " + "/".join(f"{answer[k]:.2g}" for k in KS) + " s; frames read for free")
    ctx.results.add(SECTION, "speed-up predicted from component timings (not a measured sweep)", shape,
                    recompute / kit, "×", note=parts)

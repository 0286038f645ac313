"""3. Throughput and efficiency: the forward chain, pseudo-labelling and the ViT, against a big matmul.

Workloads (random raw ViT features; mini-world question texts, 5 options):
  forward chain     `model.forward_chain` for B questions, n = 32 frames -> k = 4 keyframes (from features;
                    the ViT is timed separately, it runs once per frame and is cached in evaluation)
  pseudo-labelling  `model.answer_each_frame(..., readout="teacher_forced")`, the reverse chain's labels:
                    2B questions × 4 frames, every frame its own T5 sequence
  ViT               `model.encode_frames` on 32 frames
Efficiency = FLOPs (torch FlopCounterMode: matrix products and attention, see `count_flops`) / best time,
as a fraction of the FLOP/s of a 2048×2048 fp32 matmul timed in the same rounds on the same threads.
Also here: the before/after ratios of the per-question T5 batches (`bench_baseline`), same inputs.
"""
from __future__ import annotations

import torch

import bench_sweep
from bench_baseline import answer_each_frame_before, forward_chain_before, padding_fraction
from bench_common import (Context, best_times, count_flops, matmul_flops_per_second, matmul_seconds,
                          random_features, texts)
from sevila_lib.model import SeViLA

SECTION = "3. throughput and efficiency"
CHANGE = "profile and library change"
FRAMES, KEYFRAMES, LABEL_FRAMES = 32, 4, 4  # pseudo-labels: t = 4 frames per question (official nexqa_sr.sh)


@torch.inference_mode()
def run(ctx: Context, shape: str, model: SeViLA) -> dict:
    b, rounds = ctx.size(shape, "questions"), ctx.size(shape, "rounds")
    b_label = 2 * b  # pseudo-labelling: more questions of fewer frames per batch
    qa, loc = texts(max(b, b_label))
    options = [5] * len(qa)
    features = random_features(model, b, FRAMES)
    label_features = random_features(model, b_label, LABEL_FRAMES, seed=1)
    frames = torch.randn(1, FRAMES, 3, model.config.image_size, model.config.image_size)
    selected = {k: features[:, :k] for k in bench_sweep.KS}

    fns = {
        "chain": lambda: model.forward_chain(features, qa[:b], loc[:b], options[:b], KEYFRAMES),
        "chain_before": lambda: forward_chain_before(model, features, qa[:b], loc[:b], options[:b], KEYFRAMES),
        "label": lambda: model.answer_each_frame(label_features, qa[:b_label], options[:b_label]),
        "label_before": lambda: answer_each_frame_before(model, label_features, qa[:b_label], options[:b_label]),
        "vit": lambda: model.encode_frames(frames),
        "loc_bridge": lambda: model.localizer(features.flatten(0, 1)),
        **{f"answer{k}": (lambda k=k: model.answer(selected[k], qa[:b], options[:b])) for k in bench_sweep.KS},
    }
    matmul = float("inf")
    best, out = {}, {}
    for _ in range(rounds):  # the matmul reference is timed inside the same rounds
        matmul = min(matmul, matmul_seconds())
        for name, t in best_times(fns, 1, out).items():
            best[name] = min(t, best.get(name, float("inf")))
        matmul = min(matmul, matmul_seconds())
    peak = matmul_flops_per_second(matmul)
    # same outputs before and after the library change
    chain_diff = (out["chain"].frame_scores - out["chain_before"].frame_scores).abs().max().item()
    same_keyframes = torch.equal(out["chain"].keyframes, out["chain_before"].keyframes)
    label_diff = (out["label"] - out["label_before"]).abs().max().item()

    flops = {
        "chain": count_flops(model, fns["chain"]),
        "label": count_flops(model, fns["label"]),
        "vit": count_flops(model, lambda: model.encode_frames(frames[:, :1])) * FRAMES,
    }
    r = ctx.results
    where = f"best of {rounds} interleaved rounds"
    r.add(SECTION, f"matmul {2048}×{2048} fp32 (the reference)", shape, peak / 1e9, "GFLOP/s", note=where)
    r.add(SECTION, f"forward chain n={FRAMES}→k={KEYFRAMES}, questions/s", shape, b / best["chain"], "questions/s",
          note=f"batch of {b} questions, from ViT features; {where}")
    r.add(SECTION, "forward chain FLOPs per question", shape, flops["chain"] / b / 1e9, "GFLOP")
    r.add(SECTION, "forward chain achieved FLOP/s / matmul FLOP/s", shape, flops["chain"] / best["chain"] / peak,
          "fraction", ">= 0.3" if shape == ctx.large else "")
    r.add(SECTION, "end to end incl. ViT on 32 frames, questions/s (derived)", shape,
          1 / (best["chain"] / b + best["vit"]), "questions/s", note="1 / (chain time + ViT time per question)")
    r.add(SECTION, "ViT frames/s", shape, FRAMES / best["vit"], "frames/s")
    r.add(SECTION, "ViT achieved FLOP/s / matmul FLOP/s", shape, flops["vit"] / best["vit"] / peak, "fraction")
    r.add(SECTION, "pseudo-labelling (teacher-forced, each frame alone) frames/s", shape,
          b_label * LABEL_FRAMES / best["label"], "frames/s", note=f"{b_label} questions × {LABEL_FRAMES} frames")
    r.add(SECTION, "pseudo-labelling achieved FLOP/s / matmul FLOP/s", shape, flops["label"] / best["label"] / peak,
          "fraction")

    pad = padding_fraction(model, loc[:b], FRAMES)
    r.add(CHANGE, f"forward chain speed-up, per-question T5 batches (after / before), batch of {b}", shape,
          best["chain_before"] / best["chain"], "×",
          note=f"{pad:.0%} of the old localizer T5 tokens were padding; max |Δ score| {chain_diff:.2g}, "
               f"same keyframes: {same_keyframes}")
    same_calls = -(-model.T5_SEQUENCES_PER_CALL // LABEL_FRAMES) >= b_label
    r.add(CHANGE, f"pseudo-labelling speed-up (after / before), {b_label} questions × {LABEL_FRAMES} frames", shape,
          best["label_before"] / best["label"], "×", note=f"max |Δ logit| {label_diff:.2g}" + (
              f"; the same single T5 call as before (fewer than {model.T5_SEQUENCES_PER_CALL} sequences per "
              f"question), so this ratio is timing noise" if same_calls else ""))
    answers = {k: best[f"answer{k}"] / b for k in bench_sweep.KS}
    bench_sweep.estimate(ctx, shape, best["vit"], best["chain"] / b, answers, best["loc_bridge"] / b)
    return {"chain_questions_per_second": b / best["chain"], "matmul_flops": peak}

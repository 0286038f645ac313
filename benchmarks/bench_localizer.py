"""1. Localizer scoring: the kit's one decoder step vs the official `generate()` per question (spec §7).

Same inputs on both sides: B questions (mini-world texts), n = 32 frames each, the same raw ViT features.
  kit, end to end:      `model.localize(features, texts)` for the B questions (localizer bridge, T5 inputs, one
                        encoder pass and one decoder step per question's 32 frames)
  official, end to end: per question: the same bridge and T5 inputs, then `llm.generate(inputs_embeds=...,
                        max_new_tokens=30 | 2, num_beams=1, do_sample=False, min_length=1, output_scores=True,
                        return_dict_in_generate=True)`, keeping `scores[0][:, yes_id]`
  T5 read-out only:     `scoring.yes_scores(llm, embeds, mask)` vs that `generate(...)` on the same ready inputs
With random weights `generate` rarely emits </s>, so max_new_tokens=30 runs all 30 steps; the real model stops
after "yes"/"no" + </s>, which max_new_tokens=2 emulates. Both are reported. In each round every question's
inputs are built once (timed, and counted in the official end-to-end time) and fed to all three read-outs.
"""
from __future__ import annotations

import time

import torch

from bench_baseline import generate_scores
from bench_common import Context, random_features, texts
from sevila_lib import scoring
from sevila_lib.model import SeViLA

SECTION = "1. localizer scoring"
FRAMES = 32


def _clock(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@torch.inference_mode()
def run(ctx: Context, shape: str, model: SeViLA) -> None:
    questions = 1 if shape == "base" else ctx.size(shape, "questions")  # base: ~45 s per round on 1 core
    rounds = ctx.size(shape, "rounds")
    _, loc_texts = texts(questions)
    features = random_features(model, questions, FRAMES)
    best, scores, steps = {}, {}, {30: [], 2: []}
    for _ in range(rounds):
        times = dict.fromkeys(("kit", "inputs", "yes", "gen30", "gen2"), 0.0)
        scores["kit"], times["kit"] = _clock(lambda: model.localize(features, loc_texts))
        official = {30: [], 2: []}
        for i, text in enumerate(loc_texts):
            (embeds, mask), dt = _clock(lambda: model.single_frame_inputs(model.localizer(features[i])[None], [text]))
            times["inputs"] += dt
            _, dt = _clock(lambda: scoring.yes_scores(model.llm, embeds, mask, model.answer_tokens))
            times["yes"] += dt
            for budget in (30, 2):
                (s, n), dt = _clock(lambda: generate_scores(model, embeds, mask, budget))
                times[f"gen{budget}"] += dt
                official[budget].append(s)
                steps[budget].append(n)
        for budget in (30, 2):
            scores[budget] = torch.stack(official[budget])
        best = {k: min(v, best.get(k, float("inf"))) for k, v in times.items()}

    for budget in (30, 2):
        diff = (scores["kit"] - scores[budget]).abs().max().item()
        torch.testing.assert_close(scores["kit"], scores[budget], rtol=0, atol=1e-5)  # identical scores
        ctx.results.add(SECTION, f"max |kit − generate(max_new_tokens={budget})| over the yes logits", shape, diff,
                        "logit", "<= 1e-5" if shape == ctx.large else "",
                        note=f"bit-identical: {diff == 0.0}; |logit| up to {scores[budget].abs().max().item():.1f}")
    steps = {budget: sum(n) / len(n) for budget, n in steps.items()}
    where = f"{questions} question(s) × {FRAMES} frames, best of {rounds} rounds"
    target = ">= 1.5" if shape == ctx.large else ""
    for budget, label in ((30, "max_new_tokens=30 (as the official code)"),
                          (2, "max_new_tokens=2 (emulates the real model stopping after yes/no + </s>)")):
        ctx.results.add(SECTION, f"speed-up vs official generate, {label}, end to end", shape,
                        (best["inputs"] + best[f"gen{budget}"]) / best["kit"], "×", target,
                        note=f"{where}; generate ran {steps[budget]:.1f} decoder steps per call on average")
    for budget in (30, 2):
        ctx.results.add(SECTION, f"speed-up vs generate, max_new_tokens={budget}, T5 read-out only (same embeds)",
                        shape, best[f"gen{budget}"] / best["yes"], "×", note=where)
    ctx.results.add(SECTION, "share of the kit's localizer time in bridge + T5 inputs", shape,
                    best["inputs"] / best["kit"], "fraction", note="the same work on both sides")

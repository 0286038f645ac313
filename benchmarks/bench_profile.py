"""Where the forward chain's time goes, and what was (or was not) changed in the library because of it.

* Stage shares: each stage of one question's chain (n = 32 -> k = 4) timed on its own with the kit's functions,
  as a fraction of their sum.
* Operator shares: torch.profiler over one `forward_chain`, self CPU time per aten op.
* Candidate not applied: the folded first decoder step (`bench_baseline.folded_first_step_logits`) against the
  current `localize`, same inputs; its speed-up and how far its scores move.
The applied change (per-question T5 batches) is measured in `bench_throughput.py` (before/after rows).
"""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from bench_baseline import localize_folded
from bench_common import Context, best_times, random_features, texts
from sevila_lib import scoring
from sevila_lib.model import SeViLA

SECTION = "profile and library change"
FRAMES, KEYFRAMES = 32, 4


@torch.inference_mode()
def run(ctx: Context, shape: str, model: SeViLA) -> None:
    r = ctx.results
    rounds = 1 if shape == "base" else 2
    qa, loc = texts(1)
    features = random_features(model, 1, FRAMES)
    flat = features.flatten(0, 1)
    visual = model.localizer(flat)[None]
    embeds, mask = model.single_frame_inputs(visual, loc)
    hidden = scoring.encode(model.llm, embeds, mask)
    start = torch.zeros(FRAMES, 1, dtype=torch.long)
    picked = features[:, :KEYFRAMES]
    answer_visual = model.answerer(picked.flatten(0, 1))[None]
    answer_embeds, answer_mask = model.keyframe_inputs(answer_visual, qa)
    stages = {
        "localizer Q-Former (32 frames)": lambda: model.localizer(flat),
        "localizer T5 inputs": lambda: model.single_frame_inputs(visual, loc),
        "localizer T5 encoder (32 sequences)": lambda: scoring.encode(model.llm, embeds, mask),
        "localizer first decoder step": lambda: scoring._decoder_logits(model.llm, hidden, mask, start),
        "answerer Q-Former (4 frames)": lambda: model.answerer(picked.flatten(0, 1)),
        "answerer T5 inputs": lambda: model.keyframe_inputs(answer_visual, qa),
        "answerer T5 (encoder + 2 decoder passes)": lambda: scoring.option_logits(
            model.llm, answer_embeds, answer_mask, model.answer_tokens, 5),
    }
    times = best_times(stages, rounds)
    total = sum(times.values())
    for name, seconds in times.items():
        r.add(SECTION, f"share of the chain: {name}", shape, seconds / total, "fraction")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.forward_chain(features, qa, loc, 5, KEYFRAMES)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    all_self = sum(e.self_cpu_time_total for e in ops)
    top = ", ".join(f"{e.key} {e.self_cpu_time_total / all_self:.0%}" for e in ops[:8])
    r.note(SECTION, f"torch.profiler, one forward chain at the {shape} shape, self CPU time by op: {top}.")

    b = ctx.size(shape, "questions") if shape != "base" else 1
    _, loc_b = texts(b)
    features_b = random_features(model, b, FRAMES, seed=2)
    out = {}
    t = best_times({"current": lambda: model.localize(features_b, loc_b),
                    "folded": lambda: localize_folded(model, features_b, loc_b)}, 2, out)
    current = out["current"]
    diff = (current - out["folded"]).abs().max().item()
    r.add(SECTION, "candidate NOT applied: folded first decoder step, localizer speed-up", shape,
          t["current"] / t["folded"], "×",
          note=f"{b} question(s) × {FRAMES} frames, best of 2; scores move by up to {diff:.2g} "
               f"(|logit| up to {current.abs().max().item():.0f}), so they are no longer bit-identical "
               f"to generate()")

"""All speed and memory benchmarks -> reports/benchmarks.md and reports/benchmarks.csv (`make bench`).

    .venv/bin/python benchmarks/run_all.py            # full: the mini and "base" shapes (~10–15 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run: the tiny and mini shapes (< 2 min)
    options: --out DIR (default reports/), --threads N (default 0 = the cores not busy with other work)

Sections: 1. localizer scoring vs `generate()`; 2. k × prompt sweep with the Evaluator vs recomputing;
3. throughput and FLOP efficiency vs a big matmul; 4. peak memory (subprocesses); 5. training samples/s;
then a profile of the forward chain and the before/after ratios of the library change. Each figure is a ratio
or a fraction measured side by side in this process (see bench_common.py); absolute rates are for orientation.
Exit status 1 if a section failed (its error is written into the report).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

from bench_common import ROOT, Context, Row, build_model, choose_threads, describe, fmt

import torch  # noqa: E402  (after bench_common put the repository on sys.path)
import transformers  # noqa: E402

import bench_localizer  # noqa: E402
import bench_memory  # noqa: E402
import bench_profile  # noqa: E402
import bench_sweep  # noqa: E402
import bench_throughput  # noqa: E402
import bench_training  # noqa: E402

SECTIONS = {  # title -> what it measures, for the report
    bench_localizer.SECTION: "The kit's `model.localize` (one encoder pass and ONE decoder step per question's "
                             "32 frames) against the official read-out: `llm.generate(inputs_embeds=..., "
                             "max_new_tokens=30, num_beams=1, do_sample=False, min_length=1, output_scores=True, "
                             "return_dict_in_generate=True)` per question, `scores[0][:, yes_id]`. Same features "
                             "and T5 inputs; scores asserted equal (atol 1e-5). With random weights (base) `generate` "
                             "never emits </s>, so all 30 steps run (the trained mini stops after a few; the notes "
                             "give the average); `max_new_tokens=2` emulates the real model, which stops after "
                             "\"yes\"/\"no\" + </s>. \"End to end\" includes the localizer bridge and the T5 inputs "
                             "on both sides; \"read-out only\" times just the T5 call on ready inputs.",
    bench_sweep.SECTION: "k ∈ {1, 2, 4, 8} × the three paper prompts (12 settings) with the trained mini BLIP-2: "
                         "one `Evaluator` (feature cache; the localizer bridge once for all prompts, its T5 once per "
                         "prompt, scores reused for every k; answers of a selection met before looked up) "
                         "against recomputing each setting as the official scripts do (read or decode the frames, ViT, "
                         "localizer, top-k, answerer, nothing kept). Both call the same kit functions, so the ratio "
                         "is reuse alone; predictions and keyframes are asserted identical. Two sets of videos: the "
                         "mini world's (rendered in memory, so reading frames costs nothing and the ratio is bounded "
                         "by 12·(R+L+A)/(R+B+3(L−B)+12A) ≈ 4 without the answer memo when the localizer's T5 dominates) and the three real clips of "
                         "`data/sample_videos` (decoded with PyAV, as real datasets are). Rows \"predicted from "
                         "component timings\" use section 3's measured ViT / localizer / answerer times per question "
                         "(frames read for free), for shapes too slow to sweep here.",
    bench_throughput.SECTION: "Forward chain (n = 32 → k = 4, from ViT features), pseudo-labelling "
                              "(`answer_each_frame`, teacher-forced) and the ViT. Efficiency = FLOPs counted by "
                              "`torch.utils.flop_counter.FlopCounterMode` (matrix products — mm/addmm/bmm — "
                              "convolutions and attention; element-wise ops, norms and softmax are not counted) "
                              "÷ best time ÷ the FLOP/s of a 2048×2048 fp32 matmul timed in the same rounds.",
    bench_memory.SECTION: "Each figure from its own fresh subprocess. Chain: peak RSS of one `forward_chain` from "
                          "ViT features, per batch size, after a small warm-up chain and a reset of the kernel's "
                          "peak mark (`/proc/self/clear_refs`; the peak is VmHWM: a child's `ru_maxrss` still holds "
                          "its parent's RSS at fork). Streamed evaluation: peak of the `Evaluator` (no disk cache, "
                          "in-memory LRU of 8 videos) over N synthetic questions, one video each, made on demand by "
                          "the reader, after a 2-question warm-up and the same reset. Peaks include the weights.",
    bench_training.SECTION: "`training.train_answerer` (keyframe_source=\"localizer\", n = 32, k = 4) and "
                            "`training.refine_localizer` (online pseudo-labels, n = 4) for 3 optimizer steps over "
                            "`datasets.VideoQADataset` in train mode on synthetic videos; timed between the step "
                            "callbacks of steps 1 and 3 (start-up, warm-up and checkpointing excluded).",
    bench_profile.SECTION: "Stage shares of one question's chain (each stage timed alone), the operator profile, "
                           "and the library change with its before/after ratios measured in this run (the "
                           "previous code is kept in `benchmarks/bench_baseline.py`).",
}

CHANGE_TEXT = """**Applied (`sevila_lib/model.py`): one T5 call per question for single-frame sequences.**
`localize` and `answer_each_frame` used to put all B × T single-frame sequences of a batch into ONE T5 call,
every question's text padded to the longest in the batch. They now go through
`SeViLA.each_question_single_frames`: texts are still tokenised once per batch and the bridge still runs on all
frames at once, but each question's T sequences (which share its text) form their own T5 call with no padding
(the rows below give the share of padding the old call carried), and each call stays cache-sized. With fewer
than `SeViLA.T5_SEQUENCES_PER_CALL` = 32 sequences per question, consecutive questions share a call (padded
among themselves, as before): while choosing this, one call per question for 4-frame questions was slower than
the old single call at the mini shape (per-call overhead outweighs the padding saved) and only slightly faster at
the base shape, so small-T batches now keep (nearly) the old calls, and the pseudo-labelling rows below, at
T = 4, mostly measure timing noise. With n = 32 frames the localizer scores are now bit-identical to the official
per-question `generate()`; the old padded batch differed from it by float rounding (the max |Δ score| in the rows
below). Batches of one question are unchanged.

**Not applied: the folded first decoder step** (`bench_baseline.folded_first_step_logits`). At step 0 every
cross-attention layer has one query, so softmax(q·(H·Wk)ᵀ)·H·Wv can be computed as softmax((q·Wk)·Hᵀ)·H·Wv
without projecting all encoder states to keys and values (the "localizer first decoder step" share below). It is
measured in the last row; it stays out because its scores are no longer bit-identical to `generate()` (at the base
shape they move by more than 1e-5) and it re-implements T5's decoder step by hand.

**Applied after the first full run (`sevila_lib/evaluation.py`):** the localizer bridge output does not depend on
the prompt, so `Evaluator.frame_scores(n, prompt, also=[...])` runs the bridge once per frame and only the T5 part
per prompt (section 2's sweep and `notebooks/04_ablation_prompts` use it); the Evaluator also looks up the
Answerer's logits for a (question, selected frames) pair it has met before. `FeatureCache`'s memory layer, which
used to be bounded only by a count of 256 videos (≈ 4.8 GB at the base shape, ≈ 12 GB at ViT-g), is now also
bounded by bytes (1 GiB by default); the streamed-evaluation rows use an LRU of 8 videos."""


def missed_targets(ctx: Context) -> list[str]:
    """A paragraph per missed target: what limits it, with this run's numbers, and what was tried."""
    rows = ctx.results.rows

    def value(prefix: str, shape: str | None = None) -> str:
        for r in rows:
            if r.metric.startswith(prefix) and (shape is None or r.shape == shape):
                return fmt(r.value)
        return "n/a"

    out = []
    for row in rows:
        if row.met != "no":
            continue
        s = row.shape
        if row.section == bench_localizer.SECTION and "max_new_tokens=2" in row.metric:
            bridge = value("share of the chain: localizer Q", s)
            encoder = value("share of the chain: localizer T5 enc", s)
            step, fold = value("share of the chain: localizer first decoder", s), value("candidate NOT applied", s)
            split = value("forward chain speed-up, per-question", "mini")
            full = value("speed-up vs official generate, max_new_tokens=30", s)
            out.append(
                f"**Localizer scoring vs generate(max_new_tokens=2) at {s}: {fmt(row.value)}×, target 1.5×.** Both "
                "sides run the same localizer bridge and the same T5 encoder pass over each question's 32 sequences, "
                "and generate's first decoder step is the kit's only step; generate(2) adds one incremental step and "
                f"its Python loop. In the chain (profile section) the bridge takes {bridge}, the encoder {encoder} "
                f"and the first decoder step {step} of the time: a read-out that gives the same numbers cannot be "
                "1.5× faster than generate(2) here. Tried: one T5 call per question (applied; bit-identical to "
                f"generate, {split}× on the mini chain with batches of {ctx.size('mini', 'questions')}, "
                f"but it leaves the per-question work as it is); folding the first step's cross-attention ({fold}× "
                "on the localizer; not applied, its scores are no longer bit-identical). Against the official "
                f"generate(max_new_tokens=30) the kit is {full}× (section 1 gives the decoder steps it ran).")
        elif row.section == bench_sweep.SECTION and "mini-world" in row.metric:
            predicted = value("speed-up predicted from component timings", s)
            clips = value("speed-up of the Evaluator sweep over recomputing all 12 settings, real clips", s)
            base = value("speed-up predicted from component timings", "base")
            out.append(
                f"**Sweep on the mini world's videos: {fmt(row.value)}×, target 5×.** Those frames are rendered in "
                "memory, so recomputing costs no decoding, and the localizer's T5, which must run once per prompt "
                "(its text differs), dominates what is left. The Evaluator already runs the localizer bridge once "
                "for all prompts and looks up the answers of selections met before; without that memo, "
                f"12·(R+L+A)/(R+B+3(L−B)+12A) with section 3's mini component times predicts {predicted}× (the "
                "measured sweep is above that prediction, which leaves the memo out). Where frames must be decoded, as in every real dataset, the same sweep is "
                f"{clips}× (real clips row)"
                + (f"; the base shape, whose ViT costs more than its localizer, is predicted at {base}× even with "
                   "free reading" if base != "n/a" else "") + ".")
        else:
            out.append(f"**{row.section}: {row.metric} at {s}: {fmt(row.value)} {row.unit}, target {row.target}.** "
                       "See the section's rows and notes.")
    return out


def cell(text: str) -> str:
    return str(text).replace("|", "\\|")  # a markdown table cell


def write_reports(ctx: Context, meta: dict, shapes: list[dict], errors: list[str]) -> tuple[Path, Path]:
    ctx.out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = ctx.out / "benchmarks.csv", ctx.out / "benchmarks.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Row)])
        writer.writeheader()
        for row in ctx.results.rows:
            writer.writerow({**asdict(row), "value": f"{row.value:.6g}"})

    lines = ["# sevila-kit benchmarks", "",
             f"Generated by `{meta['command']}` on {meta['date']} in {meta['minutes']:.1f} min. "
             f"Machine: {meta['cores']} CPU cores shared with other work; torch threads: {meta['threads']}; "
             f"load average at start / end: {meta['load_start']} / {meta['load_end']}. "
             f"Python {meta['python']}, torch {torch.__version__}, transformers {transformers.__version__}.", "",
             "Every speed figure is a ratio or a fraction of timings taken side by side in this one process, "
             "interleaved and reduced to the best of the rounds (the least disturbed by other work); absolute "
             "rates (questions/s, frames/s, MB) are for orientation only and vary with the machine's load.", ""]
    if errors:
        lines += ["**Sections that failed:**", ""] + [f"- {e}" for e in errors] + [""]
    lines += ["## Targets", "", "| target | shape | measured | met |", "|---|---|---|---|"]
    for row in ctx.results.rows:
        if row.target:
            bound = row.target.replace(">=", "≥").replace("<=", "≤")
            lines.append(f"| {cell(row.section)}: {cell(row.metric)} {bound} | {row.shape} | {fmt(row.value)} "
                         f"{row.unit} | **{row.met}** |")
    missed = missed_targets(ctx)
    if missed:
        lines += ["", "### Missed targets: what limits them, what was tried", ""]
        lines += [paragraph + "\n" for paragraph in missed]
    lines += ["", "## Model shapes", "", "| shape | weights | ViT | Q-Former | T5 | parameters (M) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {s['shape']} | {s['weights']} | {s['ViT']} | {s['Q-Former']} | {s['T5']} | {s['params (M)']} |"
              for s in shapes]
    for section, text in SECTIONS.items():
        rows = [row for row in ctx.results.rows if row.section == section]
        lines += ["", f"## {section[0].upper() + section[1:]}", "", text, ""]
        if section == bench_profile.SECTION:
            lines += [CHANGE_TEXT, ""]
        if rows:
            lines += ["| metric | shape | value | unit | target | met | note |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {cell(r.metric)} | {r.shape} | {fmt(r.value)} | {r.unit} | {r.target} | {r.met} "
                      f"| {cell(r.note)} |" for r in rows]
        for note in ctx.results.notes.get(section, []):
            lines += ["", note]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes and sizes (smoke run, < 2 min)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the cores not busy now")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    threads, threads_note = choose_threads(args.threads)
    torch.set_num_threads(threads)
    ctx = Context(quick=args.quick, threads=threads, out=args.out)
    load_start = "{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())
    print(f"benchmarks ({'quick' if args.quick else 'full'}), torch threads {threads_note}", flush=True)

    models = {shape: build_model(shape) for shape in (ctx.small, ctx.large)}
    shapes = [describe(shape, model) for shape, model in models.items()]
    errors: list[str] = []
    chain_rate: dict[str, float] = {}

    def section(name, fn, *a):
        print(f"== {name} {' '.join(str(x) for x in a if isinstance(x, str))}", flush=True)
        try:
            return fn(*a)
        except Exception as err:  # report and go on: the other sections still say something
            traceback.print_exc()
            errors.append(f"{name} {[x for x in a if isinstance(x, str)]}: {type(err).__name__}: {err}")
            return None

    for shape, model in models.items():
        section(bench_localizer.SECTION, bench_localizer.run, ctx, shape, model)
    section(bench_sweep.SECTION, bench_sweep.run, ctx, "mini", models["mini"])
    for shape, model in models.items():
        out = section(bench_throughput.SECTION, bench_throughput.run, ctx, shape, model)
        if out:
            chain_rate[shape] = out["chain_questions_per_second"]
    section(bench_profile.SECTION, bench_profile.run, ctx, ctx.large, models[ctx.large])
    section(bench_memory.SECTION, bench_memory.run, ctx)
    # last: training changes the bridges of the model it trains
    section(bench_training.SECTION, bench_training.run, ctx, ctx.large, models[ctx.large], chain_rate.get(ctx.large))

    meta = dict(command="benchmarks/run_all.py" + (" --quick" if args.quick else ""),
                date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                minutes=(time.perf_counter() - started) / 60, cores=os.cpu_count(), threads=threads_note,
                load_start=load_start, load_end="{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg()),
                python=platform.python_version())
    md, csv_path = write_reports(ctx, meta, shapes, errors)
    print(f"wrote {md} and {csv_path} in {meta['minutes']:.1f} min", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

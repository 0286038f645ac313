"""`make bench`: speed and memory measurements -> reports/benchmarks.md and reports/benchmarks.csv.

    .venv/bin/python benchmarks/run_all.py            # the mini and "base" shapes (~10 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run: tiny and mini shapes (the test suite)

Sections: 1. Localizer read-out, kit vs the official `generate()`; 2. k × prompt sweep, Evaluator vs recomputing;
3. throughput and FLOP efficiency; 4. memory; 5. training; 6. video decoding; 7. scorer × rule grid
(`bench_grid.py`). The real-shape section (`bench_real_shapes.py`, too slow for `make bench`) is kept from the
previous report. Every speed figure is a ratio of timings taken side by side in this process (`common.py`).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from common import (REPORT, WORLD, Results, SyntheticReader, best_times, build_model, count_flops, describe, fmt,
                    matmul_flops, random_features, synthetic_samples, texts, world_questions)

import torch  # noqa: E402

from sevila_lib import paths, prompts, training  # noqa: E402
from sevila_lib.datasets import VideoQADataset  # noqa: E402
from sevila_lib.evaluation import Evaluator  # noqa: E402
from sevila_lib.records import VideoQASample  # noqa: E402
from sevila_lib.scoring import generate_yes_scores  # noqa: E402
from sevila_lib.video import (VideoFileReader, frames_to_tensor, probe_video, read_frames_pyav,  # noqa: E402
                              segment_frame_indices)
from sevila_lib.world import WorldFrameReader  # noqa: E402

FRAMES, K, KS = 32, 4, (1, 2, 4, 8)
GRID_HEADING = "## Scorer × rule grid vs one selector"  # written by bench_grid.py
REAL_HEADING = "## Real shapes on this CPU"


@torch.inference_mode()
def localizer_readout(r: Results, shape: str, model, questions: int, rounds: int) -> None:
    """1. `model.localize` (one decoder step) vs the official per-question `generate(max_new_tokens=30 | 2)`."""
    _, loc = texts(questions)
    features = random_features(model, questions, FRAMES)

    def official(budget):
        out = [generate_yes_scores(model.llm, *model.single_frame_inputs(model.localizer_tokens(features[i:i + 1]),
                                                                         [text]), model.answer_tokens, budget)
               for i, text in enumerate(loc)]
        return torch.stack([s for s, _ in out]), sum(n for _, n in out) / len(out)

    outs = {}
    best = best_times({"kit": lambda: model.localize(features, loc), 30: lambda: official(30),
                       2: lambda: official(2)}, rounds, outs)
    for budget in (30, 2):
        diff = (outs["kit"] - outs[budget][0]).abs().max().item()
        r.add("1. localizer read-out", f"max |kit − generate(max_new_tokens={budget})| yes logit", shape, diff,
              "logit", "<= 1e-5")
        r.add("1. localizer read-out", f"speed-up vs official generate(max_new_tokens={budget})", shape,
              best[budget] / best["kit"], "×", ">= 1.5" if budget == 30 and shape == "base" else "",
              note=f"{questions} question(s) × {FRAMES} frames, best of {rounds}; generate ran "
                   f"{outs[budget][1]:.1f} steps (2 emulates the real model stopping after yes/no + </s>)")


def sweep(r: Results, model, samples, reader, label: str, rounds: int) -> None:
    """2. k ∈ {1, 2, 4, 8} × the three paper prompts: one Evaluator vs recomputing every setting from frames."""
    settings = [(k, p) for p in prompts.LOCALIZER_PROMPTS for k in KS]

    def kit():
        ev = Evaluator(model, samples, reader, batch_size=8, cache_dir=None, progress=False)
        ev.frame_scores(FRAMES, settings[0][1], also=list(prompts.LOCALIZER_PROMPTS))
        return {(k, p): ev.run("localizer", FRAMES, k, prompt=p).prediction.tolist() for k, p in settings}

    @torch.inference_mode()
    def recompute():
        out = {}
        for k, p in settings:
            out[(k, p)] = []
            for start in range(0, len(samples), 8):
                batch = samples[start:start + 8]
                idx = [segment_frame_indices(reader.info(s).num_frames, reader.info(s).fps, FRAMES)[0] for s in batch]
                features = torch.stack([model.encode_frames(frames_to_tensor(reader.read(s, i),
                                                                             model.config.image_size)[None])[0]
                                        for s, i in zip(batch, idx)])
                out[(k, p)] += model.forward_chain(features, [prompts.sample_qa_text(s) for s in batch],
                                                   [prompts.sample_loc_text(s, p) for s in batch],
                                                   [len(s.options) for s in batch], k).prediction.tolist()
        return out

    outs = {}
    best = best_times({"kit": kit, "recompute": recompute}, rounds, outs)
    assert outs["kit"] == outs["recompute"], f"{label}: the Evaluator and the recomputed sweep disagree"
    r.add("2. k × prompt sweep", f"speed-up of the Evaluator over recomputing 12 settings, {label}", "mini",
          best["recompute"] / best["kit"], "×", ">= 5",
          note=f"{len(samples)} questions, n={FRAMES}, best of {rounds}; predictions identical")


@torch.inference_mode()
def throughput(r: Results, shape: str, model, questions: int, rounds: int) -> float:
    """3. Forward chain (from ViT features), pseudo-labelling (each of 4 frames alone) and the ViT."""
    qa, loc = texts(2 * questions)
    features = random_features(model, questions, FRAMES)
    labels = random_features(model, 2 * questions, 4, seed=1)
    pixels = torch.randn(1, FRAMES, 3, model.config.image_size, model.config.image_size)
    fns = {"chain": lambda: model.forward_chain(features, qa[:questions], loc[:questions], 5, K),
           "label": lambda: model.answer_each_frame(labels, qa, 5, readout="teacher_forced"),
           "vit": lambda: model.encode_frames(pixels)}
    peak = max(matmul_flops() for _ in range(rounds))
    best = best_times(fns, rounds)
    flops = {name: count_flops(model, fn) for name, fn in fns.items()}
    s = "3. throughput and efficiency"
    r.add(s, "matmul 2048² fp32 (the reference)", shape, peak / 1e9, "GFLOP/s")
    r.add(s, f"forward chain n={FRAMES}→k={K}, questions/s", shape, questions / best["chain"], "questions/s",
          note=f"batch {questions}, from ViT features")
    r.add(s, "forward chain achieved FLOP/s / matmul FLOP/s", shape, flops["chain"] / best["chain"] / peak,
          "fraction", ">= 0.3" if shape == "base" else "")
    r.add(s, "ViT frames/s", shape, FRAMES / best["vit"], "frames/s")
    r.add(s, "ViT achieved FLOP/s / matmul FLOP/s", shape, flops["vit"] / best["vit"] / peak, "fraction")
    r.add(s, "pseudo-labelling (teacher-forced, each frame alone) frames/s", shape, 8 * questions / best["label"],
          "frames/s")
    return questions / best["chain"]


def probe(kind: str, shape: str, n: int) -> dict:
    """4. One memory figure in a fresh process: peak RSS (VmHWM, reset after a warm-up) of the chain on n questions
    from features, or of the Evaluator streaming n synthetic videos with an in-memory LRU of 8 videos."""
    import gc

    def hwm() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    model = build_model(shape)
    if kind == "chain":
        qa, loc = texts(n)
        features = random_features(model, n, FRAMES)
        model.forward_chain(features[:1, :8], qa[:1], loc[:1], 5, K)
        run = lambda: model.forward_chain(features, qa, loc, 5, K)  # noqa: E731
    else:
        reader = SyntheticReader(model.config.image_size, FRAMES)
        Evaluator(model, synthetic_samples(2, "warm"), reader, cache_dir=None, progress=False).run("localizer", FRAMES)
        ev = Evaluator(model, synthetic_samples(n), reader, cache_dir=None, batch_size=8, progress=False)
        ev.cache.max_videos = 8
        run = lambda: ev.run("localizer", FRAMES, K)  # noqa: E731
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    run()
    return {"peak_mb": hwm()}


def memory(r: Results, quick: bool, large: str, small: str) -> None:
    def spawn(*args) -> dict:
        done = subprocess.run([sys.executable, __file__, "--probe", *map(str, args)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    if not quick:
        chain = {b: spawn("chain", large, b)["peak_mb"] for b in (1, 4)}
        r.add("4. memory", "forward chain peak RSS, batch 1", large, chain[1], "MB")
        r.add("4. memory", "forward chain peak RSS, batch 4 / batch 1", large, chain[4] / chain[1], "ratio")
    counts = (8, 24) if quick else (50, 800)
    stream = {n: spawn("stream", small, n)["peak_mb"] for n in counts}
    r.add("4. memory", f"streamed evaluation peak RSS, {counts[1]} / {counts[0]} questions", small,
          stream[counts[1]] / stream[counts[0]], "ratio", "<= 1.05", note=f"{stream[counts[0]]:.0f} MB at {counts[0]}")


def train_rates(r: Results, shape: str, model, chain_rate: float) -> None:
    """5. Samples/s of `training.train_answerer` (Localizer keyframes, n=32, k=4) and `training.refine_localizer`
    (online pseudo-labels, n=4) between the step callbacks of steps 1 and 3."""
    import tempfile

    for stage, frames, batch, extra in (("train_answerer", 32, 2, dict(keyframe_source="localizer", num_keyframes=4)),
                                        ("refine_localizer", 4, 4, dict(label_mode="online"))):
        data = VideoQADataset(synthetic_samples(batch * 3), SyntheticReader(model.config.image_size), num_frames=frames,
                              image_size=model.config.image_size, train=True)
        stamps: list[float] = []
        with tempfile.TemporaryDirectory() as out:
            config = training.TrainConfig(stage=stage, batch_size=batch, max_steps=3, epochs=1, num_frames=frames,
                                          warmup_steps=0, seed=0, output_dir=out, progress_bar=False, shuffle=False,
                                          **extra)
            getattr(training, stage)(model, data, config,
                                     step_callback=lambda step, loss: stamps.append(time.perf_counter()))
        rate = batch * 2 / (stamps[-1] - stamps[0])
        r.add("5. training", f"{stage} samples/s", shape, rate, "samples/s", note=f"batch {batch}, steps 2–3")
        if stage == "train_answerer":
            r.add("5. training", "answerer training sample time / forward-chain question time", shape,
                  chain_rate / rate, "ratio", note="includes the ViT on 32 frames and a backward pass")


def decoding(r: Results, rounds: int) -> None:
    """6. PyAV seeking vs decoding through, 32 frames of bikes.mp4 (whole clip, and a window over its last fifth)."""
    path = str(paths.SAMPLE_VIDEOS_DIR / "bikes.mp4")
    info = probe_video(path)
    for label, start in (("whole clip", None), ("last fifth", 0.8 * info.num_frames / info.fps)):
        idx, _ = segment_frame_indices(info.num_frames, info.fps, FRAMES, start=start,
                                       end=None if start is None else info.num_frames / info.fps)
        best = best_times({s: (lambda s=s: read_frames_pyav(path, idx, seek=s)) for s in (False, True)}, rounds)
        r.add("6. video decoding", f"PyAV seek / decode-through speed, {label}", "bikes.mp4", best[False] / best[True],
              "×", note="VideoFileReader(seek='auto') seeks only for windowed samples")


def write_reports(r: Results, out: Path, header: str, shapes: list[str], grid: str) -> Path:
    old = (out / "benchmarks.md").read_text() if (out / "benchmarks.md").exists() else ""
    real = old[old.index(REAL_HEADING):] if REAL_HEADING in old else ""
    lines = ["# sevila-kit benchmarks", "", header, "", "## Targets", "", "| target | shape | measured | met |",
             "|---|---|---|---|"]
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731  (a "|" inside a markdown cell)
    lines += [f"| {x['section']}: {escape(x['metric'])} {x['target']} | {x['shape']} | {fmt(x['value'])} {x['unit']} "
              f"| **{x['met']}** |" for x in r.rows if x["target"]]
    lines += ["", "## Model shapes", "", "| shape | ViT | Q-Former | T5 | parameters (M) |", "|---|---|---|---|---|",
              *shapes]
    for section in dict.fromkeys(x["section"] for x in r.rows):
        lines += ["", f"## {section}", "", "| metric | shape | value | unit | target | met | note |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {escape(x['metric'])} | {x['shape']} | {fmt(x['value'])} | {x['unit']} | "
                  f"{x['target']} | {x['met']} | {x['note']} |" for x in r.rows if x["section"] == section]
    lines += ["", grid.strip() or f"{GRID_HEADING}\n\n(not run)", ""]
    (out / "benchmarks.md").write_text("\n".join(lines) + ("\n" + real if real else ""))
    with open(out / "benchmarks.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(r.rows[0]))
        writer.writeheader()
        writer.writerows(r.rows)
    return out / "benchmarks.md"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=REPORT.parent)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--probe", nargs=3, metavar=("KIND", "SHAPE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(args.probe[0], args.probe[1], int(args.probe[2]))))
        return 0
    started, r = time.perf_counter(), Results()
    small, large = ("tiny", "mini") if args.quick else ("mini", "base")
    rounds = 1 if args.quick else 2
    models = {shape: build_model(shape) for shape in (small, large)}
    mini_model = models["mini"]
    for shape, model in models.items():
        localizer_readout(r, shape, model, 1 if shape == "base" else 2 if args.quick else 4, rounds)
    sweep(r, mini_model, WORLD.qa_samples("val")[:4 if args.quick else 32], WorldFrameReader(WORLD),
          "mini-world videos", rounds)
    if not args.quick:
        clips = ["bikes", "carphone_pristine", "carphone_distorted"]
        samples = [VideoQASample(f"clip-{i}", clips[i % 3], s.question, list(s.options), s.answer, dataset="world")
                   for i, s in enumerate(world_questions(12))]
        sweep(r, mini_model, samples, VideoFileReader(paths.SAMPLE_VIDEOS_DIR), "real clips (PyAV)", rounds)
    chain_rate = {shape: throughput(r, shape, model, 2 if shape == "base" else 8, rounds)
                  for shape, model in models.items()}
    memory(r, args.quick, large, small)
    decoding(r, 2 if args.quick else 5)
    train_rates(r, large, models[large], chain_rate[large])  # last: it changes the bridges it trains
    import bench_grid

    grid = f"{GRID_HEADING}\n\n(not run with --quick)" if args.quick else bench_grid.main([])
    header = (f"Generated by `benchmarks/run_all.py{' --quick' if args.quick else ''}` on "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in "
              f"{(time.perf_counter() - started) / 60:.1f} min; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads. Speed figures are ratios of interleaved "
              f"best-of timings in this process; absolute rates are orientation only.")
    path = write_reports(r, args.out, header, [describe(s, m) for s, m in models.items()], grid)
    failed = [x for x in r.rows if x["met"] == "no" and x["metric"].startswith("max |kit")]
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

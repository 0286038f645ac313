"""4. Memory: peak resident memory of the forward chain per batch size, and of streamed evaluation.

Every figure comes from its own fresh subprocess (`python benchmarks/bench_memory.py chain|stream ...`), so one
measurement's peak cannot carry over into the next.
  chain   build the model, make B questions' raw ViT features (n = 32), run a small warm-up chain (lazy
          imports and allocator pools would otherwise count), reset the kernel's peak-RSS mark
          (`/proc/self/clear_refs` = 5) and run `forward_chain` once; the peak is the kernel's high-water mark
          afterwards (VmHWM in /proc/self/status; `_peak_mb` says why not ru_maxrss). `--before` runs the
          pre-change chain (`bench_baseline.forward_chain_before`: one padded T5 call for all B × 32 sequences).
  stream  the `Evaluator` (no disk cache, in-memory LRU of 8 videos) over N synthetic questions, each about
          its own video made on demand (`SyntheticReader`: nothing stored), localizer variant n = 32 -> k = 4,
          after a 2-question warm-up run and a reset of the peak mark. Evaluating more questions must not raise
          the peak.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
from pathlib import Path

from dataclasses import replace

import torch

from bench_common import Context, build_model, random_features, synthetic_samples, texts
from sevila_lib.model import SeViLA

SECTION = "4. memory"
FRAMES = 32
LRU_VIDEOS = 8


def _peak_mb() -> float:
    """Peak RSS of this process since the last reset: /proc's VmHWM where there is one, else ru_maxrss.
    (ru_maxrss alone is no good in a child: Linux carries the parent's RSS at fork over the exec, and
    clear_refs does not reset that part; measured: every probe read the parent's ~600 MB.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2 ** 20


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def chain_worker(shape: str, batch: int, before_change: bool = False) -> dict:
    from bench_baseline import forward_chain_before

    chain = forward_chain_before if before_change else SeViLA.forward_chain
    model = build_model(shape, fast_init=True)
    qa, loc = texts(batch)
    features = random_features(model, batch, FRAMES)
    chain(model, features[:1, :8], qa[:1], loc[:1], [5], 4)  # warm-up
    gc.collect()
    before = _rss_mb()
    reset = _reset_peak()
    chain(model, features, qa, loc, [5] * batch, 4)
    return {"rss_before_mb": before, "peak_mb": _peak_mb(), "peak_reset": reset}


def stream_worker(shape: str, questions: int) -> dict:
    from bench_common import SyntheticReader
    from sevila_lib.evaluation import Evaluator

    model = build_model(shape, fast_init=shape != "mini")
    reader = SyntheticReader(model.config.image_size, FRAMES)
    warm = [replace(s, question_id=f"warm-{s.question_id}", video=f"warm-{s.video}") for s in synthetic_samples(2)]
    Evaluator(model, warm, reader, cache_dir=None, progress=False).run("localizer", num_frames=FRAMES)
    gc.collect()
    before = _rss_mb()
    reset = _reset_peak()
    ev = Evaluator(model, synthetic_samples(questions), reader, cache_dir=None, batch_size=8, progress=False)
    ev.cache.max_videos = LRU_VIDEOS
    table = ev.run("localizer", num_frames=FRAMES, num_keyframes=4)
    assert len(table) == questions
    return {"rss_before_mb": before, "peak_mb": _peak_mb(), "peak_reset": reset,
            "videos_in_memory": len(ev.cache._memory), "frames_read": reader.reads}


def _spawn(ctx: Context, *args: str) -> dict:
    cmd = [sys.executable, str(Path(__file__)), *args, "--threads", str(ctx.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx: Context) -> None:
    r = ctx.results
    shape = ctx.large
    batches = (1, 4) if ctx.quick else (1, 2, 4)
    peaks = {}
    for batch in batches:
        out = _spawn(ctx, "chain", shape, str(batch))
        peaks[batch] = out["peak_mb"]
        r.add(SECTION, f"forward chain peak RSS, batch {batch}", shape, out["peak_mb"], "MB",
              note=f"RSS before the chain (weights + features) {out['rss_before_mb']:.0f} MB, so the chain "
                   f"adds {out['peak_mb'] - out['rss_before_mb']:.0f} MB; peak mark reset: {out['peak_reset']}")
    r.add(SECTION, f"forward chain peak RSS, batch {batches[-1]} / batch {batches[0]}", shape,
          peaks[batches[-1]] / peaks[batches[0]], "ratio")
    old = _spawn(ctx, "chain", shape, str(batches[-1]), "--before")
    r.add(SECTION, f"forward chain peak RSS, batch {batches[-1]}, before the per-question T5 batches", shape,
          old["peak_mb"], "MB", note=f"the chain added {old['peak_mb'] - old['rss_before_mb']:.0f} MB "
                                     f"(now {peaks[batches[-1]] - out['rss_before_mb']:.0f} MB)")

    stream_shape = ctx.small
    counts = (10, 40, 160) if ctx.quick else (50, 200, 800)
    stream = {n: _spawn(ctx, "stream", stream_shape, str(n)) for n in counts}
    work = {n: out["peak_mb"] - out["rss_before_mb"] for n, out in stream.items()}
    for n, out in stream.items():
        r.add(SECTION, f"streamed evaluation peak RSS, {n} questions", stream_shape, out["peak_mb"], "MB",
              note=f"RSS before the run {out['rss_before_mb']:.0f} MB, so the run's working set was "
                   f"{work[n]:.1f} MB; {out['videos_in_memory']} videos in the LRU at the end (max {LRU_VIDEOS}); "
                   f"{out['frames_read']} frames read")
    first, middle, last = counts
    r.add(SECTION, f"streamed evaluation peak RSS, {last} / {first} questions", stream_shape,
          stream[last]["peak_mb"] / stream[first]["peak_mb"], "ratio", "<= 1.05",
          note=f"{last // first}× the questions; +{stream[last]['peak_mb'] - stream[first]['peak_mb']:.1f} MB "
               f"(the RSS before the run alone varies by a few MB between processes)")
    r.add(SECTION, f"streamed evaluation working set (peak − RSS before), growth per 1000 questions from {middle} "
                   f"to {last}", stream_shape, (work[last] - work[middle]) / (last - middle) * 1000, "MB",
          note=f"{work[middle]:.1f} → {work[last]:.1f} MB; what grows is the predictions table the Evaluator "
               f"returns (one row per question, a few kB), the rest is allocator noise of several MB per process")


def main() -> None:
    parser = argparse.ArgumentParser(description="memory probe (one measurement per process)")
    parser.add_argument("kind", choices=["chain", "stream"])
    parser.add_argument("shape")
    parser.add_argument("n", type=int, help="batch size (chain) or number of questions (stream)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before", action="store_true", help="chain: the code before the library change")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        out = (chain_worker(args.shape, args.n, args.before) if args.kind == "chain"
               else stream_worker(args.shape, args.n))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""`make gpu-check`: SeViLA at the paper's shapes on this machine's GPU(s), with random weights, in minutes.

    python -m sevila_lib.gpu_check                  # -> prints, and writes reports/gpu_check.md
    python -m sevila_lib.gpu_check --shape tiny     # the test suite's shapes (what a CPU-only machine runs)

Needs only torch, transformers, accelerate and safetensors (no PyAV, pandas, papermill, plotting, datasets,
downloads): the model is `SeViLA` built from the `blip2-flan-t5-xl` preset on the meta device, given random
weights on the GPU in the official precisions (ViT fp16, T5 bf16, bridges fp32; paper §4.1, official
`lavis/models/sevila_models/sevila.py`), and fed random pixels and a small offline tokenizer. It measures:

* the forward chain (32 frames → Localizer → top-4 → Answerer) and the Answerer alone on 4 uniform frames,
  per question at batch 1 and at a realistic batch, with peak GPU memory, beside the paper's Table 15
  (A6000: SeViLA 3.28 s / 7.98 GB, Answerer 1.79 s / 7.56 GB);
* the Localizer read-out: the kit's one decoder step against the official `generate(max_new_tokens=30)`;
* pseudo-labelling (the reverse chain's labels) and one optimiser step of each training stage;
* with several GPUs, one process per GPU (torch.multiprocessing): the chain on each process's share of the
  questions and one Answerer step with gradients averaged over processes (what DDP does).

Random weights make the numbers speeds and memory, never accuracy; generate() with random weights rarely stops
early, so it runs all 30 steps (the real model stops after "yes"/"no" + </s>). On a machine without CUDA it
says so and runs the tiny shapes (fp32) so the whole path is exercised (`tests/test_gpu_check.py`).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

PAPER_TABLE15 = {"SeViLA (32→4)": (3.28, 7.98), "Answerer (4)": (1.79, 7.56)}  # s per sample, GB; A6000
# NExT-QA's example question (official `sevila.py`, `SeViLA.generate`)
QUESTION = "why does the person lie down without wearing her footwear?"
OPTIONS = ["follow woman.", "cleasn environment.", "resting.", "hot indoor.", "sunbathing in beach."]
# Official per-GPU batch sizes and frame counts (run scripts): QVH pre-training 16 × 4 frames, answerer
# fine-tuning 8 × 32 frames (top-4 by the frozen Localizer), self-refinement 16 × 4 frames.
STAGES = {"pretrain_localizer": (16, 4), "train_answerer": (8, 32), "refine_localizer": (16, 4)}


@dataclass
class Check:
    """Everything the report prints; `rows[section]` are (label, values...) tuples."""

    device: str
    shape: str
    notes: list[str] = field(default_factory=list)
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, section: str, *row) -> None:
        self.rows.setdefault(section, []).append(row)
        print(f"  [{section}] " + " | ".join(_cell(v) for v in row), flush=True)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# ---- model and inputs ----------------------------------------------------------------------------------
def offline_tokenizer():
    """A small T5-style tokenizer over the kit's prompts and the check's question (no download)."""
    from .tokenizer import build_world_tokenizer

    return build_world_tokenizer([QUESTION, *OPTIONS])


def random_model(shape: str, device, precision: str = "official", tokenizer=None):
    """SeViLA at a `config.PRESETS` shape with random weights, built on the meta device (no init cost) and
    materialised on `device`. precision "official": ViT fp16 and T5 bf16; "float32"; "bfloat16": both bf16."""
    import torch

    from .config import preset
    from .model import SeViLA

    tokenizer = tokenizer or offline_tokenizer()
    dtypes = {"official": ("float16", "bfloat16"), "float32": ("float32", "float32"),
              "bfloat16": ("bfloat16", "bfloat16")}[precision]
    config = preset(shape, vocab_size=None if shape != "tiny" else len(tokenizer), vision_dtype=dtypes[0],
                    llm_dtype=dtypes[1])
    with torch.device("meta"):
        model = SeViLA(config, tokenizer)
    model.to_empty(device=device)
    model.llm.encoder.embed_tokens = model.llm.decoder.embed_tokens = model.llm.shared
    generator = torch.Generator(device=device).manual_seed(0)
    # On a CPU, drawing 4B random numbers takes minutes: weights there are tiled from one random block instead
    # (memory-bound copies; repeated values change no timing).
    on_cpu = torch.device(device).type == "cpu"
    pool = torch.randn(2 ** 22, generator=generator, device=device) * 0.02 if on_cpu else None
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:  # norm scales
                param.fill_(1.0)
            elif pool is None:
                param.normal_(0.0, 0.02, generator=generator)
            else:
                flat = param.view(-1)
                for start in range(0, flat.numel(), pool.numel()):
                    chunk = flat[start:start + pool.numel()]
                    chunk.copy_(pool[:chunk.numel()])
        for buffer in model.buffers():  # e.g. position ids, created empty on the meta device
            if buffer.dtype in (torch.int64, torch.int32) and buffer.dim() == 2:
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
    return model.eval()


def texts(n: int) -> tuple[list[str], list[str]]:
    from . import prompts

    return ([prompts.answerer_text(QUESTION, OPTIONS)] * n, [prompts.localizer_text(QUESTION, OPTIONS)] * n)


def random_frames(model, batch: int, frames: int, seed: int = 0):
    import torch

    size = model.config.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=generator)


# ---- timing and memory -----------------------------------------------------------------------------------
class Meter:
    """Wall time (synchronised on CUDA) and peak memory of a block: GPU allocator peak, or process peak RSS."""

    def __init__(self, device):
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.device = device

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak_gb = torch.cuda.max_memory_allocated(self.device) / 1e9
        else:
            self.peak_gb = peak_rss_gb()
        self.seconds = time.perf_counter() - self.start


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM)."""
    return process_memory_kib("VmHWM") / 1e6


def process_memory_kib(key: str = "VmHWM") -> int:
    """A memory line of /proc/self/status in kB (VmHWM: peak resident, VmRSS: resident now); without /proc the
    process's peak (`ru_maxrss`, kB on Linux), the best left."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---- the measurements ------------------------------------------------------------------------------------
def measure_inference(check: Check, model, batches: tuple[int, ...], num_frames: int = 32, k: int = 4,
                      repeats: int = 1) -> dict:
    """Forward chain and Answerer alone (4 uniform frames), from pixels, per question; best of `repeats`."""
    import torch

    out = {}
    for batch in batches:
        pixels = random_frames(model, batch, num_frames)
        qa, loc = texts(batch)
        uniform = torch.linspace(0, num_frames - 1, k + 2)[1:-1].round().long()  # k inner frames
        for label, run in (("SeViLA (32→4)", lambda: model.forward_chain(model.encode_frames(pixels), qa, loc, 5, k)),
                           ("Answerer (4)", lambda: model.answer(model.encode_frames(pixels[:, uniform]), qa, 5))):
            best = None
            for _ in range(repeats + 1):  # the first call warms up kernels and allocator
                with torch.inference_mode(), Meter(model.device) as meter:
                    run()
                best = meter if best is None or meter.seconds < best.seconds else best
            paper = PAPER_TABLE15[label]
            check.add("inference", label, batch, best.seconds / batch, best.peak_gb, *paper)
            out[(label, batch)] = best.seconds / batch
    return out


def measure_readout(check: Check, model, questions: int = 1, num_frames: int = 32) -> float:
    """The kit's Localizer (one decoder step per question's frames) vs the official generate(max_new_tokens=30)
    per question, on the same ViT features; returns the ratio official / kit."""
    import torch

    from .scoring import generate_yes_scores

    qa, loc = texts(questions)
    with torch.inference_mode():
        features = model.encode_frames(random_frames(model, questions, num_frames, seed=1))
        model.localize(features[:1], loc[:1])  # warm-up
        with Meter(model.device) as kit:
            kit_scores = model.localize(features, loc)
        steps = []
        with Meter(model.device) as official:
            official_scores = []
            for i, text in enumerate(loc):
                embeds, mask = model.single_frame_inputs(model.localizer_tokens(features[i:i + 1]), [text])
                scores, n = generate_yes_scores(model.llm, embeds, mask, model.answer_tokens, 30)
                official_scores.append(scores)
                steps.append(n)
    diff = (kit_scores - torch.stack(official_scores)).abs().max().item()
    ratio = official.seconds / kit.seconds
    check.add("readout", questions, num_frames, kit.seconds / questions, official.seconds / questions, ratio,
              sum(steps) / len(steps), diff)
    return ratio


def optimizer_for(model, bridge: str):
    """AdamW with the official decay rule (LAVIS `runner_base.py`): weight decay 0.05 on parameters with ndim ≥ 2."""
    import torch

    params = [p for p in model.trainable_parameters(bridge)]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.05},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=3e-5, betas=(0.9, 0.999))


def pseudo_labels(model, features, qa_texts, answers):
    """The reverse chain's labels (official `sevila.py`, reverse chain): a frame is "yes" iff the frozen Answerer,
    reading it alone with the teacher-forced letter read-out, picks the gold option.
    features (B, t, P, Dv) -> (B, t) bool"""
    import torch

    with torch.no_grad():
        logits = model.answer_each_frame(features, qa_texts, 5, readout="teacher_forced")
    return logits.argmax(-1) == answers.to(logits.device)[:, None]


def stage_loss(model, stage: str, features, qa, loc, answers, k: int = 4):
    """The loss of one training step of `stage` from raw ViT features (B, T, P, Dv)."""
    import torch

    from .chain import keyframe_loss, select_keyframes

    if stage == "pretrain_localizer":
        relevant = torch.rand(features.shape[:2], generator=torch.Generator().manual_seed(0)) < 0.3
        return model.localizer_loss(features, loc, relevant)
    if stage == "refine_localizer":
        return model.localizer_loss(features, loc, pseudo_labels(model, features, qa, answers))
    with torch.no_grad():  # the frozen Localizer picks the keyframes
        keyframes = select_keyframes(model.localize(features, loc), "top_k", k)
    return keyframe_loss(model, features, keyframes, qa, answers.tolist())  # the chain's one gather


def measure_training(check: Check, model, stages: dict[str, tuple[int, int]]) -> None:
    """One optimiser step per stage (batch × frames as the official scripts), bridge in train mode."""
    import torch

    for stage, (batch, frames) in stages.items():
        bridge = "answerer" if stage == "train_answerer" else "localizer"
        pixels = random_frames(model, batch, frames, seed=2)
        qa, loc = texts(batch)
        answers = torch.arange(batch) % 5
        optimizer = optimizer_for(model, bridge)
        model.train()
        with Meter(model.device) as meter:
            # the ViT runs inside the step, as in official training (random crops: nothing to cache)
            loss = stage_loss(model, stage, model.encode_frames(pixels), qa, loc, answers)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        del optimizer
        check.add("training", stage, f"{batch} × {frames}", meter.seconds, meter.peak_gb, loss.item())
    with torch.inference_mode(), Meter(model.device) as meter:
        batch, frames = STAGES["refine_localizer"]
        feats = model.encode_frames(random_frames(model, batch, frames, seed=3))
        labels = pseudo_labels(model, feats, texts(batch)[0], torch.arange(batch) % 5)
    check.add("training", "pseudo-labelling only", f"{batch} × {frames}", meter.seconds, meter.peak_gb,
              float(labels.float().mean()))


# ---- several GPUs: one process each ----------------------------------------------------------------------
def _worker(rank: int, world: int, shape: str, precision: str, batch: int, port: int, results) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        model = random_model(shape, device, precision)
        qa, loc = texts(batch)
        pixels = random_frames(model, batch, 32, seed=rank)
        with torch.inference_mode():
            model.forward_chain(model.encode_frames(pixels[:1]), qa[:1], loc[:1], 5, 4)  # warm-up
        dist.barrier()
        with torch.inference_mode(), Meter(device) as chain:
            model.forward_chain(model.encode_frames(pixels), qa, loc, 5, 4)
            dist.barrier()
        optimizer = optimizer_for(model, "answerer")
        model.train()
        with Meter(device) as step:
            loss = stage_loss(model, "train_answerer", model.encode_frames(pixels), qa, loc, torch.arange(batch) % 5)
            loss.backward()
            for param in model.trainable_parameters("answerer"):  # average gradients, as DDP does
                if param.grad is not None:
                    dist.all_reduce(param.grad)
                    param.grad /= world
            optimizer.step()
            dist.barrier()
        results.put((rank, chain.seconds, step.seconds, chain.peak_gb, step.peak_gb))
    finally:
        dist.destroy_process_group()


def measure_processes(check: Check, processes: int, shape: str, precision: str, batch: int) -> None:
    """The chain on `batch` questions per process and one Answerer step with averaged gradients."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(processes, shape, precision, batch, port, results), nprocs=processes,
                       join=True, start_method="spawn")
    rows = sorted(results.get() for _ in range(processes))
    chain = max(r[1] for r in rows)
    check.add("processes", processes, batch * processes, processes * batch / chain, max(r[2] for r in rows),
              max(r[3] for r in rows), max(r[4] for r in rows))


# ---- report ------------------------------------------------------------------------------------------------
def environment_lines(device) -> list[str]:
    import torch
    import transformers

    try:
        import accelerate

        accelerate_version = accelerate.__version__
    except ImportError:
        accelerate_version = "not installed"
    lines = [f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
             f"accelerate {accelerate_version}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"GPU {i}: {p.name}, {p.total_memory / 1e9:.1f} GB")
    else:
        lines.append(f"no CUDA device: CPU only ({os.cpu_count()} cores)")
    return lines


def render(check: Check, env: list[str], load_seconds: float, parameters: dict[str, int]) -> str:
    mem = "peak GPU memory (GB)" if check.device.startswith("cuda") else "peak RSS (GB)"
    out = [f"# GPU check ({check.shape})", "",
           f"Generated by `python -m sevila_lib.gpu_check` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} in "
           f"{(time.perf_counter() - check.started) / 60:.1f} min. " + "; ".join(env) + ".", "",
           *[f"**{note}**" if i == 0 and "CPU" in note else note for i, note in enumerate(check.notes)], "",
           f"Model: `{check.shape}` shapes, random weights, built on the meta device and materialised in "
           f"{load_seconds:.1f} s; parameters (M): " + ", ".join(f"{k} {v / 1e6:.4g}" for k, v in parameters.items())
           + ". Speeds and memory only: random weights say nothing about accuracy.", "",
           "## Inference beside the paper's Table 15", "",
           "From pixels (ViT included). Paper: one NVIDIA A6000, time per sample and memory.", "",
           f"| setting | batch | s / question | {mem} | paper s / sample | paper memory (GB) |",
           "|---|---|---|---|---|---|"]
    out += [f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.2f} | {r[4]} | {r[5]} |" for r in check.rows.get("inference", [])]
    out += ["", "## Localizer read-out: kit vs official", "",
            "Same ViT features and T5 inputs. Kit: `SeViLA.localize` (one encoder pass and one decoder step per "
            "question's frames). Official: per question `llm.generate(max_new_tokens=30, num_beams=1, "
            "do_sample=False, min_length=1, output_scores=True, return_dict_in_generate=True)`, "
            "`scores[0][:, yes_id]` (`scoring.generate_yes_scores`).", "",
            "| questions | frames | kit s / question | official s / question | official / kit | generate steps | "
            "max \\|Δ yes logit\\| |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | **{r[4]:.2f}×** | {r[5]:.1f} | {r[6]:.2g} |"
            for r in check.rows.get("readout", [])]
    out += ["", "## Training: one optimiser step per stage", "",
            "Official per-GPU batch × frames; the ViT runs inside the step; AdamW on the stage's bridge. The last "
            "row is the reverse chain's labelling alone (its value: the fraction of frames labelled \"yes\").", "",
            f"| stage | batch × frames | s / step | {mem} | loss |", "|---|---|---|---|---|"]
    out += [f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.2f} | {r[4]:.3g} |" for r in check.rows.get("training", [])]
    if check.rows.get("processes"):
        out += ["", "## Several processes (one per GPU)", "",
                "Each process: the chain on its own questions, then one Answerer step with gradients averaged "
                "over processes (all-reduce).", "",
                f"| processes | questions | chain questions / s (all) | step s | chain {mem} | step {mem} |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:.2f} | {r[5]:.2f} |"
                for r in check.rows["processes"]]
    return "\n".join(out) + "\n"


def run(shape: str | None = None, batch: int = 8, processes: int | None = None, out: str | Path | None = None,
        device: str | None = None, precision: str | None = None) -> Path:
    """The whole check; returns the report's path."""
    import torch

    from . import paths

    cuda = torch.cuda.is_available() and device != "cpu"
    device = device or ("cuda:0" if cuda else "cpu")
    shape = shape or ("blip2-flan-t5-xl" if cuda else "tiny")
    precision = precision or ("official" if cuda else "float32")
    check = Check(device, shape)
    if not cuda:
        check.notes.append("No CUDA GPU on this machine: this run exercises the check's path on CPU with the "
                           f"`{shape}` shapes in float32; its numbers are not comparable with the paper's.")
    check.notes.append(f"Precision: {precision}" + (" (ViT fp16, T5 bf16, bridges fp32, as the official code)"
                                                    if precision == "official" else "") + f"; device {device}.")
    env = environment_lines(device)
    print("\n".join(env), flush=True)
    start = time.perf_counter()
    model = random_model(shape, device, precision)
    if cuda:
        torch.cuda.synchronize(device)
    load_seconds = time.perf_counter() - start
    parameters = {"ViT": sum(p.numel() for p in model.vision_encoder.parameters()),
                  "bridges": sum(p.numel() for p in model.trainable_parameters("both")),
                  "T5": sum(p.numel() for p in model.llm.parameters())}
    measure_inference(check, model, tuple(sorted({1, batch})))
    measure_readout(check, model, questions=min(batch, 2))
    measure_training(check, model, STAGES if shape != "tiny" else {s: (2, f) for s, (_, f) in STAGES.items()})
    del model
    processes = processes if processes is not None else (torch.cuda.device_count() if cuda else 1)
    if processes > 1:
        if cuda:
            torch.cuda.empty_cache()
        measure_processes(check, processes, shape, precision, batch)
    text = render(check, env, load_seconds, parameters)
    path = Path(out) if out else paths.REPORTS_DIR / "gpu_check.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print("\n" + text + f"\nwritten to {path}", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevila_lib.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default=None,
                        help="a config preset (default: blip2-flan-t5-xl on CUDA, tiny on CPU)")
    parser.add_argument("--batch", type=int, default=8, help="questions per forward-chain batch (default 8)")
    parser.add_argument("--processes", type=int, default=None, help="default: one per GPU (1 on CPU)")
    parser.add_argument("--device", default=None, help="e.g. cpu to force the CPU path")
    parser.add_argument("--precision", default=None, choices=["official", "float32", "bfloat16"])
    parser.add_argument("--out", default=None, help="report path (default reports/gpu_check.md)")
    args = parser.parse_args(argv)
    import torch

    if (args.device or "").startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}, but torch {torch.__version__} sees no CUDA GPU; without --device the "
              f"check runs its CPU path", file=sys.stderr)
        return 2
    run(args.shape, args.batch, args.processes, args.out, args.device, args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SeViLA at the paper's shape (`blip2-flan-t5-xl`: ViT-g 39 layers, two BERT-base Q-Formers, Flan-T5-XL) on this
CPU, with random weights: load time, peak resident memory, seconds per question for one question × 32 frames,
the kit vs official Localizer read-out at that shape, and one optimiser step of each training stage.

    nice .venv/bin/python benchmarks/bench_real_shapes.py      # -> a section of reports/benchmarks.md

Not part of `make bench` (tens of minutes on 2 cores, about 18 GB of memory in float32). Precision: bfloat16 where
this CPU multiplies bf16 matrices at least half as fast as fp32 (it then needs half the memory), else float32.
The model is built on the meta device and given random weights in place (`gpu_check.random_model`); the
measurements are `sevila_lib.gpu_check`'s, so a GPU run of `make gpu-check` is the same work. The ViT runs once
(32 frames); the training steps reuse its features (the ViT is frozen: its time is the "ViT" row).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sevila_lib import gpu_check, paths  # noqa: E402
from sevila_lib.config import preset  # noqa: E402
from sevila_lib.chain import answer_keyframes  # noqa: E402
from sevila_lib.model import SeViLA  # noqa: E402
from sevila_lib.scoring import generate_yes_scores, select_keyframes  # noqa: E402

HEADING = "## Real shapes on this CPU"
SHAPE, FRAMES, K, VIT_FRAMES = "blip2-flan-t5-xl", 32, 4, 4


def matmul_gflops(dtype: torch.dtype, size: int = 1024) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    a @ b
    return 2 * size ** 3 / (time.perf_counter() - start) / 1e9


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def clock(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--out", default=str(paths.REPORTS_DIR / "benchmarks.md"))
    parser.add_argument("--shape", default=SHAPE, help="another preset to try the script quickly (tiny)")
    args = parser.parse_args(argv)
    shape = args.shape
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    precision = args.precision if args.precision != "auto" else ("bfloat16" if bf16 >= 0.5 * fp32 else "float32")
    tokenizer = gpu_check.offline_tokenizer()
    with torch.device("meta"):
        counts = SeViLA(preset(shape, vocab_size=len(tokenizer) if shape == "tiny" else None), tokenizer)
    parts = {"ViT": counts.vision_encoder, "bridges": counts.localizer, "T5": counts.llm}
    params = {k: sum(p.numel() for p in m.parameters()) * (2 if k == "bridges" else 1) for k, m in parts.items()}
    need = (params["ViT"] + params["T5"]) * (2 if precision == "bfloat16" else 4) + params["bridges"] * 4
    notes = [f"matmul 1024² on this CPU: fp32 {fp32:.1f} GFLOP/s, bf16 {bf16:.2f} GFLOP/s → {precision}",
             f"weights {need / 1e9:.1f} GB; memory available at start {available_gb():.1f} GB"]
    print(*notes, sep="\n", flush=True)
    if available_gb() < need / 1e9 + 3:
        raise SystemExit(f"not enough memory: the {precision} weights alone need {need / 1e9:.1f} GB")

    rows = []

    def add(name: str, seconds: float) -> None:  # each row is printed and written as soon as it is measured
        rows.append((name, seconds, gpu_check.peak_rss_gb()))
        print(f"{name}: {seconds:.1f} s, peak RSS {rows[-1][2]:.1f} GB", flush=True)
        write_section(Path(args.out), render(shape, notes, params, rows, None))

    model, load = clock(lambda: gpu_check.random_model(shape, "cpu", precision, tokenizer))
    add("load: build on meta + random weights in place", load)
    qa, loc = gpu_check.texts(1)
    pixels = gpu_check.random_frames(model, 1, FRAMES)
    with torch.inference_mode():
        # The ViT's cost is linear in frames (each frame alone): run it on VIT_FRAMES and scale, and let the
        # chain read those features repeated to 32 frames (its speed does not depend on their values).
        few, vit_few = clock(lambda: model.encode_frames(pixels[:, :VIT_FRAMES]))
        vit = vit_few * FRAMES / VIT_FRAMES
        features = few.repeat(1, FRAMES // VIT_FRAMES, 1, 1)
        add(f"ViT on {FRAMES} frames (measured on {VIT_FRAMES}, × {FRAMES // VIT_FRAMES})", vit)
        scores, kit = clock(lambda: model.localize(features, loc))
        add(f"Localizer, kit (one decoder step, {FRAMES} sequences)", kit)

        def official():
            embeds, mask = model.single_frame_inputs(model.localizer_tokens(features), loc)
            return generate_yes_scores(model.llm, embeds, mask, model.answer_tokens, 30)
        (official_scores, steps), gen = clock(official)
        add(f"Localizer, official generate(max_new_tokens=30) ({steps} steps)", gen)
        keyframes = select_keyframes(scores, K)
        _, answer = clock(lambda: answer_keyframes(model, features, keyframes, qa, 5))
        add(f"Answerer on the top-{K}", answer)
    diff = (scores[0] - official_scores).abs().max().item()
    features = features.clone()  # an ordinary tensor: inference-mode tensors cannot enter autograd
    for stage, frames in (("pretrain_localizer", 4), ("train_answerer", FRAMES), ("refine_localizer", 4)):
        bridge = "answerer" if stage == "train_answerer" else "localizer"
        optimizer = gpu_check.optimizer_for(model, bridge)
        model.train()

        def step(optimizer=optimizer):
            loss = gpu_check.stage_loss(model, stage, features[:, :frames], qa, loc, torch.tensor([2]))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _, seconds = clock(step)
        model.eval()
        del optimizer
        add(f"one optimiser step: {stage} (1 question × {frames} frames, ViT features given)", seconds)
    figures = dict(vit=vit, kit=kit, gen=gen, answer=answer, diff=diff)
    text = render(shape, notes, params, rows, figures)
    print(text, flush=True)
    write_section(Path(args.out), text)
    return text


def render(shape: str, notes: list[str], params: dict, rows: list, figures: dict | None) -> str:
    lines = [HEADING, "", f"Shape `{shape}`, random weights. Generated by `benchmarks/bench_real_shapes.py` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. " + "; ".join(notes) + ". Parameters (M): "
             + ", ".join(f"{k} {v / 1e6:.0f}" for k, v in params.items()) + ". One run, not best-of: the cores are "
             "shared, so the seconds are orientation; the ratios are taken within the run.", "",
             "| part | seconds | peak RSS so far (GB) |", "|---|---|---|",
             *[f"| {name} | {sec:.1f} | {rss:.1f} |" for name, sec, rss in rows], ""]
    if figures is None:
        return "\n".join(lines + ["(run in progress or stopped: the rows above are what was measured)", ""])
    f = figures
    chain_kit, chain_official = f["vit"] + f["kit"] + f["answer"], f["vit"] + f["gen"] + f["answer"]
    lines += ["| figure | value |", "|---|---|",
              f"| seconds per question, forward chain 32 → 4 (ViT + Localizer + Answerer) | {chain_kit:.1f} |",
              f"| seconds per question, the same with the official read-out | {chain_official:.1f} |",
              f"| Localizer read-out: official / kit | {f['gen'] / f['kit']:.2f}× |",
              f"| forward chain: official / kit | {chain_official / chain_kit:.2f}× |",
              f"| max \\|kit − official\\| yes logit | {f['diff']:.2g} |",
              f"| peak resident memory (whole run) | {gpu_check.peak_rss_gb():.1f} GB |", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of the report (or append it)."""
    old = path.read_text() if path.exists() else "# sevila-kit benchmarks\n"
    if HEADING in old:
        start = old.index(HEADING)
        rest = old.find("\n## ", start + len(HEADING))
        old = old[:start] + (old[rest + 1:] if rest >= 0 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()

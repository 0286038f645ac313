"""The mini BLIP-2: a tiny ViT + Q-Former + T5 (the same transformers classes as the real BLIP-2), pre-trained
on single frames of the moments world as an IMAGE-language model, shipped in `data/mini_blip2`.

    python -m sevila_lib.mini train     # regenerate data/mini_blip2 (about 40 minutes on one thread)
    python -m sevila_lib.mini evaluate  # image-level accuracy, written into the model card
    python -m sevila_lib.mini verify    # retrain in a temporary folder; exit 0 iff the weights are identical

What it learns (the stand-in for BLIP-2's image-text pre-training plus Flan-T5's instruction following):
* captions, frame-level multiple-choice questions in the Answerer's format, yes/no questions about a frame
  (`world.MomentsWorld.image_examples`), each frame introduced by "Frame: ". The frame-level questions include
  the temporal and causal video templates where ONE frame answers them ("what colour is the cross after the
  background turns dark?" on a dark frame showing the cross; "how does the square change when the blue circle
  touches it?" on a contact frame), as BLIP-2's VQA data covers the question types it is later asked;
  30% of the caption and QA frames hold two or more objects (most frames hold one or none);
* answerability judgements (`world.ANSWERABILITY_TEMPLATES`): an instruction asking whether the image is enough
  to answer a descriptive, temporal or causal question its video poses -> yes/no, one frame at a time. This is
  the stand-in for what Flan-T5's instruction tuning brings real BLIP-2 to zero-shot localisation: without it
  the zero-shot Localizer picked a relevant frame less often than 4 uniform frames (43.3% vs 48.7% on the then
  200 val questions). The instructions are none of the localisation prompts (tests/test_world.py checks);
* never more than ONE frame at a time, like BLIP-2 (an image model that SeViLA feeds k keyframes it was never
  trained to read together). Reading "Frame 1: … Frame k: " is what Answerer fine-tuning teaches, as in the
  paper (Table 3, rows B→E). `image_set_examples` (2–4 unrelated frames, one answering) can be mixed in
  (`PretrainConfig.set_examples`) and is always evaluated: with 12,000 of them in pre-training the zero-shot
  Answerer already read 4 keyframes (4 uniform frames: 45.5% on the world's val questions) and fine-tuning it
  lowered val accuracy in every recipe tried (2–10 epochs, lr 1e-4–5e-4, Localizer, uniform, random or
  ground-truth training frames); without them it reads 4 uniform frames at 33% and fine-tuning raises that.
It never sees a QA video, a localisation prompt or a video's frame order: zero-shot SeViLA on the world has to
find the frame that answers (the Localizer, under an instruction it has not seen) and read keyframes together
(the Answerer) from image-level knowledge alone, as SeViLA does from BLIP-2. `evaluate` writes into the card
how often the zero-shot Localizer's 4 keyframes hit a relevant frame, against 4 uniform frames.
Introduced in `notebooks/00_setup.ipynb`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import checkpoints, paths, prompts, world as world_mod
from .config import SevilaConfig, make_blip2_config
from .files import atomic_write_text
from .model import SeViLA
from .tokenizer import build_world_tokenizer
from .video import frames_to_tensor

MINI_SHAPE = dict(image_size=32, patch_size=4, vision_width=96, vision_layers=3, vision_heads=4, vision_mlp=192,
                  qformer_width=96, qformer_layers=2, qformer_heads=4, qformer_mlp=192, cross_attention_frequency=1,
                  num_query_tokens=8, t5=dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4))


@dataclass
class PretrainConfig:
    seed: int = 0
    single_examples: int = 48_000
    crowded_share: float = 0.3  # of caption and QA frames with 2+ objects (most frames hold one or none)
    set_examples: int = 0  # multi-frame "image sets": none, like BLIP-2 (see the module docstring)
    steps: int = 2_000
    batch_size: int = 32
    lr: float = 4e-4
    warmup_steps: int = 100
    weight_decay: float = 0.05
    threads: int = 1  # fixed, so the same command gives the same weights on any machine


def mini_config(vocab_size: int) -> SevilaConfig:
    shape = {**MINI_SHAPE, "t5": {**MINI_SHAPE["t5"], "vocab_size": vocab_size}}
    return SevilaConfig(make_blip2_config(**shape), name="mini")


def load_mini(directory: str | Path = paths.MINI_MODEL_DIR, device: str = "cpu") -> SeViLA:
    """The shipped mini BLIP-2 as SeViLA: both bridges start from its Q-Former (as the official code does)."""
    if not (Path(directory) / "model.safetensors").exists():
        raise FileNotFoundError(f"no mini BLIP-2 at {directory}: run `make mini-model`")
    model, _ = checkpoints.from_hf_blip2(directory, device=device)
    return model


# ---- pre-training data --------------------------------------------------------------------------------------
_SUBJECT = {"colour": re.compile(r"what colour is the (\w+)\?"), "shape": re.compile(r"which shape is (\w+)\?")}


def _compatible(kind: str, question: str, scene: world_mod.FrameScene) -> bool:
    """May `scene` sit next to the frame that answers `question` without giving another answer?"""
    if kind == "colour":
        return not scene.has(shape=_SUBJECT["colour"].match(question).group(1))
    if kind == "shape":
        return not scene.has(colour=_SUBJECT["shape"].match(question).group(1))
    if kind in ("dark", "dark_colour"):
        return scene.background == "light"
    if kind == "square_change":
        return not scene.has(shape="square")
    return scene.toucher() is None  # touch


def image_set_examples(world: world_mod.MomentsWorld, split: str, n: int, seed: int = 0):
    """(frames (k, H, W, 3), input text, target) with k in 2..4 unrelated frames, exactly one answering."""
    rng = np.random.default_rng([seed, 7])
    videos = world.video_ids("pt", split)
    frames_of = lambda vid, t: world.render(vid)[t]  # noqa: E731
    out = []
    while len(out) < n:
        kind = str(rng.choice([k for k in world_mod.FRAME_QA_KINDS if k != "count"]))
        vid, t = videos[int(rng.integers(len(videos)))], int(rng.integers(world.config.num_frames))
        made = world_mod._frame_question(world.scenes(vid)[t], kind, rng)
        if made is None:
            continue
        question, answer, pool, others = made
        options, index = world_mod._options(rng, answer, pool, others)
        k = int(rng.integers(2, 5))
        distractors = []
        while len(distractors) < k - 1:
            dv, dt = videos[int(rng.integers(len(videos)))], int(rng.integers(world.config.num_frames))
            if dv != vid and _compatible(kind, question, world.scenes(dv)[dt]):
                distractors.append(frames_of(dv, dt))
        frames = distractors
        frames.insert(int(rng.integers(k)), frames_of(vid, t))
        out.append((np.stack(frames), prompts.answerer_text(question, options), prompts.answer_target(index)))
    return out


def _batches(examples, batch_size: int, rng: np.random.Generator):
    """Shuffled batches of examples with the same number of frames (so they stack)."""
    by_k: dict[int, list] = {}
    for ex in examples:
        by_k.setdefault(len(ex[0]), []).append(ex)
    batches = []
    for group in by_k.values():
        order = rng.permutation(len(group))
        batches += [[group[i] for i in order[s:s + batch_size]] for s in range(0, len(group), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _loss(model: SeViLA, batch) -> torch.Tensor:
    frames = torch.stack([frames_to_tensor(f, model.config.image_size) for f, _, _ in batch])  # (B, k, 3, S, S)
    b, k = frames.shape[:2]
    features = model.vision_encoder(pixel_values=frames.flatten(0, 1)).last_hidden_state
    visual = model.answerer(features).unflatten(0, (b, k))
    texts, targets = [x for _, x, _ in batch], [y for _, _, y in batch]
    embeds, mask = (model.single_frame_inputs(visual, texts) if k == 1 else model.keyframe_inputs(visual, texts))
    return model._seq2seq_loss(embeds, mask, targets)


def pretrain(config: PretrainConfig = PretrainConfig(), out_dir: str | Path = paths.MINI_MODEL_DIR,
             world: world_mod.MomentsWorld | None = None, log=print) -> SeViLA:
    """Train the mini BLIP-2 from scratch (everything trains here: it is the image model, not SeViLA)."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.time()
    world = world or world_mod.MomentsWorld()
    tokenizer = build_world_tokenizer(world.texts())
    model = SeViLA(mini_config(len(tokenizer)), tokenizer)
    model.requires_grad_(True)
    examples = [(ex.frame[None], ex.input_text, ex.target_text) for ex in
                world.image_examples("train", config.single_examples, config.seed, config.crowded_share)]
    examples += image_set_examples(world, "train", config.set_examples, seed=config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
                                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / config.warmup_steps) * 0.5
                                                 * (1 + np.cos(np.pi * min(s, config.steps) / config.steps)))
    rng = np.random.default_rng(config.seed)
    step = 0
    # SeViLA.train() leaves the ViT and T5 in eval mode: their weights train here, but without dropout (with
    # T5's dropout of 0.1 the loss was still 2.4 after 250 steps, against 0.6 without: measured).
    model.train()
    while step < config.steps:
        for batch in _batches(examples, config.batch_size, rng):
            loss = _loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if step % 250 == 0 or step == config.steps:
                log(f"step {step}/{config.steps} loss {loss.item():.4f} ({time.time() - started:.0f} s)")
            if step == config.steps:
                break
    model.eval()
    model.requires_grad_(False)
    # BLIP-2 has one Q-Former (trained here as the answerer bridge); SeViLA starts both bridges from it.
    model.localizer.load_state_dict(model.answerer.state_dict())
    checkpoints.save_hf_blip2(model, out_dir, bridge="answerer")
    (Path(out_dir) / "pretrain_config.json").write_text(json.dumps(asdict(config), indent=2))
    log(f"saved to {out_dir} after {time.time() - started:.0f} s")
    return model


# ---- image-level evaluation (the model card's numbers) -----------------------------------------------------
IMAGE_TASKS = {"qa": "image multiple choice", "yes_no": "image yes/no", "answerable": "image answerability (yes/no)"}


@torch.inference_mode()
def image_accuracy(model: SeViLA, world: world_mod.MomentsWorld | None = None, n: int = 600) -> pd.DataFrame:
    """Accuracy of the image model on held-out pre-training videos (frame QA, yes/no, image sets) and on the
    val VIDEO questions read from one relevant frame alone (counting excluded: it needs the whole video)."""
    world = world or world_mod.MomentsWorld()
    rows = []
    for kind, task in IMAGE_TASKS.items():  # one kind at a time, so each gets n // 3 examples
        only = world_mod.MomentsWorld(replace(world.config, image_kinds={kind: 1.0}))
        for ex in only.image_examples("val", n // 3, seed=1):
            feats = model.encode_frames(frames_to_tensor(ex.frame[None], model.config.image_size)[None])
            if ex.target_text in (prompts.YES, prompts.NO):
                score = model.localize(feats, [ex.input_text], kind="yes_no_prob")[0, 0].item()
                rows.append((task, (score > 0.5) == (ex.target_text == prompts.YES)))
            else:
                pred = model.answer_each_frame(feats, [ex.input_text], 5)[0, 0].argmax().item()
                rows.append((task, prompts.answer_target(pred) == ex.target_text))
    for frames, text, target in image_set_examples(world, "val", n // 3, seed=1):
        feats = model.encode_frames(frames_to_tensor(frames, model.config.image_size)[None])
        pred = model.answer(feats, [text], 5).argmax().item()
        rows.append((f"image set of {len(frames)}", prompts.answer_target(pred) == target))
    rows += [(f"video question, one relevant frame ({family})", correct)
             for family, correct in _relevant_frame_answers(model, world)]
    table = pd.DataFrame(rows, columns=["task", "correct"])
    return table.groupby("task").correct.agg(accuracy="mean", examples="size").reset_index()


def _relevant_frame_answers(model: SeViLA, world: world_mod.MomentsWorld, split: str = "val"):
    """(family, correct) for each localised video question of `split`, answered from the middle one of its
    relevant frames alone (counting is left out: it needs the whole video)."""
    reader = world_mod.WorldFrameReader(world)
    for sample in world.qa_samples(split):
        if sample.question_type == "counting":
            continue
        relevant = world_mod.relevant_frames(sample, world.config.num_frames, world.config.fps)
        frame = relevant[len(relevant) // 2]
        feats = model.encode_frames(frames_to_tensor(reader.read(sample, [frame]), model.config.image_size)[None])
        pred = model.answer_each_frame(feats, [prompts.sample_qa_text(sample)], 5)[0, 0].argmax().item()
        yield sample.question_type, pred == sample.answer


@torch.inference_mode()
def relevant_frame_accuracy(model: SeViLA, world: world_mod.MomentsWorld | None = None) -> dict[str, float]:
    """The model card's target quantity: per family, the share of val video questions answered from one
    relevant frame (the target is >= 0.9 for every family)."""
    table = pd.DataFrame(_relevant_frame_answers(model, world or world_mod.MomentsWorld()),
                         columns=["family", "correct"])
    return table.groupby("family").correct.mean().to_dict()


@dataclass
class ZeroShotLocalization:
    """The zero-shot Localizer's 4 keyframes of 32 against 4 uniform frames on the world's val questions (SeViLA's
    first claim: zero-shot keyframe selection beats uniform sampling). Hit-rate: the share of questions with a
    relevant keyframe (counting left out); deltas are paired-bootstrap 95% CIs in percentage points."""

    questions: int
    localizer_hit_rate: float
    uniform_hit_rate: float
    hit_rate_delta: dict
    localizer_accuracy: float
    uniform_accuracy: float
    accuracy_delta: dict
    seconds: float  # of the Localizer run alone (features, scores, answers), on this machine


@torch.inference_mode()
def zero_shot_localization(model: SeViLA, world: world_mod.MomentsWorld | None = None,
                           split: str = "val") -> ZeroShotLocalization:
    from .evaluation import Evaluator
    from .metrics import paired_bootstrap, per_question

    world = world or world_mod.MomentsWorld()
    ev = Evaluator(model, world.qa_samples(split), world_mod.WorldFrameReader(world), progress=False)
    started = time.time()
    localizer = ev.run("localizer", 32, 4)
    seconds = time.time() - started
    uniform = ev.run("uniform", 32, 4)
    mean = lambda table, metric: 100 * float(per_question(table, metric).mean())  # noqa: E731
    return ZeroShotLocalization(len(localizer), mean(localizer, "hit_rate"), mean(uniform, "hit_rate"),
                                paired_bootstrap(localizer, uniform, "hit_rate"), mean(localizer, "accuracy"),
                                mean(uniform, "accuracy"), paired_bootstrap(localizer, uniform, "accuracy"), seconds)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file: the model card records the shipped weights' digest so a regeneration can be checked."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def retrain_and_compare(train, config, shipped_dir: Path, started: float) -> int:
    """`verify` of a shipped model (mini BLIP-2, mini CLIP): `train(config, tmp)` into a temporary folder, then
    compare the weights with the shipped ones byte for byte; prints the verdict, returns the exit status."""
    with tempfile.TemporaryDirectory() as tmp:
        train(config, tmp)
        same = file_digest(Path(tmp) / "model.safetensors") == file_digest(shipped_dir / "model.safetensors")
    print(f"retrained in {time.time() - started:.0f} s: weights {'IDENTICAL to' if same else 'DIFFER from'} "
          f"{shipped_dir / 'model.safetensors'}")
    return 0 if same else 1


def card_footer(out_dir: str | Path, module: str, config_file: str, test_file: str,
                seconds: float | None) -> list[str]:
    """The lines every shipped model's card ends with: training time, weights digest, how to check them."""
    lines = ["", f"Training took {seconds:.0f} s on this machine."] if seconds is not None else []
    return lines + ["", f"SHA-256 of `model.safetensors`: `{file_digest(Path(out_dir) / 'model.safetensors')}`. "
                    f"`python -m {module} verify` retrains with the stored `{config_file}` in a temporary folder and "
                    f"compares the weights byte for byte (training is seeded and runs on one thread; `{test_file}` "
                    "checks that two short runs give identical bytes). A CPU with other vector units may round "
                    "differently, so another machine can differ in the last bits."]


def recorded_training_seconds(out_dir: Path) -> float | None:
    """The training time an existing card records (`evaluate` rewrites the card and keeps it)."""
    card = Path(out_dir) / "README.md"
    found = re.search(r"Training took (\d+) s", card.read_text()) if card.exists() else None
    return float(found.group(1)) if found else None


def save_card(out_dir: str | Path, lines: list[str]) -> Path:
    """A shipped model's card, written atomically beside its weights."""
    return atomic_write_text(Path(out_dir) / "README.md", "\n".join(lines) + "\n")


def shipped_model_parser(module: str, doc: str, out: Path, steps: int, evaluate_help: str) -> argparse.ArgumentParser:
    """The command line of a shipped model: train | evaluate | verify, --out, --steps."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "evaluate", "verify"],
                        help=f"train: regenerate the model and its card; evaluate: {evaluate_help}; "
                             "verify: retrain in a temporary folder and compare the weights with the shipped ones")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--steps", type=int, default=steps)
    return parser


def _delta(d: dict) -> str:
    return f"{d['delta']:+.1f} points, 95% CI [{d['low']:+.1f}, {d['high']:+.1f}] over {d['questions']} questions"


def write_model_card(model: SeViLA, accuracy: pd.DataFrame, out_dir: str | Path = paths.MINI_MODEL_DIR,
                     seconds: float | None = None, localization: ZeroShotLocalization | None = None) -> Path:
    stored = Path(out_dir) / "pretrain_config.json"
    used = PretrainConfig(**json.loads(stored.read_text())) if stored.exists() else PretrainConfig()
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in
              [("vision encoder", model.vision_encoder), ("Q-Former bridge", model.answerer), ("T5", model.llm)]}
    lines = ["# Mini BLIP-2 (sevila-kit)", "",
             "A tiny image-language model with BLIP-2's architecture (transformers `Blip2VisionModel`, "
             "`Blip2QFormerModel`, `T5ForConditionalGeneration`), trained from scratch on single frames "
             f"{'and unordered image sets ' if used.set_examples else '(never several at once, like BLIP-2) '}"
             "of the kit's synthetic moments world (`sevila_lib/mini.py` says exactly what it sees). It is the "
             "embedded default that lets SeViLA run end to end on a laptop CPU. It is not a video model and "
             "knows nothing about time.", "",
             f"Regenerate: `make mini-model` (= `python -m sevila_lib.mini train`), "
             f"{used.threads} CPU thread, seed {used.seed}, {used.steps} steps of batch {used.batch_size} "
             "(`PretrainConfig`; the values used are in `pretrain_config.json`). "
             "Stored in the Hugging Face BLIP-2 layout (config.json, model.safetensors, tokenizer.json), so it "
             "loads through the same code path as `Salesforce/blip2-flan-t5-xl`.", "",
             "## Sizes", "", "| part | parameters |", "|---|---|"]
    lines += [f"| {k} | {v:,} |" for k, v in counts.items()]
    shape = {k: v for k, v in MINI_SHAPE.items() if k != "t5"}
    lines += ["", f"Shape: {shape}; T5: {MINI_SHAPE['t5']}, vocabulary {len(model.tokenizer)}.", "",
              "## Image-level accuracy (held-out videos; computed by `python -m sevila_lib.mini evaluate`)", "",
              "| task | accuracy | examples |", "|---|---|---|"]
    lines += [f"| {r.task} | {100 * r.accuracy:.1f}% | {r.examples} |" for r in accuracy.itertuples()]
    frame_level = accuracy[accuracy.task.str.startswith("video question")]
    target_met = bool(len(frame_level)) and bool((frame_level.accuracy >= 0.9).all())
    lines += ["", f"Target: at least 90% on video questions read from one relevant frame — "
              f"{'met' if target_met else 'NOT met'} by this checkpoint (see the table)."]
    if localization is not None:
        z = localization
        beats = z.hit_rate_delta["holds"]
        lines += ["", "## Zero-shot keyframe selection (the world's val QA videos; computed by `evaluate`)", "",
                  f"On {z.questions} val questions, the zero-shot Localizer (official prompt, top 4 of 32 frames, "
                  "both bridges the pre-trained Q-Former) picks at least one relevant frame for "
                  f"{z.localizer_hit_rate:.1f}% of the questions one frame answers (counting left out), 4 uniformly "
                  f"sampled frames for {z.uniform_hit_rate:.1f}%: {_delta(z.hit_rate_delta)} (paired bootstrap). "
                  f"Zero-shot selection {'BEATS' if beats else 'does NOT beat'} uniform sampling "
                  f"{'(the CI excludes 0)' if beats else '(the CI does not exclude 0 in its favour)'}. "
                  f"Answer accuracy with those keyframes: {z.localizer_accuracy:.1f}% vs {z.uniform_accuracy:.1f}%, "
                  f"{_delta(z.accuracy_delta)}. The Localizer run took {z.seconds:.0f} s on this machine."]
    lines += card_footer(out_dir, "sevila_lib.mini", "pretrain_config.json", "tests/test_mini.py", seconds)
    return save_card(out_dir, lines)


def main(argv: list[str] | None = None) -> int:
    args = shipped_model_parser("sevila_lib.mini", __doc__, paths.MINI_MODEL_DIR, PretrainConfig.steps,
                                "rewrite the card's accuracy").parse_args(argv)
    started = time.time()
    if args.command == "verify":
        shipped = json.loads((args.out / "pretrain_config.json").read_text())
        return retrain_and_compare(pretrain, PretrainConfig(**shipped), args.out, started)
    if args.command == "train":
        model = pretrain(PretrainConfig(steps=args.steps), args.out)
        seconds = time.time() - started
    else:
        model = load_mini(args.out)
        seconds = recorded_training_seconds(args.out)
    accuracy = image_accuracy(model)
    print(accuracy.to_string(index=False))
    localization = zero_shot_localization(model)
    print(localization)
    print(write_model_card(model, accuracy, args.out, seconds, localization))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

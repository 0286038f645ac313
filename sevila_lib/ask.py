"""Ask your own video: the forward chain (paper §3.1, Fig. 1) on one video file and one multiple-choice question.

    from sevila_lib import ask
    result = ask("data/sample_videos/bikes.mp4", "what is moving?", ["a bike", "a car", "a dog"])
    print(result)                      # sampled frames with their Localizer scores, keyframes, option probabilities

    python -m sevila_lib ask VIDEO --question "..." --options "a" "b" "c" [--blip2 DIR --checkpoint FILE]
                             [--frames 32 --keyframes 4] [--figure out.png] [--device cuda]

The official demo (`app.py`) does the same with the released checkpoint. Here the frames are sampled as the
official evaluation does (the midpoints of n equal segments, `video.segment_frame_indices`), the prompts are the
dataset prompts of `prompts.py` (not the demo's "Option A:{}" variant), and the Answerer reads the top-k in
temporal order. Two to five options (letters A–E).

Default model: the shipped mini BLIP-2 (`data/mini_blip2`), which was trained on a synthetic world: it shows the
mechanics, not a meaningful answer, and its tokenizer knows only that world's words, so other words fall back to
single characters or `<unk>` (counted in `AskResult.notes`, never an error). With `--blip2` (a downloaded
`Salesforce/blip2-flan-t5-xl` folder) and `--checkpoint` (the official `sevila_pretrained.pth`) it runs SeViLA
with real weights; on CUDA in the official precisions (ViT fp16, T5 bf16).
"""
from __future__ import annotations

import argparse
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import prompts

MINI = "mini"


@dataclass
class AskResult:
    """What the chain did with one question: every sampled frame's score, the keyframes, the answer."""

    video: str
    question: str
    options: list[str]
    frame_indices: list[int]  # the n sampled frames (indices into the video)
    timestamps: list[float]  # their times in seconds
    frame_scores: list[float]  # Localizer score of each sampled frame (the "yes" logit)
    keyframes: list[int]  # the k selected frames (indices into the video), temporal order
    option_probs: list[float]  # softmax over the option letters' logits
    answer: int  # index into `options`
    notes: list[str] = field(default_factory=list)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    def __str__(self) -> str:
        lines = [f"video: {self.video}", f"question: {self.question}", "",
                 "sampled frames (* = keyframe):", "  frame     time   score"]
        for index, time, score in zip(self.frame_indices, self.timestamps, self.frame_scores):
            lines.append(f"{'*' if index in self.keyframes else ' '} {index:5d} {time:7.2f}s {score:7.3f}")
        lines += ["", f"keyframes: {self.keyframes}", "options:"]
        for i, (option, prob) in enumerate(zip(self.options, self.option_probs)):
            mark = "  <- answer" if i == self.answer else ""
            lines.append(f"  {prompts.OPTION_LETTERS[i]}: {option:30s} {prob:.3f}{mark}")
        lines += [f"answer: {prompts.OPTION_LETTERS[self.answer]}: {self.answer_text}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def load_model(blip2: str = MINI, checkpoint: str | None = None, device: str = "cpu"):
    """The model `ask` uses: a BLIP-2 folder or hub id ("mini" = the shipped mini BLIP-2) plus, optionally,
    an official LAVIS-layout checkpoint. Returns (model, notes)."""
    from . import checkpoints
    from .environment import pick_device

    device = str(pick_device(device))  # a clear error, not a CUDA assertion deep in torch
    dtypes = dict(vision_dtype="float16", llm_dtype="bfloat16") if device.startswith("cuda") else {}
    model, _ = checkpoints.from_hf_blip2(blip2, device=device, **dtypes)
    notes = []
    if blip2 == MINI:
        notes.append("model: the mini BLIP-2 trained on the synthetic moments world (mechanics, not meaning); "
                     "pass --blip2 and --checkpoint for real weights")
    if checkpoint:
        report = checkpoints.load_lavis(model, checkpoint, require=("localizer.",))
        notes.append(f"loaded {checkpoint}: {report}")
    return model, notes


def unknown_words(tokenizer, text: str) -> tuple[list[str], list[str]]:
    """Words of `text` that reach the model (partly) as `<unk>`, and words spelled out letter by letter
    (no piece longer than one character: a small vocabulary such as the mini world's lacks them)."""
    unk, unknown, spelled = tokenizer.unk_token_id, [], []
    for word in dict.fromkeys(text.split()):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        pieces = [p.lstrip("▁") for p in tokenizer.convert_ids_to_tokens(ids)]
        if unk is not None and unk in ids:
            unknown.append(word)
        elif len(word) > 1 and all(len(p) <= 1 for p in pieces):
            spelled.append(word)
    return unknown, spelled


def ask(video: str | Path, question: str, options: Sequence[str], *, blip2: str = MINI,
        checkpoint: str | None = None, num_frames: int = 32, num_keyframes: int = 4, device: str = "cpu",
        figure: str | Path | None = None, model=None) -> AskResult:
    """Run the forward chain on `video` for one question; save the explorer figure to `figure` if given.

    `model` reuses an already loaded SeViLA (then `blip2`/`checkpoint` are ignored)."""
    import torch

    from .records import VideoQASample
    from .video import VIDEO_EXTENSIONS, VideoFileReader, frames_to_tensor, segment_frame_indices

    options = list(options)
    if not 2 <= len(options) <= len(prompts.OPTION_LETTERS):
        raise ValueError(f"give 2 to {len(prompts.OPTION_LETTERS)} options (letters A–E), got {len(options)}")
    if not 1 <= num_keyframes <= num_frames:
        raise ValueError(f"need 1 <= keyframes <= frames, got {num_keyframes} of {num_frames}")
    video = Path(video)
    if not video.is_file():
        raise FileNotFoundError(f"no video file at {video}")
    if video.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"{video}: not a video format the kit reads ({', '.join(VIDEO_EXTENSIONS)})")
    notes = []
    if model is None:
        model, notes = load_model(blip2, checkpoint, device)
    sample = VideoQASample("ask", video.name, question, options, answer=None)
    reader = VideoFileReader(video.parent)
    info = reader.info(sample)
    indices, repeated = segment_frame_indices(info.num_frames, info.fps, num_frames, "uniform")
    if repeated:
        notes.append(f"the video has {info.num_frames} frames: some of the {num_frames} sampled frames repeat")
    frames = reader.read(sample, indices)  # uint8 (n, H, W, 3)
    qa_text, loc_text = prompts.sample_qa_text(sample), prompts.sample_loc_text(sample)
    unknown, spelled = unknown_words(model.tokenizer, f"{question} {' '.join(options)}")
    if unknown:
        notes.append(f"{len(unknown)} word(s) contain characters the tokenizer does not know and reach the model "
                     f"as <unk>: {unknown[:10]}")
    if spelled:
        notes.append(f"{len(spelled)} word(s) are not in the tokenizer's vocabulary and reach the model letter by "
                     f"letter: {spelled[:10]}")
    with torch.inference_mode():
        features = model.encode_frames(frames_to_tensor(frames, model.config.image_size)[None])  # (1, n, P, Dv)
        out = model.forward_chain(features, [qa_text], [loc_text], num_options=len(options),
                                  num_keyframes=num_keyframes)
    result = AskResult(str(video), question, options, indices, [i / info.fps for i in indices],
                       out.frame_scores[0].tolist(), [indices[i] for i in out.keyframes[0].tolist()],
                       out.option_probs[0].tolist(), int(out.prediction[0]), notes)
    if figure is not None:
        save_figure(result, reader, sample, figure)
    return result


def save_figure(result: AskResult, reader, sample, path: str | Path, max_frames: int = 16) -> Path:
    """The keyframe explorer's figure (`explorer.plot_keyframes`, no pyplot) for an `AskResult`."""
    from .explorer import _shown_frames, plot_keyframes

    shown = _shown_frames(result.frame_indices, result.keyframes, max_frames)
    fig = plot_keyframes(reader.read(sample, shown), shown, result.frame_indices, result.frame_scores,
                         result.keyframes, result.options, result.option_probs, None,
                         title=f"{Path(result.video).name}: {result.question} -> {result.answer_text}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .video import frame_count

    parser.add_argument("video", help="a video file (mp4, avi, mkv, webm, mov)")
    parser.add_argument("--question", required=True)
    parser.add_argument("--options", nargs="+", required=True, help="2 to 5 answer options")
    parser.add_argument("--blip2", default=MINI, help="BLIP-2 folder or hub id (default: the shipped mini BLIP-2)")
    parser.add_argument("--checkpoint", default=None, help="official sevila_pretrained.pth (LAVIS layout)")
    parser.add_argument("--frames", type=frame_count, default=32, help="n: frames the Localizer scores")
    parser.add_argument("--keyframes", type=frame_count, default=4, help="k: keyframes the Answerer reads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figure", default=None, help="save the keyframe figure (png)")


def main(args: argparse.Namespace) -> int:
    try:
        result = ask(args.video, args.question, args.options, blip2=args.blip2, checkpoint=args.checkpoint,
                     num_frames=args.frames, num_keyframes=args.keyframes, device=args.device, figure=args.figure)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result)
    if args.figure:
        print(f"figure: {args.figure}")
    return 0


class _CallableModule(types.ModuleType):
    """`import sevila_lib.ask` binds the package's `ask` to this module, not to the function (Python sets a
    package's attribute to its submodule on import): calling the module still runs `ask`."""

    def __call__(self, *args, **kwargs) -> AskResult:
        return ask(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":  # python -m sevila_lib.ask VIDEO ... (the same as python -m sevila_lib ask)
    cli = argparse.ArgumentParser(prog="python -m sevila_lib.ask", description=__doc__.splitlines()[0])
    add_arguments(cli)
    sys.exit(main(cli.parse_args()))

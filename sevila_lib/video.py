"""Frames: which ones to take, how to decode them, how to write a video, and the pixel transform (official
`data_utils.load_video`).

Everything that touches video frames lives here, in four parts:

1. `segment_frame_indices` / `relevant_frame_mask` — pure functions: the official sampling rule of
   `load_video` (`lavis/datasets/data_utils.py`) and the official QVHighlights frame labelling rule (official
   `blip2_fmr.py`).
2. `FrameReader` — the protocol every frame source implements (`info`, `read`), with `VideoFileReader`
   for files on disk (PyAV by default, decord optional).
3. `write_video` — writes uint8 frames as a real mp4, so synthetic videos go through the normal read path.
4. `frames_to_tensor` — resize, optional random resized crop, CLIP normalisation, in plain torch.

Introduced in `notebooks/01_forward_chain.ipynb`. Timing of the decoding strategies: `benchmarks/run_all.py` (section 6).
"""
from __future__ import annotations

import argparse
import bisect
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F

from .records import VideoQASample

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


class VideoError(ValueError):
    """A video that cannot be used: missing, unreadable or corrupt, no frames, or a window outside it.

    The message names the file and, when known, the question that needed it.
    """

    def __init__(self, path: str | os.PathLike, reason: str, question_id: str | None = None):
        self.path, self.reason, self.question_id = str(path), reason, question_id
        who = f" (question {question_id})" if question_id else ""
        super().__init__(f"{self.path}{who}: {reason}")


# ---------------------------------------------------------------------------------------------------------
# 1. Which frames (pure functions)
# ---------------------------------------------------------------------------------------------------------

def _frame_window(num_video_frames: int, fps: float, start: float | None, end: float | None) -> tuple[int, int]:
    """The clip window in frames, `[int(start*fps), int(end*fps)]` clamped to `[0, vlen]` (official
    `data_utils.load_video`)."""
    if start is None and end is None:
        return 0, num_video_frames
    for name, value in (("start", start), ("end", end)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"window {name} is {value}, not a finite number of seconds")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"cannot place the window [{start}, {end}] s: fps is {fps}")
    if start is not None and end is not None and end < start:
        raise ValueError(f"window [{start}, {end}] s ends before it starts")
    lo = int(start * fps) if start is not None else 0
    hi = int(end * fps) if end is not None else num_video_frames
    if lo >= num_video_frames or hi < 0:
        raise ValueError(f"window [{start}, {end}] s = frames [{lo}, {hi}] lies outside the video "
                         f"(frames [0, {num_video_frames}) at {fps:g} fps)")
    return max(lo, 0), min(hi, num_video_frames)


def segment_frame_indices(num_video_frames: int, fps: float, num_samples: int, mode: str = "uniform",
                          rng: np.random.Generator | None = None, start: float | None = None,
                          end: float | None = None) -> tuple[list[int], bool]:
    """Pick `num_samples` frame indices the way the official `load_video` does (`lavis/datasets/data_utils.py`).

    The window `[int(start*fps), int(end*fps)]` (whole video if both are None), clamped to the video, is cut
    into `num_samples` segments at `np.linspace(lo, hi, n+1).astype(int)`. "uniform" (eval) takes each
    segment's midpoint `(a+b)//2`; "random" (train) draws from `[a, b)` with `rng`, or takes `a` if empty.

    Unlike the official code, which clips n to the frame count and then fails its length assertion, this
    always returns exactly `num_samples` sorted indices: a window with fewer frames than n gives repeated
    indices, spread evenly by the same formula, and `repeated=True` so the caller can record it.
    Raises ValueError (naming the window and the video length) for zero frames or a window outside the
    video; callers add the path and question id.
    """
    if num_video_frames <= 0:
        raise ValueError(f"the video has {num_video_frames} frames")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if mode not in ("uniform", "random"):
        raise ValueError(f"mode must be 'uniform' or 'random', got {mode!r}")
    lo, hi = _frame_window(num_video_frames, fps, start, end)
    bounds = np.linspace(lo, hi, num_samples + 1).astype(int)
    if mode == "uniform":
        picked = (bounds[:-1] + bounds[1:]) // 2
    else:
        if rng is None:
            raise ValueError("mode='random' needs a numpy.random.Generator (rng)")
        picked = [rng.integers(a, b) if b > a else a for a, b in zip(bounds[:-1], bounds[1:])]
    # Empty segments at the very end of the video sit at index vlen, one past the last frame.
    indices = [min(int(i), num_video_frames - 1) for i in picked]
    return indices, len(set(indices)) < num_samples


def frame_count(text: str) -> int:
    """The argparse type of n and k (frames sampled, keyframes kept): a positive whole number, refused at the
    command line instead of failing on every question later."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of frames") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a number of frames must be positive, got {value}")
    return value


def window_overhang(num_video_frames: int, fps: float, start: float | None, end: float | None) -> str | None:
    """What `segment_frame_indices` clamps away from a window that overlaps the video: None if the window lies
    inside it, else a sentence ("starts 1.5 s before the video", "ends 0.52 s after the video's end (60.06 s)").
    The official `load_video` (`lavis/datasets/data_utils.py`) clamps silently; the kit clamps too and
    `datasets.check` reports it."""
    parts = []
    if start is not None and math.isfinite(start) and int(start * fps) < 0:
        parts.append(f"starts {-start:g} s before the video")
    if end is not None and math.isfinite(end) and int(end * fps) > num_video_frames:
        parts.append(f"ends {end - num_video_frames / fps:.2f} s after the video's end "
                     f"({num_video_frames / fps:.2f} s, {num_video_frames} frames at {fps:g} fps)")
    return "; ".join(parts) or None


def relevant_frame_mask(frame_indices: Sequence[int], fps: float,
                        moments: Sequence[Sequence[float]]) -> list[bool]:
    """Frame i is relevant if i / fps lies in any moment [s, e], ends included (the QVHighlights rule of the official
    `blip2_fmr.py`)."""
    return [any(s <= i / fps <= e for s, e in moments) for i in frame_indices]


# ---------------------------------------------------------------------------------------------------------
# 2. Reading frames
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    """What sampling needs to know about a video: its frame count and average frame rate."""

    num_frames: int
    fps: float


class FrameReader(Protocol):
    """Anything that gives frames for a sample: video files here, rendered frames in the mini world."""

    def info(self, sample: VideoQASample) -> VideoInfo: ...

    def read(self, sample: VideoQASample, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices`, in that order (repeats allowed): uint8 array (len(indices), H, W, 3)."""
        ...


def _open(path: str, question_id: str | None) -> tuple[av.container.InputContainer, av.VideoStream]:
    if not os.path.isfile(path):
        raise VideoError(path, "video file not found", question_id)
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as err:
        raise VideoError(path, f"unreadable or corrupt video ({err})", question_id) from err
    if not container.streams.video:
        container.close()
        raise VideoError(path, "the file has no video stream", question_id)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: about 1.5-2x faster decoding on CPU
    return container, stream


def probe_video(path: str, question_id: str | None = None) -> VideoInfo:
    """Frame count and average fps with PyAV. Containers that store no frame count (stream.frames == 0,
    e.g. Matroska) are counted by decoding, so the count always matches what `read` can deliver."""
    container, stream = _open(path, question_id)
    with container:
        rate = stream.average_rate or stream.guessed_rate
        num_frames = stream.frames
        if num_frames <= 0:
            try:
                num_frames = sum(1 for _ in container.decode(stream))
            except av.FFmpegError as err:
                raise VideoError(path, f"corrupt video, decoding failed ({err})", question_id) from err
    if num_frames <= 0:
        raise VideoError(path, "the video has zero frames", question_id)
    if not rate:
        raise VideoError(path, "the video stream has no frame rate", question_id)
    return VideoInfo(num_frames=int(num_frames), fps=float(rate))


@dataclass(frozen=True)
class _PacketIndex:
    """Presentation timestamps of every frame (sorted) and of every keyframe, from one demux pass."""

    frame_pts: list[int]
    keyframe_pts: list[int]

    def keyframe_between(self, after: int, upto: int) -> bool:
        """Is there a keyframe with after < pts <= upto (so seeking would skip decoding)?"""
        i = bisect.bisect_right(self.keyframe_pts, after)
        return i < len(self.keyframe_pts) and self.keyframe_pts[i] <= upto


def _packet_index(container: av.container.InputContainer, stream: av.VideoStream) -> _PacketIndex | None:
    """Index packets without decoding; None if timestamps are missing (then seeking cannot be exact)."""
    frame_pts, keyframe_pts = [], []
    for packet in container.demux(stream):
        if packet.size == 0:  # the flush packet at the end
            continue
        if packet.pts is None:
            return None
        frame_pts.append(packet.pts)
        if packet.is_keyframe:
            keyframe_pts.append(packet.pts)
    container.seek(0, stream=stream)
    return _PacketIndex(sorted(frame_pts), sorted(keyframe_pts))


def _decode_through(container, stream, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode from the start, keep the wanted frames, stop after the last one."""
    wanted_set, last, out = set(wanted), wanted[-1], {}
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted_set:
            out[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    return out


def _decode_seeking(container, stream, wanted: list[int], index: _PacketIndex) -> dict[int, np.ndarray] | None:
    """Like `_decode_through`, but jump to the keyframe before a wanted frame whenever that skips a
    keyframe, i.e. whenever it saves decoding. Returns None if a timestamp does not match (e.g. an open-GOP
    seek landed late); the caller then decodes through, so results never depend on the strategy."""
    out: dict[int, np.ndarray] = {}
    frames, last_pts = None, None
    for i in wanted:
        target = index.frame_pts[i]
        if frames is None or last_pts is None or last_pts >= target or index.keyframe_between(last_pts, target):
            container.seek(target, stream=stream, backward=True)
            frames = container.decode(stream)
        for frame in frames:
            last_pts = frame.pts
            if frame.pts is None or frame.pts > target:
                return None
            if frame.pts == target:
                out[i] = frame.to_ndarray(format="rgb24")
                break
        else:
            return None
    return out


def read_frames_pyav(path: str, indices: Sequence[int], seek: bool = False,
                     question_id: str | None = None) -> np.ndarray:
    """Decode the frames at `indices` (presentation order, 0-based) with PyAV: uint8 (len(indices), H, W, 3).

    `seek=False` decodes from the start and stops after the last needed frame. `seek=True` additionally
    jumps over keyframe intervals that hold no needed frame (see `_decode_seeking`).
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        raise ValueError("no frame indices to read")
    if wanted[0] < 0:
        raise ValueError(f"negative frame index {wanted[0]}")
    container, stream = _open(path, question_id)
    with container:
        try:
            out = None
            if seek:
                index = _packet_index(container, stream)
                if index is not None and wanted[-1] < len(index.frame_pts):
                    out = _decode_seeking(container, stream, wanted, index)
                    if out is None:
                        container.seek(0, stream=stream)
            if out is None:
                out = _decode_through(container, stream, wanted)
        except av.FFmpegError as err:
            raise VideoError(path, f"corrupt video, decoding failed ({err})", question_id) from err
    missing = [i for i in wanted if i not in out]
    if missing:
        raise VideoError(path, f"decoding ended before frame {missing[0]} (decoded {len(out)} of the "
                               f"{len(wanted)} needed frames); the file is truncated or its frame count is wrong",
                         question_id)
    return np.stack([out[int(i)] for i in indices])


def _decord():
    try:
        import decord  # optional, and imported lazily: it is the official decoder but not needed here
    except ImportError as err:
        raise ImportError("backend='decord' needs `pip install decord`") from err
    return decord


def _decord_video(path: str, question_id: str | None):
    if not os.path.isfile(path):
        raise VideoError(path, "video file not found", question_id)
    try:
        return _decord().VideoReader(path, num_threads=0)
    except Exception as err:  # decord raises its own DECORDError (a RuntimeError) for bad files
        raise VideoError(path, f"unreadable or corrupt video ({err})", question_id) from err


def probe_video_decord(path: str, question_id: str | None = None) -> VideoInfo:
    """Frame count and average fps as the official code sees them (`len(vr)`, `vr.get_avg_fps()`)."""
    video = _decord_video(path, question_id)
    if len(video) == 0:
        raise VideoError(path, "the video has zero frames", question_id)
    return VideoInfo(num_frames=len(video), fps=float(video.get_avg_fps()))


def read_frames_decord(path: str, indices: Sequence[int], question_id: str | None = None) -> np.ndarray:
    """Frames at `indices` with decord at full resolution: uint8 (len(indices), H, W, 3)."""
    video = _decord_video(path, question_id)
    try:
        return video.get_batch([int(i) for i in indices]).asnumpy()
    except Exception as err:
        raise VideoError(path, f"corrupt video, decoding failed ({err})", question_id) from err


class VideoFileReader:
    """Frames from video files at `os.path.join(video_root, sample.video + extension)` (official `Data Preprocess.ipynb`).

    `sample.video` may already carry an extension (".mp4", ".avi", ...), which is then kept.
    backend="pyav" (default) or "decord" (the official decoder; optional, imported lazily). Both give the
    same frame count, fps and pixels on the sample clips (tests/test_video.py). `info` is cached per path.

    `seek` (PyAV only): True, False or "auto". Measured in `benchmarks/run_all.py`, section 6 (32 frames): for
    frames spread over the whole clip, seeking is 0.9-1.0x decode-through (it must decode nearly everything
    anyway, and pays an extra demux pass); for a window over the last fifth of a clip with several keyframes
    (bikes.mp4) it is 2.0-2.7x faster. "auto" therefore seeks only for windowed samples (`start`/`end` set:
    STAR, How2QA, TVQA, VLEP) and decodes through otherwise (NExT-QA, QVHighlights).
    """

    def __init__(self, video_root: str | os.PathLike, backend: str = "pyav", extension: str = ".mp4",
                 seek: bool | str = "auto"):
        if backend not in ("pyav", "decord"):
            raise ValueError(f"backend must be 'pyav' or 'decord', got {backend!r}")
        if backend == "decord":
            _decord()  # fail now, not at the first sample
        self.video_root, self.backend, self.extension, self.seek = str(video_root), backend, extension, seek
        self._info: dict[str, VideoInfo] = {}

    def path(self, sample: VideoQASample) -> str:
        """The file holding `sample`'s video."""
        name = str(sample.video)
        if os.path.splitext(name)[1].lower() not in VIDEO_EXTENSIONS:
            name += self.extension
        return os.path.join(self.video_root, name)

    def info(self, sample: VideoQASample) -> VideoInfo:
        path = self.path(sample)
        if path not in self._info:
            probe = probe_video_decord if self.backend == "decord" else probe_video
            self._info[path] = probe(path, sample.question_id)
        return self._info[path]

    def read(self, sample: VideoQASample, indices: Sequence[int]) -> np.ndarray:
        path, info = self.path(sample), self.info(sample)
        bad = [i for i in indices if not 0 <= i < info.num_frames]
        if bad:
            raise ValueError(f"{path} (question {sample.question_id}): frame index {bad[0]} is outside "
                             f"[0, {info.num_frames})")
        if self.backend == "decord":
            return read_frames_decord(path, indices, sample.question_id)
        seek = self.seek if isinstance(self.seek, bool) else (sample.start is not None or sample.end is not None)
        return read_frames_pyav(path, indices, seek=seek, question_id=sample.question_id)


# ---------------------------------------------------------------------------------------------------------
# 3. Writing a video
# ---------------------------------------------------------------------------------------------------------

def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, codec: str = "libx264",
                faststart: bool = False) -> None:
    """Write uint8 frames (T, H, W, 3) as a video (H.264 in yuv420p; mpeg4 if libx264 is missing).

    yuv420p needs an even width and height, so an odd frame is padded by repeating its last row/column:
    the file is then one pixel taller/wider than the input. The container follows the extension (.mp4, .mkv).
    `faststart=True` (mp4) puts the header first, as streamed web videos have it: a download cut short then still
    opens and states its full frame count, and only decoding finds the missing frames.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    if codec not in av.codecs_available:
        codec = "mpeg4"
    rate = Fraction(fps).limit_denominator(1001)  # keeps NTSC rates such as 30000/1001 exact
    with av.open(str(path), mode="w", options={"movflags": "faststart"} if faststart else {}) as container:
        options = {"crf": "12"} if codec == "libx264" else {}  # near-lossless: read-back tests stay tight
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames


# ---------------------------------------------------------------------------------------------------------
# 4. Pixels to tensors
# ---------------------------------------------------------------------------------------------------------

def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.5, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) by torchvision's RandomResizedCrop rule: up to 10 draws of an area
    fraction in `scale` and a log-uniform aspect ratio in `ratio`; if none fits, a centre crop clamped to
    `ratio`. The official train transform (official `data_utils.load_video`) uses scale (0.5, 1) and ratio (3/4, 4/3)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def frames_to_tensor(frames: np.ndarray | torch.Tensor, image_size: int, train: bool = False,
                     rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> normalised float (T, 3, S, S), S = image_size (official `data_utils.load_video`).

    Frames are resized straight to S×S (aspect ratio not kept, as decord's `height=224, width=224` does in the
    official loader), bicubic with antialiasing, then divided by 255 and normalised with the CLIP mean/std.
    train=True first cuts ONE random resized crop (`random_resized_crop_box`, drawn from `rng`) shared by
    all frames of the clip. Official decoding resizes inside decord and crops the 224×224 result; we crop the
    full frame instead, so pixels differ slightly but the crop covers the same fraction of the scene.
    """
    video = torch.tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W); copies read-only frames
    if train:
        if rng is None:
            raise ValueError("train=True needs a numpy.random.Generator (rng) for the crop")
        top, left, h, w = random_resized_crop_box(video.shape[2], video.shape[3], rng)
        video = video[:, :, top:top + h, left:left + w]
    if video.shape[2:] != (image_size, image_size):
        video = F.interpolate(video, size=(image_size, image_size), mode="bicubic", align_corners=False,
                              antialias=True)
        # Bicubic overshoots; the official pipeline stores the resized frame as uint8, so clamp and round.
        video = video.clamp(0, 255).round()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (video / 255.0 - mean) / std  # (T, 3, S, S)

"""Frame sampling (official `data_utils.load_video`), decoding, writing and the pixel transform (sevila_lib/video.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sevila_lib.paths import SAMPLE_VIDEOS_DIR
from sevila_lib.records import VideoQASample
from sevila_lib.video import (CLIP_MEAN, CLIP_STD, VideoError, VideoFileReader, VideoInfo, frames_to_tensor,
                              probe_video, probe_video_decord, random_resized_crop_box, read_frames_decord,
                              read_frames_pyav, relevant_frame_mask, segment_frame_indices, write_video)

BIKES = str(SAMPLE_VIDEOS_DIR / "bikes.mp4")  # 250 frames, 25 fps, 640x272, 6 keyframes, B-frames
CARPHONE = str(SAMPLE_VIDEOS_DIR / "carphone_distorted.mp4")  # 120 frames, 30000/1001 fps, 176x144
CLIPS = [BIKES, CARPHONE, str(SAMPLE_VIDEOS_DIR / "carphone_pristine.mp4")]


def spec_indices(vlen: int, fps: float, n: int, start=None, end=None) -> list[int]:
    """The official `load_video` sampling written out independently: window, linspace boundaries, segment midpoints."""
    lo, hi = (0, vlen) if start is None else (max(int(start * fps), 0), min(int(end * fps), vlen))
    bounds = np.linspace(lo, hi, n + 1).astype(int)
    return [(int(a) + int(b)) // 2 for a, b in zip(bounds[:-1], bounds[1:])]


# --- sampling -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("vlen,fps,n,start,end", [
    (250, 25.0, 32, None, None), (120, 29.97, 32, None, None), (32, 30.0, 32, None, None),
    (250, 25.0, 4, 2.0, 4.0), (250, 25.0, 8, 0.0, 100.0), (1000, 3.0, 32, 20.16, 25.12),
    (300, 30.0, 32, 9.5, 9.9),  # 12-frame window in a long video: repeats, as the official code has too
])
def test_uniform_sampling_matches_spec_formula(vlen, fps, n, start, end):
    indices, repeated = segment_frame_indices(vlen, fps, n, "uniform", start=start, end=end)
    assert indices == spec_indices(vlen, fps, n, start, end)
    assert repeated == (len(set(indices)) < n)


def test_window_example_by_hand():
    # 25 fps, 2-4 s -> frames [50, 100], boundaries 50, 62, 75, 87, 100 -> midpoints.
    assert segment_frame_indices(250, 25.0, 4, "uniform", start=2.0, end=4.0) == ([56, 68, 81, 93], False)


def test_short_clip_gives_exactly_n_sorted_evenly_spread_repeats():
    indices, repeated = segment_frame_indices(5, 25.0, 8, "uniform")
    assert indices == [0, 0, 1, 1, 2, 3, 3, 4] and repeated
    indices, repeated = segment_frame_indices(3, 25.0, 8, "random", rng=np.random.default_rng(0))
    assert len(indices) == 8 and indices == sorted(indices) and repeated and max(indices) < 3


def test_window_at_the_end_and_zero_length_window_stay_inside_the_video():
    indices, repeated = segment_frame_indices(100, 10.0, 4, "random", np.random.default_rng(1), 9.9, 50.0)
    assert indices == [99, 99, 99, 99] and repeated
    assert segment_frame_indices(100, 10.0, 3, "uniform", start=2.0, end=2.0) == ([20, 20, 20], True)


def test_random_sampling_draws_inside_each_segment_deterministically():
    a, _ = segment_frame_indices(250, 25.0, 32, "random", np.random.default_rng(7))
    b, _ = segment_frame_indices(250, 25.0, 32, "random", np.random.default_rng(7))
    assert a == b
    bounds = np.linspace(0, 250, 33).astype(int)
    assert all(lo <= i < hi for i, lo, hi in zip(a, bounds[:-1], bounds[1:]))


@pytest.mark.parametrize("start,end", [(12.0, 15.0), (-5.0, -1.0)])
def test_window_outside_the_video_names_window_and_length(start, end):
    with pytest.raises(ValueError, match=r"window \[.*\] s = frames .* outside the video \(frames \[0, 250\)"):
        segment_frame_indices(250, 25.0, 8, "uniform", start=start, end=end)


def test_zero_frames_and_bad_windows_are_errors():
    with pytest.raises(ValueError, match="0 frames"):
        segment_frame_indices(0, 25.0, 8)
    with pytest.raises(ValueError, match="ends before it starts"):
        segment_frame_indices(250, 25.0, 8, start=5.0, end=2.0)
    with pytest.raises(ValueError, match="needs a numpy.random.Generator"):
        segment_frame_indices(250, 25.0, 8, "random")


def test_relevant_frame_mask_is_inclusive_at_both_ends():
    # fps 2: frames 0..5 are at 0, 0.5, 1, 1.5, 2, 2.5 s; moment [1, 2] includes 1 and 2.
    assert relevant_frame_mask(range(6), 2.0, [(1.0, 2.0)]) == [False, False, True, True, True, False]
    assert relevant_frame_mask([0, 5], 2.0, [(0.0, 0.0), (2.5, 9.0)]) == [True, True]
    assert relevant_frame_mask([3], 2.0, []) == [False]


# --- decoding the sample clips ----------------------------------------------------------------------------

def test_probe_sample_clips_pyav_and_decord_agree():
    assert probe_video(BIKES) == VideoInfo(250, 25.0)
    assert probe_video(CARPHONE) == VideoInfo(120, 30000 / 1001)
    for clip in CLIPS:
        assert probe_video(clip) == probe_video_decord(clip)


@pytest.mark.parametrize("clip", CLIPS, ids=lambda path: path.rsplit("/", 1)[-1])
def test_pyav_seek_pyav_through_and_decord_give_identical_frames(clip):
    info = probe_video(clip)
    n = info.num_frames
    every = read_frames_pyav(clip, range(n))
    assert every.shape[0] == n and every.dtype == np.uint8
    rng = np.random.default_rng(0)
    for indices in ([n - 1], [3, n // 2, n - 5], sorted(rng.choice(n, 20, replace=False).tolist()),
                    segment_frame_indices(n, info.fps, 32, start=0.8 * n / info.fps, end=n / info.fps)[0]):
        np.testing.assert_array_equal(read_frames_pyav(clip, indices, seek=True), every[indices])
        # Exact equality holds on these clips: both decoders use FFmpeg's yuv420p -> rgb24 conversion.
        np.testing.assert_array_equal(read_frames_decord(clip, indices), every[indices])


def test_reader_resolves_paths_caches_info_and_keeps_order_and_repeats():
    reader = VideoFileReader(SAMPLE_VIDEOS_DIR)
    sample = VideoQASample("q1", "bikes", "q?", ["a", "b"], 0)
    with_ext = VideoQASample("q2", "bikes.mp4", "q?", ["a", "b"], 0)
    assert reader.path(sample) == reader.path(with_ext) == BIKES
    assert reader.info(sample) is reader.info(with_ext)
    frames = reader.read(sample, [40, 5, 5, 200])
    assert frames.shape == (4, 272, 640, 3)
    np.testing.assert_array_equal(frames[1], frames[2])
    np.testing.assert_array_equal(frames, read_frames_pyav(BIKES, [40, 5, 5, 200]))
    windowed = VideoQASample("q3", "bikes", "q?", ["a", "b"], 0, start=8.0, end=10.0)  # seeks ("auto")
    np.testing.assert_array_equal(reader.read(windowed, [200, 240]), read_frames_pyav(BIKES, [200, 240]))
    decord = VideoFileReader(SAMPLE_VIDEOS_DIR, backend="decord")
    assert decord.info(sample) == reader.info(sample)
    np.testing.assert_array_equal(decord.read(sample, [40, 5, 5, 200]), frames)
    with pytest.raises(ValueError, match=r"frame index 250 is outside \[0, 250\)"):
        reader.read(sample, [250])


def test_missing_corrupt_and_empty_videos_raise_video_error_with_path_and_question(tmp_path):
    missing = VideoQASample("CW_1_0", "nowhere", "q?", ["a", "b"], 0)
    for backend in ("pyav", "decord"):
        with pytest.raises(VideoError, match=r"nowhere\.mp4 \(question CW_1_0\): video file not found"):
            VideoFileReader(tmp_path, backend=backend).info(missing)
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    junk = VideoQASample("TN_2_1", "junk", "q?", ["a", "b"], 0)
    for backend in ("pyav", "decord"):
        with pytest.raises(VideoError, match=r"junk\.mp4 \(question TN_2_1\): unreadable or corrupt"):
            VideoFileReader(tmp_path, backend=backend).info(junk)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(BIKES, "rb").read()[:60_000])  # header says 250 frames, data stops early
    with pytest.raises(VideoError, match=r"truncated\.mp4 \(question q9\)"):
        read_frames_pyav(str(truncated), [249], question_id="q9")


def test_video_cut_short_behind_an_intact_header(tmp_path):
    # A streamed download (header first) cut short: it opens and states all its frames; decoding finds the gap.
    noise = np.random.default_rng(0).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "full.mp4", noise, fps=10, faststart=True)
    (tmp_path / "cut.mp4").write_bytes((tmp_path / "full.mp4").read_bytes()[:20_000])
    reader = VideoFileReader(tmp_path)
    sample = VideoQASample("TN_4_0", "cut", "q?", ["a", "b"], 0)
    assert reader.info(sample).num_frames == 60
    assert reader.read(sample, [0, 1]).shape == (2, 32, 32, 3)
    with pytest.raises(VideoError, match=r"cut\.mp4 \(question TN_4_0\): decoding ended before frame 59 .*truncated"):
        reader.read(sample, [0, 59])


def test_zero_frame_video_is_a_video_error(tmp_path):
    # A Matroska file cut just after its first cluster header: a valid video stream with no frames in it
    # (Matroska stores no frame count, so the reader counts by decoding and finds zero).
    write_video(tmp_path / "full.mkv", np.full((5, 32, 32, 3), 100, np.uint8), fps=25)
    raw = (tmp_path / "full.mkv").read_bytes()
    (tmp_path / "empty.mkv").write_bytes(raw[:raw.find(bytes.fromhex("1F43B675")) + 7])
    with pytest.raises(VideoError, match=r"empty\.mkv \(question DC_3_0\): the video has zero frames"):
        VideoFileReader(tmp_path).info(VideoQASample("DC_3_0", "empty.mkv", "q?", ["a", "b"], 0))


# --- writing ----------------------------------------------------------------------------------------------

def smooth_frames(num: int, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([(x * 4 + t * 3) % 256, (y * 4) % 256, np.full_like(x, 40 + 6 * t)], -1)
                     for t in range(num)]).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # Matroska stores no frame count: counted by decoding
def test_write_video_round_trip(tmp_path, suffix):
    frames = smooth_frames(12, 33, 41)  # odd size: padded to 34 x 42
    path = tmp_path / f"world{suffix}"
    write_video(path, frames, fps=30000 / 1001)
    info = probe_video(str(path))
    assert info == VideoInfo(12, 30000 / 1001) == probe_video_decord(str(path))
    back = read_frames_pyav(str(path), range(12))
    assert back.shape == (12, 34, 42, 3)
    error = np.abs(back[:, :33, :41].astype(int) - frames)
    assert error.mean() < 3 and np.percentile(error, 99) < 20  # H.264 at crf 12 with 4:2:0 chroma
    np.testing.assert_array_equal(read_frames_decord(str(path), [0, 11]), back[[0, 11]])


def test_write_video_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        write_video("/tmp/never.mp4", np.zeros((2, 8, 8, 3), np.float32), 10)


# --- pixels to tensors -----------------------------------------------------------------------------------

def test_frames_to_tensor_resizes_and_normalises():
    gray = np.full((3, 50, 70, 3), 128, np.uint8)
    out = frames_to_tensor(gray, 24)
    assert out.shape == (3, 3, 24, 24) and out.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[0, :, 5, 5], expected)


def test_train_crop_is_shared_by_all_frames_and_deterministic():
    frames = read_frames_pyav(CARPHONE, [0, 60, 119])
    a = frames_to_tensor(frames, 32, train=True, rng=np.random.default_rng([3, 0, 7]))
    b = frames_to_tensor(frames, 32, train=True, rng=np.random.default_rng([3, 0, 7]))
    c = frames_to_tensor(frames, 32, train=True, rng=np.random.default_rng([3, 1, 7]))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    same = np.repeat(frames[:1], 3, axis=0)  # identical frames stay identical: one crop for the whole clip
    out = frames_to_tensor(same, 32, train=True, rng=np.random.default_rng(0))
    torch.testing.assert_close(out[0], out[2])


def test_random_resized_crop_box_limits_and_fallback():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(144, 176, rng)
        assert 0 <= top and top + h <= 144 and 0 <= left and left + w <= 176
        assert 0.5 * 144 * 176 * 0.9 <= h * w <= 144 * 176 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # A 1000x10 strip never fits the ratio range: centre crop with ratio 3/4 (10 wide, 13 tall).
    assert random_resized_crop_box(1000, 10, rng) == ((1000 - 13) // 2, 0, 13, 10)

"""The evaluation runner: variants, the feature cache, bad videos."""
import numpy as np
import pytest
import torch

from sevila_lib import prompts
from sevila_lib.evaluation import Evaluator, FeatureCache, ground_truth_keyframes, model_fingerprint, save_predictions
from sevila_lib.records import VideoQASample
from sevila_lib.scorers import LocalizerLogits
from sevila_lib.video import VideoError, VideoInfo
from tests.conftest import QUESTIONS, make_tiny_model


class ArrayReader:
    """Frames from memory; counts reads so tests can see the cache working."""

    def __init__(self, videos, fps=2.0):
        self.videos, self.fps, self.reads = videos, fps, 0

    def info(self, sample):
        if sample.video not in self.videos:
            raise VideoError(sample.video, "no such video", sample.question_id)
        return VideoInfo(len(self.videos[sample.video]), self.fps)

    def read(self, sample, indices):
        self.reads += len(indices)
        return self.videos[sample.video][list(indices)]

    def cache_key(self, sample):
        return f"array:{sample.video}"


@pytest.fixture()
def setup(tokenizer):
    rng = np.random.default_rng(0)
    videos = {v: rng.integers(0, 255, (12, 20, 20, 3), dtype=np.uint8) for v in ("v1", "v2")}
    samples = [VideoQASample(f"q{i}", v, q, o, answer=i % 5, question_type="descriptive", dataset="world",
                             moments=[(1.0, 2.0)])
               for i, (v, (q, o)) in enumerate(zip(["v1", "v2", "v1"], QUESTIONS * 2))]
    return make_tiny_model(tokenizer), samples, ArrayReader(videos)


def test_variants_produce_one_row_per_question(setup):
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, batch_size=2, progress=False)
    for variant in ("uniform", "all", "localizer", "ground_truth", "random"):
        table = ev.run(variant, num_frames=6, num_keyframes=2)
        assert list(table.question_id) == ["q0", "q1", "q2"]
        assert table.selected_frames.map(len).eq(6 if variant == "all" else 2).all()
        assert np.allclose(table.option_probs.map(sum), 1.0, atol=1e-5)
    gt = ev.run("ground_truth", num_frames=6, num_keyframes=2)
    # Frames 2..4 lie in [1 s, 2 s] at 2 fps; the 6 sampled frames are 1, 3, 5, 7, 9, 11.
    assert gt.selected_frames.tolist()[0] == [1, 3] and gt.relevant_frames.tolist()[0] == [2, 3, 4]


def test_localizer_variant_is_the_forward_chain(setup):
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, batch_size=3, progress=False)
    table = ev.run("localizer", num_frames=6, num_keyframes=3)
    indices = [ev.frame_indices(s, 6) for s in samples]
    feats = torch.stack([ev.features(s, idx) for s, idx in zip(samples, indices)])
    out = model.forward_chain(feats, [prompts.sample_qa_text(s) for s in samples],
                              [prompts.sample_loc_text(s) for s in samples], 5, 3)
    assert table.prediction.tolist() == out.prediction.tolist()
    assert table.selected_frames.tolist() == [[idx[k] for k in ks] for idx, ks in zip(indices, out.keyframes.tolist())]


def test_features_are_computed_once_and_cached_on_disk(setup, tmp_path):
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, cache_dir=tmp_path, progress=False)
    first = ev.run("localizer", num_frames=6, num_keyframes=2)
    reads = reader.reads
    for k in (1, 2, 3):  # a k sweep reuses the frames and the localizer scores
        ev.run("localizer", num_frames=6, num_keyframes=k)
    assert reader.reads == reads
    again = Evaluator(model, samples, reader, cache_dir=tmp_path, progress=False)
    assert again.run("localizer", num_frames=6, num_keyframes=2).prediction.tolist() == first.prediction.tolist()
    assert reader.reads == reads and again.cache.misses == 0
    with torch.no_grad():
        model.vision_encoder.embeddings.class_embedding.add_(1.0)  # a different model → a different key
    changed = Evaluator(model, samples, reader, cache_dir=tmp_path, progress=False)
    changed.run("uniform", num_frames=6, num_keyframes=2)
    assert reader.reads > reads and changed.cache.misses > 0


def test_damaged_or_foreign_cache_files_are_recomputed_never_reused(tmp_path):
    import warnings

    features = {0: torch.arange(12.0).reshape(3, 4), 5: torch.ones(3, 4)}
    FeatureCache(tmp_path, "fp").put("video-a", features)
    file = FeatureCache(tmp_path, "fp")._file("video-a")

    def reread(key="video-a"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stored, missing = FeatureCache(tmp_path, "fp").get(key, [0, 5])
        return stored, missing, [str(w.message) for w in caught]

    stored, missing, warned = reread()
    assert not missing and not warned and torch.equal(stored[0], features[0])
    good = file.read_bytes()
    # Cut short: unreadable -> recomputed, with a warning naming the file (which is removed).
    file.write_bytes(good[:-20])
    stored, missing, warned = reread()
    assert (stored, missing) == ({}, [0, 5]) and not file.exists()
    assert len(warned) == 1 and f"feature cache file {file} cannot be read" in warned[0] and "recomputed" in warned[0]
    # One flipped byte in the data: the safetensors file still loads, the checksum does not match.
    damaged = bytearray(good)
    damaged[-3] ^= 0xFF
    file.write_bytes(bytes(damaged))
    stored, missing, warned = reread()
    assert missing == [0, 5] and "does not match its checksum (corrupt)" in warned[0]
    # An entry written for one video is never served for another (e.g. a file copied or renamed by hand).
    FeatureCache(tmp_path, "fp").put("video-a", features)
    other = FeatureCache(tmp_path, "fp")._file("video-b")
    other.write_bytes(file.read_bytes())
    stored, missing, warned = reread("video-b")
    assert missing == [0, 5] and "was written for another video ('video-a', not 'video-b')" in warned[0]
    # Files of the earlier format (no metadata) are recomputed too.
    from safetensors.torch import save_file
    save_file({"0": features[0]}, str(file))
    stored, missing, warned = reread()
    assert missing == [0, 5] and "has no video key" in warned[0]


def test_memory_layer_is_bounded():
    cache = FeatureCache(None, "x", max_videos=2)
    for v in "abc":
        cache.put(v, {0: torch.zeros(1)})
    assert list(cache._memory) == ["b", "c"]


def test_memory_layer_is_bounded_in_bytes():
    cache = FeatureCache(None, "x", max_videos=100, max_bytes=2 * 4 * 10)  # room for two videos of 10 floats
    for v in "abcd":
        cache.put(v, {0: torch.zeros(10)})
    assert list(cache._memory) == ["c", "d"]
    cache.put("big", {0: torch.zeros(100)})  # larger than the budget: kept alone, never dropped on arrival
    assert list(cache._memory) == ["big"]
    cache.put("big", {0: torch.zeros(5), 1: torch.zeros(5)})  # a frame replaced, one added
    cache.put("e", {0: torch.zeros(10)})
    # the running byte count follows arrivals, replacements and evictions
    assert list(cache._memory) == ["big", "e"]
    assert cache._nbytes == sum(t.nbytes for v in cache._memory.values() for t in v.values()) == 4 * 20


def test_prompts_scored_in_one_pass_match_separate_passes(setup):
    model, samples, reader = setup
    names = list(prompts.LOCALIZER_PROMPTS)
    shared = Evaluator(model, samples, reader, batch_size=2, progress=False)
    shared.frame_scores(6, names[0], also=names)
    calls = []
    model.localizer.register_forward_hook(lambda *_: calls.append(1))
    for name in names:
        alone = Evaluator(model, samples, reader, batch_size=2, progress=False).frame_scores(6, name)
        before = len(calls)
        reused = shared.frame_scores(6, name)
        assert len(calls) == before  # already scored in the shared pass: no bridge call
        for q in alone:
            assert torch.allclose(alone[q], reused[q], atol=1e-6), (name, q)


def test_answers_of_a_selection_met_before_are_looked_up(setup):
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, batch_size=2, progress=False)
    calls = []
    model.answerer.register_forward_hook(lambda *_: calls.append(1))
    everything = ev.run("localizer", num_frames=6, num_keyframes=6)  # k = n: every prompt keeps all frames
    after_first = len(calls)
    again = ev.run("localizer", num_frames=6, num_keyframes=6, prompt="has_information")
    assert after_first > 0 and len(calls) == after_first
    assert again.option_probs.tolist() == everything.option_probs.tolist()
    fresh = Evaluator(model, samples, reader, batch_size=3, progress=False).run("all", num_frames=6)
    assert np.allclose(np.stack(fresh.option_probs), np.stack(again.option_probs), atol=1e-6)


def test_per_frame_table_and_bad_videos(setup):
    model, samples, reader = setup
    bad = samples + [VideoQASample("q9", "missing", "q?", ["a.", "b."], 0)]
    with pytest.raises(VideoError, match="q9"):
        Evaluator(model, bad, reader, progress=False).run("uniform", num_keyframes=2)
    ev = Evaluator(model, bad, reader, on_error="skip", progress=False)
    per_frame = ev.per_frame(num_frames=4)
    assert len(per_frame) == 3 * 4 and [s.question_id for s in ev.skipped] == ["q9"]
    assert set(per_frame.columns) >= {"question_id", "frame_index", "prediction", "answer", "relevant"}


class FailingDecodeReader(ArrayReader):
    """A video whose header is fine (info works) but whose frames fail to decode, like a file cut short."""

    def read(self, sample, indices):
        if sample.video == "v2":
            raise VideoError("v2.mp4", "decoding ended before frame 11; the file is truncated", sample.question_id)
        return super().read(sample, indices)


def test_decode_failures_are_skipped_and_every_other_question_kept(setup):
    model, samples, reader = setup
    broken = FailingDecodeReader(reader.videos)
    with pytest.raises(VideoError, match="truncated"):
        Evaluator(model, samples, broken, progress=False).run("localizer", num_frames=6, num_keyframes=2)
    good = Evaluator(model, samples, reader, batch_size=3, progress=False).run("localizer", num_frames=6,
                                                                                 num_keyframes=2)
    ev = Evaluator(model, samples, broken, batch_size=3, on_error="skip", progress=False)
    kept = ev.run("localizer", num_frames=6, num_keyframes=2)
    assert list(kept.question_id) == ["q0", "q2"]  # q1 (video v2) is left out, never replaced
    assert [(s.question_id, "truncated" in s.reason) for s in ev.skipped] == [("q1", True)]
    assert list(ev.run("uniform", num_frames=6, num_keyframes=2).question_id) == ["q0", "q2"]
    # The other questions' predictions are exactly those of a run without the broken video.
    assert kept.prediction.tolist() == good.prediction[good.question_id != "q1"].tolist()
    assert kept.selected_frames.tolist() == good.selected_frames[good.question_id != "q1"].tolist()


def test_questions_whose_prompt_loses_options_are_flagged_and_counted(setup):
    from sevila_lib.evaluation import summary

    model, samples, reader = setup
    long_question = "why " + " ".join(["does the person lie down"] * 20) + "?"
    samples = samples + [VideoQASample("q3", "v1", long_question, QUESTIONS[0][1], 0, question_type="descriptive",
                                       dataset="world", moments=[(1.0, 2.0)])]
    for variant in ("uniform", "localizer"):
        table = Evaluator(model, samples, reader, progress=False).run(variant, num_frames=6, num_keyframes=2)
        expected = [prompts.truncated_options(model.tokenizer, prompts.sample_qa_text(s)) for s in samples]
        if variant == "localizer":
            expected = [e or prompts.truncated_options(model.tokenizer, prompts.sample_loc_text(s))
                        for e, s in zip(expected, samples)]
        assert table.options_truncated.tolist() == expected and expected[-1]
        assert summary(table)["options_truncated"] == sum(expected)


def test_ground_truth_keyframes():
    assert ground_truth_keyframes([False, True, True, False, False], 2) == [1, 2]
    assert ground_truth_keyframes([False, False, True, False, False], 3) == [1, 2, 3]
    assert ground_truth_keyframes([True] * 8, 4) == [0, 2, 5, 7]
    assert ground_truth_keyframes([False] * 4, 2) == [0, 1]


def test_save_predictions_round_trip(setup, tmp_path):
    model, samples, reader = setup
    table = Evaluator(model, samples, reader, progress=False).run("uniform", num_keyframes=2)
    import pandas as pd
    back = pd.read_parquet(save_predictions(table, tmp_path / "p.parquet"))
    assert back.selected_frames.map(list).tolist() == table.selected_frames.tolist()
    assert model_fingerprint(model) == model_fingerprint(model)


def test_summary_row_has_accuracy_and_hit_rate(setup):
    from sevila_lib.evaluation import summary

    model, samples, reader = setup
    row = summary(Evaluator(model, samples, reader, progress=False).run("localizer", 6, 2), variant="localizer")
    assert row["variant"] == "localizer" and row["questions"] == 3
    assert {"world_avg", "hit_rate", "recall"} <= set(row)


def test_features_do_not_depend_on_what_was_computed_before(setup, tmp_path):
    """A frame's ViT features are the same bits whether its video was first touched by 2 uniform frames or by
    all of them (a short video is always encoded whole), so a cache filled by earlier runs changes no number."""
    model, samples, reader = setup
    piecemeal = Evaluator(model, samples, reader, cache_dir=tmp_path / "a", progress=False)
    piecemeal.features(samples[0], [3])
    piecemeal.features(samples[0], [7, 9])
    at_once = Evaluator(model, samples, reader, cache_dir=tmp_path / "b", progress=False)
    everything = list(range(12))
    assert torch.equal(piecemeal.features(samples[0], everything), at_once.features(samples[0], everything))


def test_per_frame_scores_are_shared_through_score_files_and_across_n(setup, tmp_path):
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, score_dir=tmp_path, progress=False)
    logits = ev.every_frame_scores([LocalizerLogits()])["localizer_no_yes"]  # what both score kinds are read from
    assert {q: v.shape for q, v in logits.items()} == {s.question_id: (12, 2) for s in samples}
    every = {q: v[:, 1] for q, v in logits.items()}  # the official score: the "yes" logit
    for n in (2, 6, 12, 24):  # every n is read from the one pass over every frame
        scores = ev.frame_scores(n)
        assert all(torch.equal(scores[s.question_id], every[s.question_id][ev.frame_indices(s, n)]) for s in samples)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = Evaluator(model, samples, reader, score_dir=tmp_path, progress=False)
    calls = []
    again._score_pass = lambda *args: calls.append(args)  # must not be needed: the file holds the scores
    assert all(torch.equal(again.frame_scores(6)[q], ev.frame_scores(6)[q]) for q in every) and not calls
    probs = again.scores(6, ["localizer_prob"])[0]  # the other score kind: read from the same file
    assert not calls and all(torch.allclose(probs[q], logits[q][again.frame_indices(s, 6)].softmax(-1)[:, 1])
                             for s, q in zip(samples, every))
    # Another answerer bridge does not change Localizer scores (same file); another question list does.
    other = Evaluator(model, samples[:2], reader, score_dir=tmp_path, progress=False)
    other.frame_scores(6)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    with torch.no_grad():
        model.answerer.query_tokens.add_(1.0)
    Evaluator(model, samples, reader, score_dir=tmp_path, progress=False).frame_scores(6)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    with torch.no_grad():
        model.localizer.query_tokens.add_(1.0)
    Evaluator(model, samples, reader, score_dir=tmp_path, progress=False).frame_scores(6)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


@pytest.mark.parametrize("argv, said", [(["--split", "tst"], "unknown split 'tst'; choose from ['test', 'train', 'val']"),
                                        (["--rule", "topk"], "unknown selection rule 'topk'"),
                                        (["--scorer", "file"], "missing 1 required positional argument: 'path'"),
                                        (["--keyframes", "0"], "a number of frames must be positive, got 0")])
def test_command_line_names_a_wrong_choice_in_one_line(tmp_path, capsys, argv, said):
    from sevila_lib.evaluation import main

    try:
        code = main(["--max-questions", "2", "--out", str(tmp_path / "p.parquet"), *argv])
    except SystemExit as stop:  # argparse
        code = stop.code
    assert code == 2 and said in capsys.readouterr().err and not (tmp_path / "p.parquet").exists()

"""The one forward chain: model, evaluation and training go through it and agree; scorers by name; the grid; the
frame-index exchange."""
import json

import numpy as np
import pytest
import torch

from sevila_lib import chain, prompts, scorers, selection_files
from sevila_lib.evaluation import Evaluator
from sevila_lib.training import StageLoss, TrainConfig
from tests.test_evaluation import setup  # noqa: F401 (fixture: tiny model, three samples, an in-memory reader)


def test_model_evaluation_and_training_select_and_read_the_same_keyframes(setup, tmp_path):  # noqa: F811
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, batch_size=3, progress=False)
    table = ev.select("localizer", "top_k", num_frames=6, num_keyframes=3)
    indices = [ev.frame_indices(s, 6) for s in samples]
    features = torch.stack([ev.features(s, idx) for s, idx in zip(samples, indices)])
    qa, loc = [prompts.sample_qa_text(s) for s in samples], [prompts.sample_loc_text(s) for s in samples]
    out = model.forward_chain(features, qa, loc, 5, 3)
    assert table.selected_frames.tolist() == [[i[p] for p in ks] for i, ks in zip(indices, out.keyframes.tolist())]
    torch.testing.assert_close(torch.tensor(table.option_probs.tolist()), out.option_probs)
    # Training: the stage's keyframes and loss come from the same selection and the same Answerer input.
    config = TrainConfig(stage="train_answerer", num_frames=6, num_keyframes=3, output_dir=str(tmp_path))
    batch = {"question_id": [s.question_id for s in samples], "frame_indices": indices, "qa_text": qa,
             "loc_text": loc, "answer": [s.answer for s in samples], "num_options": [5] * 3}
    stage = StageLoss(model, config)
    assert torch.equal(stage.keyframes(features, batch), out.keyframes)
    expected = model.answerer_loss(selection_gather(features, out.keyframes), qa, batch["answer"])
    with torch.no_grad():
        torch.testing.assert_close(chain.keyframe_loss(model, features, stage.keyframes(features, batch), qa,
                                                       batch["answer"]), expected)


def selection_gather(features, keyframes):
    return torch.stack([f[k] for f, k in zip(features, keyframes)])


def test_every_scorer_by_name_gives_one_score_per_frame(setup, tmp_path):  # noqa: F811
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, batch_size=2, progress=False)
    file = tmp_path / "scores.json"
    file.write_text(json.dumps({s.question_id: list(range(6)) for s in samples}))
    found = ev.scores(6, ["localizer", "localizer_prob", "answerer_confidence", scorers.get_scorer("file", path=file)])
    for table in found:
        assert set(table) == {"q0", "q1", "q2"} and all(v.shape == (6,) for v in table.values())
    assert all(0 < p < 1 for v in found[1].values() for p in v.tolist())  # P(yes)
    per_frame = ev.per_frame_logits(6)
    torch.testing.assert_close(found[2]["q1"], per_frame["q1"].softmax(-1).amax(-1))
    # The file's scores pick the last frames under top-k.
    assert ev.select(scorers.get_scorer("file", path=file), "top_k", 6, 2).selected_frames.tolist()[0] == [9, 11]


def test_a_score_file_that_does_not_fit_is_named(setup, tmp_path):  # noqa: F811
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, progress=False)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({s.question_id: [0.0] * 4 for s in samples}))
    with pytest.raises(ValueError, match="question 'q0' has 4 scores, the kit sampled 6"):
        ev.scores(6, [scorers.get_scorer("file", path=short)])
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"q0": [0.0] * 6}))
    with pytest.raises(KeyError, match="no scores for question 'q1'"):
        ev.scores(6, [scorers.get_scorer("file", path=missing)])
    with pytest.raises(ValueError, match="unknown scorer 'clip'"):
        scorers.get_scorer("clip")


def test_grid_runs_every_scorer_and_rule_and_reuses_scores_and_answers(setup, monkeypatch):  # noqa: F811
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, batch_size=3, progress=False)
    calls = {"localize": 0, "answer": 0}
    for name in calls:
        original = getattr(model, name if name == "answer" else "localize_visual")

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(model, name if name == "answer" else "localize_visual", counted)
    rules = ["top_k", "uniform", "span", "aks", "bolt", "mmr"]
    grid = ev.grid(["localizer", "localizer_prob"], rules, num_frames=6, num_keyframes=2)
    assert len(grid) == 2 * len(rules) * len(samples)
    assert set(grid.rule) == set(rules) and set(grid.scorer) == {"localizer", "localizer_prob"}
    assert calls["localize"] == 1  # one T5 pass over the one batch serves both score kinds of the prompt
    distinct = grid.assign(frames=grid.selected_frames.map(tuple))[["question_id", "frames"]].drop_duplicates()
    assert calls["answer"] <= len(rules) * 2 and len(distinct) < len(grid)  # repeated selections looked up
    # The grid's official cell is the "localizer" variant.
    official = ev.run("localizer", 6, 2)
    same = grid[(grid.scorer == "localizer") & (grid.rule == "top_k")]
    assert same.selected_frames.tolist() == official.selected_frames.tolist()


def test_selections_round_trip_and_external_files_are_evaluated(setup, tmp_path):  # noqa: F811
    model, samples, reader = setup
    ev = Evaluator(model, samples, reader, batch_size=2, progress=False)
    table = ev.select("localizer", "aks", num_frames=6, num_keyframes=2)
    path = selection_files.write_selections(table, tmp_path / "sel.json")
    back = selection_files.read_selections(path)
    assert back.selector["rule"] == "aks" and back.sampling["num_frames"] == 6
    assert [back.questions[q].keyframes for q in table.question_id] == table.selected_frames.tolist()
    again = Evaluator(model, samples, reader, progress=False).run_selections(path)
    assert again.prediction.tolist() == table.prediction.tolist()
    assert again.selected_frames.tolist() == table.selected_frames.tolist()
    # A file made elsewhere, for two questions, with its own frames; the third question is recorded as skipped.
    external = {"questions": {"q0": {"frame_indices": [0, 4, 8], "keyframes": [4, 8]},
                              "q2": {"frame_indices": [1, 2, 3], "keyframes": [2, 3]}}}
    (tmp_path / "ext.json").write_text(json.dumps(external))
    ev2 = Evaluator(model, samples, reader, progress=False)
    out = ev2.run_selections(tmp_path / "ext.json")
    assert out.question_id.tolist() == ["q0", "q2"] and [s.question_id for s in ev2.skipped] == ["q1"]
    bad = {"questions": {"q0": {"frame_indices": [0, 4], "keyframes": [4, 5]}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"question 'q0': keyframes \[5\] are not among its frame_indices"):
        selection_files.read_selections(tmp_path / "bad.json")
    beyond = {"questions": {"q0": {"frame_indices": [0, 40], "keyframes": [40]}}}
    (tmp_path / "beyond.json").write_text(json.dumps(beyond))
    with pytest.raises(ValueError, match="names frame 40 of a 12-frame video"):
        ev2.run_selections(tmp_path / "beyond.json")
    unknown = {"questions": {"q9": {"frame_indices": [0], "keyframes": [0]}}}
    (tmp_path / "unknown.json").write_text(json.dumps(unknown))
    with pytest.raises(KeyError, match="q9"):
        ev2.run_selections(tmp_path / "unknown.json")
    assert np.isfinite(out.option_probs.map(sum)).all()


def test_the_localizer_bridge_runs_once_per_distinct_frame(setup):  # noqa: F811
    model, samples, reader = setup  # q0 and q2 ask about the same video
    ev = Evaluator(model, samples, reader, progress=False)
    indices = [ev.frame_indices(s, 6) for s in samples]
    features = torch.stack([ev.features(s, idx) for s, idx in zip(samples, indices)])
    seen, bridge = [], model.localizer_tokens
    model.localizer_tokens = lambda f: seen.append(f.shape[:2].numel()) or bridge(f)
    with torch.inference_mode():
        shared = chain.FrameBatch(model, features, chain.Questions.from_samples(samples), indices).localizer_tokens
        assert seen == [12]  # two videos × 6 frames, not three questions × 6
        torch.testing.assert_close(shared, bridge(features))
        cropped = features.clone()
        cropped[2] += 0.5  # the same frames, other features (a training crop): never shared
        alone = chain.FrameBatch(model, cropped, chain.Questions.from_samples(samples), indices).localizer_tokens
        assert seen[-1] == 18 and torch.equal(alone, bridge(cropped))
    del model.localizer_tokens

"""Training runs as the notebooks use them: a finished run is reused only when nothing it started from changed."""
import torch
from safetensors.torch import load_file

from sevila_lib import experiments, paths
from sevila_lib.checkpoints import BRIDGES_FILE
from sevila_lib.workspace import open_workspace


def test_a_run_is_reused_only_with_the_same_config_and_starting_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    ws = open_workspace("mini", max_questions=4, reports_dir=tmp_path / "reports", smoke=True)
    bridges = lambda run: (run / BRIDGES_FILE).stat().st_mtime_ns  # noqa: E731
    run = experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0)
    first = bridges(run)
    saved = load_file(run / BRIDGES_FILE)
    assert saved and all(k.startswith("localizer.") for k in saved)  # only the bridge the stage trains
    assert bridges(experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0)) == first
    with torch.no_grad():  # a new base model (e.g. a regenerated mini BLIP-2): its old runs must not be reused
        ws.model.vision_encoder.embeddings.patch_embedding.weight.mul_(1.01)
    second = bridges(experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0))
    assert second != first
    experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0, init_lr=1e-5)
    assert bridges(run) != second  # another config retrains too


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    import pandas as pd
    import pytest

    from sevila_lib import training

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    ws = open_workspace("mini", max_questions=4, reports_dir=tmp_path / "reports", smoke=True)
    real, calls = training.pretrain_localizer, []

    def crashing_at(step):
        def stage(model, dataset, config, **kwargs):
            def callback(current, loss):
                if current == step:
                    raise KeyboardInterrupt  # Ctrl-C in the notebook
            result = real(model, dataset, config, step_callback=callback if step else None, **kwargs)
            calls.append((kwargs["resume"], len(result.losses)))
            return result
        return stage

    recipe = dict(seed=0, max_steps=3, epochs=3, batch_size=2, num_frames=2, checkpoint_every=1)
    monkeypatch.setattr(training, "pretrain_localizer", crashing_at(2))
    with pytest.raises(KeyboardInterrupt):
        experiments.train(ws, "localizer_pretrained", "pretrain_localizer", **recipe)
    run = ws.run_dir("localizer_pretrained", 0)
    assert not (run / BRIDGES_FILE).exists() and (run / "train" / "latest").read_text() == "checkpoint-1"
    monkeypatch.setattr(training, "pretrain_localizer", crashing_at(None))
    experiments.train(ws, "localizer_pretrained", "pretrain_localizer", **recipe)
    assert calls == [(True, 2)]  # resumed: only steps 2 and 3 were trained
    assert pd.read_csv(run / "train" / "log.csv")["step"].tolist() == [1, 2, 3]
    assert (run / BRIDGES_FILE).exists()
    # Another recipe does not resume the old checkpoints: it starts over (and removes them).
    experiments.train(ws, "localizer_pretrained", "pretrain_localizer", **{**recipe, "init_lr": 1e-5, "max_steps": 1})
    assert calls[-1] == (False, 1)


def test_tables_over_seeds_give_cis_and_paired_deltas_against_their_baseline(tmp_path):
    import pandas as pd

    ids = [f"q{i}" for i in range(100)]
    def row(setting, seed, correct):
        outcome = pd.Series([1.0] * correct + [0.0] * (100 - correct), index=ids)
        return {"setting": setting, "seed": seed, "world_avg": float(correct), experiments.OUTCOMES: {"accuracy": outcome}}

    rows = pd.DataFrame([row("base", 0, 50), row("base", 1, 52), row("new", 0, 70), row("new", 1, 72),
                         row("lone", 0, 51)])
    table = experiments.mean_over_seeds(rows, ["setting"], baseline={"setting": "base"})
    assert table.set_index("setting")["world_avg"].to_dict() == {"base": "51.0 ± 12.7", "new": "71.0 ± 12.7",
                                                                   "lone": "51.0 (1 seed)"}
    deltas = table.set_index("setting")["Δworld_avg vs setting=base"]
    assert deltas["base"] == "–" and deltas["new"].startswith("+20.0 [")
    effect = experiments.effect(rows, "world_avg", {"setting": "base"}, {"setting": "new"})
    assert effect["per_seed"] == [20.0, 20.0] and effect["verdict"].startswith("holds")
    assert experiments.effect(rows, "world_avg", {"setting": "base"}, {"setting": "lone"})["seeds"] == 1
    report = experiments.write_effects_report({"new beats base": effect}, tmp_path / "effects.md", "Effects")
    line = next(line for line in report.read_text().splitlines() if line.startswith("| new beats base"))
    assert "| 51.0 | 71.0 | +20.0 [" in line and "| +20.0, +20.0 | 2 × 100 | holds" in line


def test_frame_labels_cover_every_frame_and_follow_the_answerer(tmp_path, monkeypatch):
    from sevila_lib import training

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    ws = open_workspace("mini", max_questions=3, reports_dir=tmp_path / "reports", smoke=True)
    table = experiments.frame_labels(ws, ws.model)
    length = ws.world.config.num_frames
    assert list(table.columns) == list(training.LABEL_COLUMNS) and len(table) == 3 * length
    assert table.groupby("question_id").frame_index.apply(list).tolist() == [list(range(length))] * 3
    assert (table.label == table.correct).all() and table.gold_prob.between(0, 1).all()
    logits = ws.evaluator("train").per_frame_logits(length, readout="teacher_forced")  # read back from the score file
    sample = ws.questions["train"][0]
    expected = logits[sample.question_id].softmax(-1)[:, sample.answer]
    assert torch.allclose(torch.tensor(table[table.question_id == sample.question_id].gold_prob.values).float(), expected)
    # Another rule: P(gold) >= tau, from the same table.
    assert (experiments.relabel(table, 0.9).label == (table.gold_prob >= 0.9)).all()

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

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
    run = experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0, smoke=True)
    first = bridges(run)
    saved = load_file(run / BRIDGES_FILE)
    assert saved and all(k.startswith("localizer.") for k in saved)  # only the bridge the stage trains
    assert bridges(experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0, smoke=True)) == first
    with torch.no_grad():  # a new base model (e.g. a regenerated mini BLIP-2): its old runs must not be reused
        ws.model.vision_encoder.embeddings.patch_embedding.weight.mul_(1.01)
    second = bridges(experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0, smoke=True))
    assert second != first
    experiments.train(ws, "localizer_pretrained", "pretrain_localizer", seed=0, smoke=True, init_lr=1e-5)
    assert bridges(run) != second  # another config retrains too

"""The training loop on the tiny model: optimiser groups, schedule, the three stages, pseudo-labels, stored tables,
resume after a crash, and a 2-process run against a 1-process run."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sevila_lib import training
from sevila_lib.checkpoints import save_hf_blip2
from sevila_lib.config import preset as model_preset
from sevila_lib.model import SeViLA
from sevila_lib.training import (LabelLookup, TrainConfig, compute_pseudo_labels, iterative_refinement,
                                 linear_warmup_cosine_lr, pretrain_localizer, pseudo_label_stats, pseudo_labels,
                                 read_label_table, refine_localizer, train_answerer)
from tests.conftest import make_tiny_model
from tests.training_worker import RandomVideoQA, collate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors: thread hand-offs cost more than the maths, badly so on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(tmp_path, **overrides) -> TrainConfig:
    values = dict(stage="train_answerer", init_lr=1e-2, warmup_steps=0, epochs=20, batch_size=4, num_frames=6,
                  num_keyframes=3, seed=0, output_dir=str(tmp_path / "run"), progress_bar=False)
    return TrainConfig(**{**values, **overrides})


def snapshot(model: SeViLA) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed_parts(before: dict, model: SeViLA) -> set[str]:
    return {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


# ---- configuration ----------------------------------------------------------------------------------------

def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="Unknown TrainConfig keys"):
        TrainConfig.from_dict({"stage": "train_answerer", "lr": 1e-4})
    with pytest.raises(ValueError, match="keyframe_source"):
        TrainConfig(keyframe_source="clip")
    with pytest.raises(ValueError, match="keyframes"):
        TrainConfig(num_frames=4, num_keyframes=8)
    cfg = config(tmp_path, label_policy="threshold", tau=0.3)
    cfg.save(tmp_path / "cfg.json")
    assert TrainConfig.load(tmp_path / "cfg.json") == cfg
    assert training.preset("nextqa_answerer").grad_accum_steps == 2  # official run scripts and yamls run script
    assert training.preset("nextqa_refine", epochs=1).stage == "refine_localizer"
    assert training.preset("qvh_pretrain").bridge == "localizer"


# ---- optimiser and schedule -------------------------------------------------------------------------------

def test_param_groups_decay_ndim2_params_and_query_tokens(tiny_model):
    tiny_model.requires_grad_(False)
    tiny_model.answerer.requires_grad_(True)
    decayed, plain = training.param_groups(tiny_model, 0.05)
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    answerer = dict(tiny_model.answerer.named_parameters())
    assert {id(p) for p in decayed["params"]} == {id(p) for p in answerer.values() if p.ndim >= 2}
    assert {id(p) for p in plain["params"]} == {id(p) for p in answerer.values() if p.ndim < 2}
    assert any(p is tiny_model.answerer.query_tokens for p in decayed["params"])  # 3-D: decayed, as official
    assert not training.decays("x.vision_norm.weight", torch.zeros(2, 2))  # norms never decay


def test_schedule_values_by_hand():
    kw = dict(init_lr=1e-4, min_lr=1e-6, warmup_lr=1e-8, warmup_steps=10, max_epoch=4)
    assert linear_warmup_cosine_lr(0, 0, **kw) == pytest.approx(1e-8)
    assert linear_warmup_cosine_lr(0, 5, **kw) == pytest.approx(1e-8 + (1e-4 - 1e-8) / 2)
    assert linear_warmup_cosine_lr(0, 10, **kw) == pytest.approx(1e-4)
    assert linear_warmup_cosine_lr(0, 500, **kw) == pytest.approx(1e-4)  # constant for the rest of epoch 0
    cosine = (1e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi / 4)) + 1e-6
    assert linear_warmup_cosine_lr(1, 0, **kw) == pytest.approx(cosine)
    assert linear_warmup_cosine_lr(2, 7, **kw) == pytest.approx((1e-4 - 1e-6) * 0.5 + 1e-6)  # per epoch
    assert linear_warmup_cosine_lr(0, 0, **{**kw, "warmup_steps": 0}) == 1e-4


def test_loop_applies_the_schedule_and_trains_only_its_bridge(tiny_model, tmp_path):
    # 8 items, batch 2: 4 iterations per epoch; warm-up over 2 iterations, then the cosine of epoch 1 of 2.
    cfg = config(tmp_path, init_lr=1e-3, warmup_steps=2, epochs=2, batch_size=2, keyframe_source="uniform")
    before = snapshot(tiny_model)
    flags = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    result = train_answerer(tiny_model, RandomVideoQA(8), cfg, collate_fn=collate)
    log = pd.read_csv(result.log_path)
    assert log["step"].tolist() == list(range(1, 9)) and log["samples"].tolist() == list(range(2, 17, 2))
    expected = [1e-8, 1e-8 + (1e-3 - 1e-8) / 2, 1e-3, 1e-3] + [1e-3 * 0.5 * (1 + math.cos(math.pi / 2))] * 4
    np.testing.assert_allclose(log["lr"], expected, rtol=1e-9)
    assert log["epoch"].tolist() == [0] * 4 + [1] * 4
    assert changed_parts(before, tiny_model) == {"answerer"}  # localizer, ViT and T5: torch.equal
    assert {n: p.requires_grad for n, p in tiny_model.named_parameters()} == flags and not tiny_model.training
    assert (result.checkpoint_dir / "bridges.safetensors").exists() and result.final_step == 8
    assert set(load_file(result.checkpoint_dir / "bridges.safetensors")) == {
        f"answerer.{n}" for n, _ in tiny_model.answerer.named_parameters()}  # the trained bridge only


# ---- the stages -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["localizer", "random"])
def test_answerer_overfits_a_fixed_batch(tiny_model, tmp_path, source):
    before = snapshot(tiny_model)
    result = train_answerer(tiny_model, RandomVideoQA(4), config(tmp_path, keyframe_source=source), collate_fn=collate)
    assert len(result.losses) == 20 and np.mean(result.losses[-3:]) < result.losses[0] - 1.0
    assert changed_parts(before, tiny_model) == {"answerer"}


def test_localizer_pretraining_overfits_relevant_flags(tiny_model, tmp_path):
    before = snapshot(tiny_model)
    cfg = config(tmp_path, stage="pretrain_localizer")
    result = pretrain_localizer(tiny_model, RandomVideoQA(4, moments=True), cfg, collate_fn=collate)
    assert np.mean(result.losses[-3:]) < result.losses[0] - 1.0
    assert changed_parts(before, tiny_model) == {"localizer"}
    with pytest.raises(ValueError, match="relevant"):
        pretrain_localizer(tiny_model, RandomVideoQA(4), cfg, collate_fn=collate)


def test_stages_that_learn_from_answers_refuse_unlabelled_questions_before_writing(tiny_model, tmp_path):
    from sevila_lib.records import VideoQASample

    class TestSplit(RandomVideoQA):
        samples = [VideoQASample("TVQA_0", "clip", "why?", ["a", "b", "c", "d", "e"], 1),
                   VideoQASample("TVQA_1", "clip", "who?", ["a", "b", "c", "d", "e"], None)]

    for stage, run in (("train_answerer", train_answerer), ("refine_localizer", refine_localizer)):
        with pytest.raises(ValueError, match=rf"{stage} learns from gold answers; 1 question\(s\) have none "
                                             r"\(a test split\?\): TVQA_1"):
            run(tiny_model, TestSplit(4), config(tmp_path, stage=stage), collate_fn=collate)
    assert not (tmp_path / "run").exists()


def test_pseudo_label_rules_on_hand_built_logits():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.1, 0.0], [0.0, 5.0, 0.0]],
                           [[0.0, 3.0, -math.inf], [1.0, 0.0, -math.inf], [0.0, 0.0, -math.inf]]])  # (2, 3, 3)
    answers = [0, 1]  # question 2 has two options only
    official = pseudo_labels(logits, answers, "argmax")
    assert official.label.tolist() == [[True, False, False], [True, False, False]]  # argmax == gold, ties -> first
    gold_prob = official.gold_prob
    torch.testing.assert_close(gold_prob[0, 1], torch.tensor([0.0, 0.1, 0.0]).softmax(0)[0])
    torch.testing.assert_close(gold_prob[1, 2], torch.tensor(0.5))  # the missing option takes no probability
    threshold = pseudo_labels(logits, answers, "threshold", tau=0.3)
    assert threshold.label.tolist() == [[True, True, False], [True, False, True]]
    assert threshold.correct.tolist() == official.label.tolist()


def test_pseudo_label_stats():
    table = pd.DataFrame({"question_id": ["a", "a", "b", "b", "c", "c"], "label": [1, 1, 0, 0, 1, 0]}).astype(
        {"label": bool})
    stats = pseudo_label_stats(table)
    assert stats["positives_per_question"] == 1.0 and stats["no_positive_fraction"] == pytest.approx(1 / 3)
    assert stats["positive_rate"] == 0.5 and stats["questions"] == 3


def test_labelling_mode_switches_dropout_and_restores(tiny_model):
    tiny_model.train()
    with training.labelling_mode(tiny_model, dropout=False):
        assert not any(m.training for m in tiny_model.modules())
    with training.labelling_mode(tiny_model, dropout=True):  # the official behaviour
        assert tiny_model.answerer.training and tiny_model.llm.training and not tiny_model.vision_encoder.training
    assert tiny_model.answerer.training and not tiny_model.llm.training  # back to SeViLA.train()


def test_stored_labels_are_written_atomically_and_reread(tiny_model, tmp_path, monkeypatch):
    cfg = config(tmp_path, stage="refine_localizer", label_mode="stored", epochs=2)
    path = tmp_path / "labels.csv"
    table = compute_pseudo_labels(tiny_model, RandomVideoQA(4), cfg, path, collate_fn=collate)
    assert list(table.columns) == list(training.LABEL_COLUMNS) and len(table) == 4 * 6
    reread = read_label_table(path)
    pd.testing.assert_frame_equal(reread, table.reset_index(drop=True), check_dtype=False)
    assert table["label"].equals(table["correct"])  # argmax policy
    lookup = LabelLookup(reread)
    assert lookup(["q1"], [[0, 4]]).tolist()[0] == table[table.question_id == "q1"]["label"].tolist()[:2]
    with pytest.raises(KeyError, match="online"):
        lookup(["q1"], [[1]])
    # A crash while writing leaves the previous table intact and no half-written file under the real name.
    original = path.read_bytes()
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, p, **kw: (Path(p).write_text("half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        training.write_label_table(table, path)
    assert path.read_bytes() == original
    monkeypatch.undo()
    # Training on stored labels: only the localizer moves, and the result reports the table's statistics.
    before = snapshot(tiny_model)
    result = refine_localizer(tiny_model, RandomVideoQA(4), replace_cfg(cfg, labels_path=str(path)), collate_fn=collate)
    assert changed_parts(before, tiny_model) == {"localizer"}
    assert result.label_stats == pseudo_label_stats(read_label_table(path))


def replace_cfg(cfg: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig.from_dict({**cfg.__dict__, **changes})


def test_online_refinement_logs_its_labels(tiny_model, tmp_path):
    cfg = config(tmp_path, stage="refine_localizer", epochs=2, label_policy="threshold", tau=0.2)
    result = refine_localizer(tiny_model, RandomVideoQA(4), cfg, collate_fn=collate)
    seen = pd.read_csv(result.labels_path)
    assert len(seen) == 2 * 4 * 6 and set(seen["epoch"]) == {0, 1}
    assert seen["label"].tolist() == (seen["gold_prob"] >= 0.2).tolist()
    assert result.label_stats["questions"] == 8  # each question once per epoch


def test_online_labels_from_cached_answerer_logits_equal_labels_computed_every_step(tokenizer, tmp_path):
    # The mini recipe computes the frozen Answerer's per-frame logits once (`FrameLookup`); without dropout or
    # crop a frame's logits never change, so the labels seen and the trained Localizer must match per-step labelling.
    data = RandomVideoQA(4)
    cfg = config(tmp_path, stage="refine_localizer", epochs=2, label_policy="threshold", tau=0.2)
    per_step, cached = make_tiny_model(tokenizer), make_tiny_model(tokenizer)
    with torch.no_grad():
        logits = cached.answer_each_frame(cached.encode_frames(data.frames),
                                          [data[i]["qa_text"] for i in range(len(data))], 5, readout="teacher_forced")
    lookup = training.FrameLookup.from_per_question({f"q{i}": logits[i] for i in range(len(data))},
                                                    {f"q{i}": data[i]["frame_indices"] for i in range(len(data))},
                                                    "Answerer logits")
    a = refine_localizer(per_step, data, replace_cfg(cfg, output_dir=str(tmp_path / "a")), collate_fn=collate)
    b = refine_localizer(cached, data, replace_cfg(cfg, output_dir=str(tmp_path / "b")), collate_fn=collate,
                         frame_answers=lookup)
    seen_a, seen_b = pd.read_csv(a.labels_path), pd.read_csv(b.labels_path)
    assert seen_a["label"].tolist() == seen_b["label"].tolist() and seen_a["label"].nunique() == 2
    assert np.allclose(seen_a["gold_prob"], seen_b["gold_prob"], atol=1e-5)
    for (name, p), q in zip(per_step.localizer.named_parameters(), cached.localizer.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
    with pytest.raises(KeyError, match="no cached Answerer logits"):
        lookup(["q9"], [[0]])


def test_iterative_refinement_writes_one_bridge_folder_per_round(tiny_model, tmp_path):
    a_cfg = config(tmp_path, epochs=1, keyframe_source="localizer")
    l_cfg = config(tmp_path, stage="refine_localizer", epochs=1)
    rounds = iterative_refinement(tiny_model, RandomVideoQA(4), 2, a_cfg, l_cfg, tmp_path / "iter", collate_fn=collate)
    assert [r.round for r in rounds] == [1, 2]
    for r in rounds:
        assert (r.bridges_dir / "bridges.safetensors").exists()
        assert r.answerer.output_dir == tmp_path / "iter" / f"round-{r.round}" / "answerer"
    final = load_file(rounds[-1].bridges_dir / "bridges.safetensors")
    assert torch.equal(final["localizer.query_tokens"], tiny_model.localizer.query_tokens.detach())


# ---- resume -----------------------------------------------------------------------------------------------

class Crash(Exception):
    pass


def crash_at(step: int):
    def callback(current: int, loss: float) -> None:
        if current == step:
            raise Crash(f"simulated crash at step {current}")
    return callback


@pytest.mark.parametrize("stage, extra", [
    ("train_answerer", dict(keyframe_source="random", grad_accum_steps=2)),
    ("refine_localizer", dict(labelling_dropout=True, llm_dropout=True)),  # dropout everywhere: RNG must resume
])
def test_resume_after_a_crash_equals_an_unbroken_run(tokenizer, tmp_path, stage, extra):
    # 12 items, batch 2: 6 batches per epoch; 2 epochs. Checkpoints every step; the crash hits mid-epoch 0 after the
    # optimizer step and before its checkpoint, so that step is lost and redone.
    run = lambda model, out, **kw: training.STAGE_FUNCTIONS[stage](  # noqa: E731
        model, RandomVideoQA(12), config(tmp_path, stage=stage, epochs=2, batch_size=2, init_lr=1e-3, warmup_steps=3,
                                         checkpoint_every=1, output_dir=str(out), **extra), collate_fn=collate, **kw)
    unbroken = make_tiny_model(tokenizer)
    reference = run(unbroken, tmp_path / "a")
    crashed = make_tiny_model(tokenizer)
    with pytest.raises(Crash):
        run(crashed, tmp_path / "b", step_callback=crash_at(2))
    assert (tmp_path / "b" / "latest").read_text() == "checkpoint-1"
    resumed_model = make_tiny_model(tokenizer)  # a fresh process: initial weights, fresh RNG
    torch.manual_seed(1234)
    resumed = run(resumed_model, tmp_path / "b", resume=True)
    assert resumed.final_step == reference.final_step and len(resumed.losses) == reference.final_step - 1
    for key, value in unbroken.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    log_a, log_b = pd.read_csv(reference.log_path), pd.read_csv(resumed.log_path)
    pd.testing.assert_frame_equal(log_a, log_b)  # the crashed step's row was replaced, not duplicated
    if stage == "refine_localizer":  # so were its online pseudo-labels
        pd.testing.assert_frame_equal(pd.read_csv(reference.labels_path), pd.read_csv(resumed.labels_path))
    # Resuming a finished run changes nothing.
    again = run(resumed_model, tmp_path / "b", resume=True)
    assert again.losses == [] and again.checkpoint_dir == resumed.checkpoint_dir


def test_resume_refuses_a_changed_recipe(tiny_model, tmp_path):
    cfg = config(tmp_path, epochs=1, keyframe_source="uniform", checkpoint_every=1)
    train_answerer(tiny_model, RandomVideoQA(4), replace_cfg(cfg, max_steps=1), collate_fn=collate)
    with pytest.raises(ValueError, match="init_lr"):
        train_answerer(tiny_model, RandomVideoQA(4), replace_cfg(cfg, init_lr=1.0), collate_fn=collate, resume=True)


# ---- two processes vs one ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tokenizer, tmp_path):
    """2 processes × batch 2 (gloo, DDP) against 1 process × batch 4, same data order: Accelerate deals whole
    batches of the shared permutation to the processes in turn, so each global step sees the same 4 items.
    Three stages run in sequence on one model (answerer, online and stored refinement). Dropout is off (the
    processes' RNG streams differ). Tolerance: atol 1e-5 on the bridge weights (measured ≤ 4e-7), 100× below how
    far the steps move them; only the order of float sums differs."""
    cfg = model_preset("tiny", vocab_size=len(tokenizer))
    cfg.blip2.qformer_config.hidden_dropout_prob = cfg.blip2.qformer_config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = SeViLA(cfg, tokenizer)
    save_hf_blip2(model, tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    env.pop("WORLD_SIZE", None)
    worker = str(ROOT / "tests" / "training_worker.py")
    one = subprocess.run([sys.executable, worker, str(tmp_path / "model"), str(tmp_path / "one"), "4"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), worker, str(tmp_path / "model"), str(tmp_path / "two"), "2"], env=env,
                         capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    start = model.state_dict()
    for run in ("answerer", "online", "stored"):
        one_ckpt, two_ckpt = tmp_path / "one" / run / "checkpoint-4", tmp_path / "two" / run / "checkpoint-4"
        assert (two_ckpt / "rng_state_1.pt").exists()  # really two processes
        a, b = load_file(one_ckpt / "bridges.safetensors"), load_file(two_ckpt / "bridges.safetensors")
        moved = max((a[k] - start[k]).abs().max().item() for k in a)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert moved > 1e-3 and diff < 1e-5, (run, moved, diff)
        log_a, log_b = pd.read_csv(tmp_path / "one" / run / "log.csv"), pd.read_csv(tmp_path / "two" / run / "log.csv")
        assert log_a["samples"].tolist() == log_b["samples"].tolist() == [4, 8, 12, 16]
        np.testing.assert_allclose(log_a["loss"], log_b["loss"], rtol=1e-5)
    for table in ("online/pseudo_labels_online.csv", "stored/pseudo_labels.csv"):
        a, b = (pd.read_csv(tmp_path / side / table).sort_values(["question_id", "position"] + (
            ["epoch"] if "epoch" in pd.read_csv(tmp_path / side / table).columns else [])).reset_index(drop=True)
            for side in ("one", "two"))
        assert len(a) == len(b) and a["label"].tolist() == b["label"].tolist()
        np.testing.assert_allclose(a["gold_prob"], b["gold_prob"], atol=1e-6)


# ---- command line -----------------------------------------------------------------------------------------

def test_command_line_trains_on_the_mini_world(tiny_model, tmp_path):
    save_hf_blip2(tiny_model, tmp_path / "model")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(dict(batch_size=2, num_frames=8, num_keyframes=2, keyframe_source="uniform",
                                        max_steps=2, warmup_steps=0, progress_bar=False)))
    code = training.main(["train_answerer", "--config", str(cfg_path), "--model", str(tmp_path / "model"),
                          "--data", "world", "--output-dir", str(tmp_path / "cli")])
    assert code == 0
    assert pd.read_csv(tmp_path / "cli" / "log.csv")["step"].tolist() == [1, 2]
    assert (tmp_path / "cli" / "latest").read_text() == "checkpoint-2"


# ---- faults: unreadable checkpoints, other data, a full disk ------------------------------------------------

def test_resume_skips_an_unreadable_latest_checkpoint_for_the_newest_intact_one(tokenizer, tmp_path):
    cfg = config(tmp_path, epochs=1, batch_size=2, keyframe_source="uniform", checkpoint_every=1)
    with pytest.raises(Crash):
        train_answerer(make_tiny_model(tokenizer), RandomVideoQA(8), cfg, collate_fn=collate,
                       step_callback=crash_at(4))
    run_dir = Path(cfg.output_dir)
    assert (run_dir / "latest").read_text() == "checkpoint-3"
    bridges = run_dir / "checkpoint-3" / "bridges.safetensors"
    bridges.write_bytes(bridges.read_bytes()[:-64])  # damaged after it was written
    with pytest.warns(UserWarning, match=r"checkpoint-3: unreadable checkpoint \(ValueError: .*bridges\.safetensors: "
                                         r"truncated or corrupt"):
        resumed = train_answerer(make_tiny_model(tokenizer), RandomVideoQA(8), cfg, collate_fn=collate, resume=True)
    assert len(resumed.losses) == 2 and resumed.final_step == 4  # steps 3 and 4 redone from checkpoint-2
    assert pd.read_csv(resumed.log_path)["step"].tolist() == [1, 2, 3, 4]


def test_resume_on_other_data_is_refused(tiny_model, tmp_path):
    cfg = config(tmp_path, epochs=1, batch_size=2, keyframe_source="uniform", checkpoint_every=1, max_steps=1)
    train_answerer(tiny_model, RandomVideoQA(4), cfg, collate_fn=collate)
    with pytest.raises(ValueError, match=r"cannot resume .*checkpoint-1: the run started on other data \(4 items, "
                                         r"\w+; now 6 items, \w+\)"):
        train_answerer(tiny_model, RandomVideoQA(6), cfg, collate_fn=collate, resume=True)

    class Renamed(RandomVideoQA):  # same size, other questions
        question_ids = [f"other{i}" for i in range(4)]

    with pytest.raises(ValueError, match="the run started on other data"):
        train_answerer(tiny_model, Renamed(4), cfg, collate_fn=collate, resume=True)


def test_a_full_disk_while_checkpointing_says_so(tiny_model, tmp_path, monkeypatch):
    import errno

    from sevila_lib import checkpointing

    cfg = config(tmp_path, epochs=1, batch_size=2, keyframe_source="uniform", checkpoint_every=1, max_steps=2)
    saves = []
    real_save = torch.save

    def save(obj, path, *args, **kwargs):  # the disk fills up while step 2's checkpoint is written
        saves.append(path)
        if "checkpoint-2" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", save)
    with pytest.raises(OSError, match=r"disk full while writing checkpoint .*checkpoint-2 \(\d+ bytes free on its "
                                      r"disk\): it was removed; the last complete checkpoint is .*checkpoint-1") as err:
        train_answerer(tiny_model, RandomVideoQA(4), cfg, collate_fn=collate)
    assert err.value.errno == errno.ENOSPC
    run_dir = Path(cfg.output_dir)
    assert (run_dir / "latest").read_text() == "checkpoint-1"
    assert sorted(p.name for p in run_dir.glob("*checkpoint-*")) == ["checkpoint-1"]  # no half-written folder


def test_command_line_checkpoints_by_default_and_never_starts_over_a_run(tiny_model, tmp_path, capsys):
    save_hf_blip2(tiny_model, tmp_path / "model")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(dict(batch_size=2, num_frames=8, num_keyframes=2, keyframe_source="uniform",
                                        max_steps=1, warmup_steps=0, progress_bar=False)))
    argv = ["train_answerer", "--config", str(cfg_path), "--model", str(tmp_path / "model"), "--data", "world",
            "--output-dir", str(tmp_path / "cli")]
    assert training.main(argv) == 0
    saved = json.loads((tmp_path / "cli" / "train_config.json").read_text())
    assert saved["checkpoint_every"] == training.CLI_CHECKPOINT_EVERY
    assert training.main(argv) == 2  # the same folder again without --resume: refused, nothing overwritten
    assert "already holds checkpoints (newest checkpoint-1); pass --resume" in capsys.readouterr().err
    assert training.main([*argv, "--resume"]) == 0
    assert (tmp_path / "cli" / "latest").read_text() == "checkpoint-1"

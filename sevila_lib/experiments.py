"""Training runs as the notebooks use them (`02_reverse_chain`, `05_ablation_threshold`): train one bridge from a
starting point, keep it under the workspace's runs folder, evaluate it. The loops live in `training.py`.

Recipes: profile "paper" uses the official recipes (`training.PRESETS`, official run scripts and yamls). Profile
"mini" scales them to the moments world on a CPU: the same stages, losses, frame counts and schedule shape, with
other epochs and a higher learning rate for the tiny model, no random crop (it would cut the 32×32 world's objects
out), and the frozen parts' per-frame outputs computed once instead of every step (`training.FrameLookup`): the Localizer's
scores for Answerer fine-tuning and the Answerer's per-frame logits for the reverse chain's online labels
(exact, since without crop or dropout a frame's score or logits never change).
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from . import checkpoints, training
from .checkpointing import checkpoint_candidates
from .datasets import VideoQADataset
from .evaluation import Evaluator, hash_weights, model_fingerprint, parts_fingerprint, summary
from .files import atomic_write_text
from .model import SeViLA
from .scorers import LocalizerScorer
from .workspace import Workspace

PAPER_RECIPES = {"pretrain_localizer": "qvh_pretrain", "train_answerer": "nextqa_answerer",
                 "refine_localizer": "nextqa_refine"}
MINI_RECIPES: dict[str, dict] = {
    # Sized so that `make reports` trains every run of 02 (3 seeds) and 05 in minutes on 2 cores; probed on seed
    # 0 (1,000 val questions) with the shipped mini BLIP-2, whose zero-shot Localizer already finds a relevant
    # frame for 68.9% of questions (accuracy 51.5 with the zero-shot Answerer; uniform 4 frames: 44.3 / 31.2).
    # 6 epochs at 1e-3 (228 steps, 55 s): hit-rate 70.5, accuracy 51.7 (3 epochs: 66.8 / 50.8). (The earlier 20
    # epochs at 5e-4 were chosen for a mini BLIP-2 without answerability pre-training, whose zero-shot Localizer
    # was worse than uniform.)
    "pretrain_localizer": dict(init_lr=1e-3, warmup_steps=10, epochs=6, batch_size=8, num_frames=8),
    # 2 epochs from Localizer† (150 steps, 20 s): accuracy with Localizer† 50.9 vs 51.7 zero-shot — no gain here
    # (1 epoch: 50.7; read on uniform frames 29.6 vs 31.5 with 2 epochs).
    "train_answerer": dict(init_lr=2e-4, warmup_steps=20, epochs=2, batch_size=8, num_frames=32,
                           num_keyframes=4, keyframe_source="localizer"),
    # 2 epochs at 1e-3 (150 steps, 27 s): the zero-shot Answerer's labels LOWER the hit-rate (68.9 -> 56.8) and
    # accuracy (51.5 -> 46.3); 3 epochs gave the same (55.6 / 46.8), so do 2e-4 (54.7 / 44.3). Kept at the
    # official rule; 02 and 05 report the effect.
    "refine_localizer": dict(init_lr=1e-3, warmup_steps=20, epochs=2, batch_size=8, num_frames=4,
                             label_mode="online", label_policy="argmax"),
}
SMOKE = dict(epochs=1, max_steps=2, batch_size=4, grad_accum_steps=1)  # any profile: two small steps
# Optimizer steps between checkpoints, so an interrupted notebook run resumes instead of starting at step 1
# (mini: a few seconds of CPU work per 25 steps and a checkpoint of a few MB; paper: about every 10 minutes).
CHECKPOINT_EVERY = {"mini": 25, "paper": 200}
TRAINED_BRIDGE = {"pretrain_localizer": "localizer", "refine_localizer": "localizer", "train_answerer": "answerer"}


def recipe(ws: Workspace, stage: str, seed: int, output_dir: Path, **overrides) -> training.TrainConfig:
    """The training config of `stage` for the workspace's profile (two small steps in a smoke workspace), with
    overrides."""
    if ws.profile == "paper":
        values = dict(training.PRESETS[PAPER_RECIPES[stage]])
    else:
        values = dict(stage=stage, **MINI_RECIPES[stage])
    values.update({"seed": seed, "output_dir": str(output_dir), "progress_bar": False,
                   "checkpoint_every": CHECKPOINT_EVERY[ws.profile], **(SMOKE if ws.smoke else {}), **overrides})
    return training.TrainConfig.from_dict(values)


def dataset_for(ws: Workspace, stage: str, config: training.TrainConfig, seed: int) -> VideoQADataset:
    """Train-mode frames for a stage: moment queries for pre-training, QA questions otherwise."""
    samples = ws.moments["train"] if stage == "pretrain_localizer" else ws.questions["train"]
    reader = ws.moment_reader if stage == "pretrain_localizer" else ws.reader
    return VideoQADataset(samples, reader, config.num_frames, ws.model.config.image_size, train=True, seed=seed,
                          crop=ws.profile != "mini")


_LOOKUPS: dict[tuple, training.FrameLookup] = {}  # this process's lookups, by the model parts they depend on


def _every_frame_lookup(ws: Workspace, model: SeViLA, compute, what: str,
                        parts: Sequence[str]) -> training.FrameLookup:
    """A frozen part's output on every frame of every training video, computed once (mini profile):
    `compute(evaluator, n)` returns {question_id: one row per frame} with n = the videos' length (n segments of
    an n-frame video = every frame). Runs that start from the same frozen part (e.g. every reverse-chain run
    labelled by the zero-shot Answerer) share one lookup: it is kept by the fingerprint of `parts`."""
    lengths = {ws.reader.info(s).num_frames for s in ws.questions["train"]}
    if len(lengths) != 1:
        raise ValueError("a per-frame cache needs videos of one length; score and label online instead")
    key = (what, parts_fingerprint(model, parts), tuple(s.question_id for s in ws.questions["train"]))
    if key not in _LOOKUPS:
        ev, n = ws.evaluator("train", model=model), lengths.pop()
        _LOOKUPS[key] = training.FrameLookup.from_per_question(
            compute(ev, n), {s.question_id: ev.frame_indices(s, n) for s in ev.samples}, what)
    return _LOOKUPS[key]


def vit_feature_cache(ws: Workspace, model: SeViLA, stage: str):
    """The frozen ViT's features of a stage's training frames, read from the workspace's feature cache (each
    video encoded whole, once, as in evaluation) instead of running the ViT at every step: (question_ids,
    frame_indices) -> (B, T, P, Dv). Exact on the mini profile, whose training frames are not cropped."""
    ev = ws.evaluator("train", model=model)
    if stage == "pretrain_localizer":  # moment queries, from their own videos, in the same feature cache
        ev = Evaluator(model, ws.moments["train"], ws.moment_reader, cache_dir=ev.cache_dir, progress=False)
    by_id = {s.question_id: s for s in ev.samples}

    def features(question_ids, frame_indices):
        return torch.stack([ev.features(by_id[str(q)], [int(f) for f in frames])
                            for q, frames in zip(question_ids, frame_indices)])
    return features


def localizer_score_cache(ws: Workspace, model: SeViLA) -> training.FrameLookup:
    """The frozen Localizer's score of every frame of every training video."""
    return _every_frame_lookup(ws, model, lambda ev, n: ev.frame_scores(n), "Localizer score",
                               LocalizerScorer.parts)


def answerer_logits_cache(ws: Workspace, model: SeViLA) -> training.FrameLookup:
    """The frozen Answerer's option logits from every frame alone of every training video, read out as the
    reverse chain's labels are (teacher-forced letters)."""
    return _every_frame_lookup(ws, model, lambda ev, n: ev.per_frame_logits(n, readout="teacher_forced"),
                               "Answerer logits", ("vision_encoder", "answerer", "llm"))


def train(ws: Workspace, name: str, stage: str, seed: int = 0, start_from: Sequence[str] = (), reuse: bool = True,
          **overrides) -> Path:
    """Train `stage` from the base model plus the bridges of the runs `start_from` (in order), save the bridge it
    trains to `ws.run_dir(name, seed)` and return it. An existing finished run with the same config AND the same
    starting weights is reused (the runs are deterministic), so rerunning a notebook does not retrain, while a
    new base model (e.g. a regenerated mini BLIP-2) or a retrained `start_from` run retrains. An interrupted run
    with the same config and starting weights resumes from its last checkpoint (`CHECKPOINT_EVERY`) instead of
    starting again at step 1 (`reuse=False` starts over)."""
    out = ws.run_dir(name, seed)
    config = recipe(ws, stage, seed, out / "train", **overrides)
    model, missing = ws.model_with(*start_from, seed=seed)
    if missing:
        raise FileNotFoundError(f"run {name}: start_from runs not found: {missing} (run them first)")
    start = start_fingerprint(model)
    done, stamp = out / checkpoints.BRIDGES_FILE, out / "start_fingerprint.txt"
    if (reuse and done.exists() and stamp.exists() and stamp.read_text() == start
            and training.TrainConfig.load(out / "train" / "train_config.json") == config):
        return out
    resume = reuse and partial_run(out / "train", config, start)
    stamp.unlink(missing_ok=True)  # whatever finished here before is being replaced
    if not resume:
        shutil.rmtree(out / "train", ignore_errors=True)  # another recipe or start: its checkpoints cannot resume
    (out / "train").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train" / "start_fingerprint.txt", start)
    dataset = dataset_for(ws, stage, config, seed)
    mini = ws.profile == "mini"  # no crop: the frozen parts' outputs per frame never change, so they are cached
    features = vit_feature_cache(ws, model, stage) if mini else None
    if stage == "train_answerer":
        cache = localizer_score_cache(ws, model) if mini and config.keyframe_source == "localizer" else None
        training.train_answerer(model, dataset, config, keyframe_scores=cache, resume=resume, vit_features=features)
    elif stage == "refine_localizer":
        cache = (answerer_logits_cache(ws, model) if mini and config.label_mode == "online"
                 and not config.labelling_dropout else None)
        training.refine_localizer(model, dataset, config, frame_answers=cache, resume=resume, vit_features=features)
    else:
        training.pretrain_localizer(model, dataset, config, resume=resume, vit_features=features)
    # Only the bridge this stage trains: the other one is whatever the run started from, and saving it would
    # let `Workspace.model_with(a, b)` overwrite a's trained bridge with b's untouched copy.
    checkpoints.save_bridges(model, out, which=TRAINED_BRIDGE[stage])
    stamp.write_text(start)  # written last: a run killed before this point is never reused
    return out


def partial_run(train_dir: Path, config: training.TrainConfig, start: str) -> bool:
    """Does `train_dir` hold an interrupted run of the same recipe from the same starting weights, with a
    checkpoint to resume from? (`train` then continues it instead of starting again at step 1.)"""
    started, saved = train_dir / "start_fingerprint.txt", train_dir / "train_config.json"
    return (started.exists() and started.read_text() == start and saved.exists()
            and training.TrainConfig.load(saved) == config and bool(checkpoint_candidates(train_dir)))


def start_fingerprint(model: SeViLA) -> str:
    """A hash of the weights a training run starts from: both bridges and the frozen ViT (the T5 is not hashed:
    it is the largest part and changes only together with the ViT, in a new base model)."""
    digest = hashlib.sha256(model_fingerprint(model).encode())
    for bridge in (model.localizer, model.answerer):
        hash_weights(digest, bridge)
    return digest.hexdigest()[:16]


def evaluate(ws: Workspace, runs: Sequence[str], seed: int = 0, variants: Sequence[str] = ("localizer",),
             num_frames: int = 32, num_keyframes: int = 4, split: str = "val", **labels) -> list[dict]:
    """Summaries (accuracy, hit-rate) of the base model plus `runs`' bridges, one row per variant. Each row also
    keeps its per-question outcomes (`OUTCOMES`), which `mean_over_seeds` and `effect` pair with a baseline's."""
    model, missing = ws.model_with(*runs, seed=seed)
    if missing:
        raise FileNotFoundError(f"runs not found: {missing}")
    ev = ws.evaluator(split, model=model)
    return [run_row(ev, v, num_frames, num_keyframes, variant=v, seed=seed, **labels) for v in variants]


def run_row(ev, variant: str, num_frames: int, num_keyframes: int, /, **labels) -> dict:
    """`ev.run(variant, n, k)` summarised in one row (`evaluation.summary`) with its per-question outcomes."""
    table = ev.run(variant, num_frames, num_keyframes)
    return with_outcomes(summary(table, **labels), table)


OUTCOMES = "outcomes"  # the column of per-question outcomes: {"accuracy": Series, "hit_rate": Series}


def with_outcomes(row: dict, table: pd.DataFrame) -> dict:
    """A summary row plus its questions' outcomes (1/0 correct; 1/0 relevant keyframe where moments are known)."""
    from . import metrics

    kinds = ("accuracy", "hit_rate") if "hit_rate" in row else ("accuracy",)
    return {**row, OUTCOMES: {kind: metrics.per_question(table, kind) for kind in kinds}}


def with_ci(rows: pd.DataFrame, column: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`rows` plus `<column>_low` / `<column>_high`: the percentile-bootstrap 95% CI of each row's `column`
    over its questions (one seed; for figures' error bars)."""
    import numpy as np

    kind, rng = _outcome_kind(column), np.random.default_rng(seed)
    bounds = []
    for outcomes in rows[OUTCOMES]:
        values = 100 * outcomes[kind].to_numpy()
        means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(1)
        bounds.append(np.quantile(means, [0.025, 0.975]))
    return rows.assign(**{f"{column}_low": [b[0] for b in bounds], f"{column}_high": [b[1] for b in bounds]})


def _outcome_kind(column: str) -> str:
    """The per-question outcome behind a summary column: hit_rate, or accuracy for the overall `*_avg` column."""
    if column == "hit_rate":
        return "hit_rate"
    if column.endswith("_avg"):
        return "accuracy"
    raise ValueError(f"no per-question outcome behind column {column!r}; use hit_rate or an *_avg column")


def _select(rows: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = pd.Series(True, index=rows.index)
    for column, value in where.items():
        mask &= rows[column] == value
    return rows[mask]


def paired_delta(rows: pd.DataFrame, column: str, baseline: dict, treatment: dict, seed: int = 0) -> dict:
    """treatment − baseline in `column` (points), paired per seed and per question and pooled over the seeds both
    settings ran (`metrics.paired_bootstrap_over_seeds`), with the per-seed differences."""
    from . import metrics

    kind = _outcome_kind(column)
    before, after = (_select(rows, where).set_index("seed") for where in (baseline, treatment))
    seeds = sorted(set(before.index) & set(after.index))
    pairs = [(after.loc[s, OUTCOMES][kind], before.loc[s, OUTCOMES][kind]) for s in seeds]
    d = metrics.paired_bootstrap_over_seeds(pairs, seed=seed)
    return {**d, "per_seed": [round(float(after.loc[s, column] - before.loc[s, column]), 2) for s in seeds]}


def mean_over_seeds(rows: pd.DataFrame, by: Sequence[str], baseline: dict | None = None,
                    compare: Sequence[str] = ("_avg", "hit_rate")) -> pd.DataFrame:
    """One row per setting (`by`): every numeric column as mean ± half-width of its 95% t-interval over seeds
    ("(1 seed)" where only one ran). With `baseline` (the column values of the baseline setting, e.g.
    {"row": "B"}), each other setting also gets "Δ<column> vs baseline": the paired-bootstrap difference with its
    95% CI, for the overall accuracy and the hit-rate (`compare`)."""
    from . import metrics

    numeric = [c for c in rows.select_dtypes("number").columns if c not in (*by, "seed", "questions", "options_truncated")]
    groups = rows.groupby(list(by), sort=False)
    out = groups[numeric].agg(metrics.mean_and_ci) if numeric else groups.size().to_frame().iloc[:, :0]
    out.insert(0, "seeds", groups.size())
    out = out.reset_index()
    if baseline is not None and OUTCOMES in rows:
        base_name = ", ".join(f"{k}={v}" for k, v in baseline.items())  # e.g. "row=B", "pretrained=False, ..."
        for column in [c for c in numeric if c.endswith(compare[0]) or c in compare[1:]][:2]:
            out[f"Δ{column} vs {base_name}"] = [
                "–" if all(key[b] == v for b, v in baseline.items()) else
                metrics.format_delta(paired_delta(rows, column, baseline, key))
                for key in out[list(by)].to_dict("records")]
    return out


def frame_labels(ws: Workspace, model: SeViLA, num_frames: int = 32) -> pd.DataFrame:
    """The reverse chain's pseudo-labels of `model`'s Answerer (official argmax rule) on the training questions,
    as a label table (`pseudo_labels.LABEL_COLUMNS`, with the gold option's probability for other rules: `relabel`):
    every frame of each video on short videos (the world; the same per-frame logits, kept in the score files, that
    online labels are read from during refinement), else n uniformly sampled frames."""
    ev = ws.evaluator("train", model=model)
    n = ev.whole_video_length() or num_frames
    logits = ev.per_frame_logits(n, readout="teacher_forced")
    rows = [row for s in ev.samples if s.question_id in logits
            for row in training.label_row_dicts({"question_id": [s.question_id],
                                                 "frame_indices": [ev.frame_indices(s, n)]},
                                                training.pseudo_labels(logits[s.question_id][None], [s.answer]))]
    return pd.DataFrame(rows, columns=list(training.LABEL_COLUMNS))


def relabel(table: pd.DataFrame, tau: float | None) -> pd.DataFrame:
    """A stored pseudo-label table under another policy: argmax (tau None) or P(gold) ≥ tau."""
    out = table.copy()
    out["label"] = out["correct"] if tau is None else out["gold_prob"] >= tau
    return out


def label_quality(table: pd.DataFrame, ws: Workspace) -> dict:
    """How well pseudo-labels match the true moments (only a world with known moments can tell)."""
    from .video import relevant_frame_mask

    by_id = {s.question_id: s for s in ws.questions["train"]}
    truth = []
    for q, f in zip(table["question_id"], table["frame_index"]):
        sample = by_id[q]
        truth.append(bool(sample.moments) and relevant_frame_mask([int(f)], ws.reader.info(sample).fps,
                                                                  sample.moments)[0])
    truth = pd.Series(truth, index=table.index)
    label = table["label"].astype(bool)
    return {"label_precision": round(100 * (truth[label].mean() if label.any() else float("nan")), 1),
            "label_recall": round(100 * (label[truth].mean() if truth.any() else float("nan")), 1),
            "positive_rate": round(100 * label.mean(), 1)}


def effect(rows: pd.DataFrame, metric: str, baseline: dict, treatment: dict) -> dict:
    """A claimed effect: treatment − baseline in `metric` (a column of `evaluate`'s rows), its paired-bootstrap
    95% CI pooled over the seeds both ran, the per-seed differences, and the verdict ("holds" only when the CI
    excludes 0 in the treatment's favour)."""
    from . import metrics

    d = paired_delta(rows, metric, baseline, treatment)
    seeds = len(d["per_seed"])
    before, after = (_select(rows, where) for where in (baseline, treatment))
    return {"metric": metric, "seeds": seeds, "questions": d["questions"],
            "baseline": round(float(before[metric].mean()), 2), "treatment": round(float(after[metric].mean()), 2),
            "delta": d, "per_seed": d["per_seed"], "verdict": metrics.verdict(d) if seeds else "not run"}


def write_effects_report(effects: dict[str, dict], path: Path, title: str, preamble: str = "") -> Path:
    """A markdown report of claimed effects with the numbers this run computed, saying plainly which hold."""
    from . import metrics

    lines = [f"# {title}", "", preamble, "", "| claim | metric | baseline | treatment | Δ [95% CI] | Δ per seed | "
             "seeds × questions | verdict |", "|---|---|---|---|---|---|---|---|"]
    for claim, e in effects.items():
        lines.append(f"| {claim} | {e['metric']} | {e['baseline']:.1f} | {e['treatment']:.1f} | "
                     f"{metrics.format_delta(e['delta'])} | {', '.join(f'{d:+.1f}' for d in e['per_seed'])} | "
                     f"{e['seeds']} × {e['questions']} | {e['verdict']} |")
    lines += ["", "Baseline and treatment: means over seeds (percent). The CI is a paired bootstrap over questions "
              "(2,000 draws), each draw averaged over the seeds; a claim holds only when its CI excludes 0.",
              "Every number above was computed by the notebook run that wrote this file; nothing is typed in."]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "\n".join(lines) + "\n")


def compare_selectors(ev, scorers: Sequence, rules: Sequence, num_frames: int = 32, num_keyframes: int = 4,
                      baseline: str = "uniform", seed: int = 0, label: str = "") -> tuple[dict[str, pd.DataFrame],
                                                                                       pd.DataFrame]:
    """Every scorer × rule on the evaluator's questions with the same Answerer (paper Table 6 and the field's
    selectors), plus the "uniform" variant (k frames sampled from the whole video) as the baseline. Returns the
    predictions tables by setting and one comparison row per setting (`metrics.compare_to_baseline`: accuracy per
    family, hit-rate, recall, paired-bootstrap Δ vs the baseline with 95% CIs)."""
    from . import metrics

    tables = {baseline: ev.run(baseline, num_frames, num_keyframes)}
    grid = ev.grid(scorers, rules, num_frames, num_keyframes)
    for (scorer, rule), table in grid.groupby(["scorer", "rule"], sort=False):
        tables[f"{label}{scorer} + {rule}"] = table.reset_index(drop=True)
    rows = metrics.compare_to_baseline(tables, baseline, seed=seed)
    return tables, rows


def where_rules_differ(rows: pd.DataFrame, family: str = "world_counting", reference: str = "top_k") -> str:
    """A sentence, computed from a comparison table, on how each scorer's rules compare with its top-k on one
    question family (counting: evidence spread over the video, where coverage-aware rules should differ)."""
    if family not in rows:
        return f"No {family} column in this table."
    parts = []
    for setting, value in zip(rows["setting"], rows[family]):
        if " + " not in setting or setting.endswith(reference):
            continue
        scorer = setting.split(" + ")[0]
        ref = rows.loc[rows["setting"] == f"{scorer} + {reference}", family]
        if len(ref):
            parts.append(f"{setting}: {value - float(ref.iloc[0]):+.1f}")
    return (f"{family} accuracy minus the same scorer's {reference} (points; a single-seed difference, see the CIs "
            f"above for noise): " + "; ".join(parts)) if parts else "nothing to compare"

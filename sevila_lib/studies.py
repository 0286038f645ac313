"""The paper's training studies, each one call from a notebook (`02_reverse_chain`, `05_ablation_threshold`):
train what a table needs for every seed (`experiments.train`: a finished run is reused), evaluate it on the val
questions, and return the rows, each with its per-question outcomes so tables can pair them with their baseline
(`experiments.mean_over_seeds`, `experiments.effect`).

| function              | paper                       | runs it trains (per seed)                                      |
|-----------------------|-----------------------------|----------------------------------------------------------------|
| `localizer_study`     | Table 5 (PT, SR, PT+SR)     | localizer_pretrained, localizer_refined, localizer_pt_sr       |
| `answerer_study`      | Table 3 rows A–G            | answerer_ft_random, answerer_finetuned                         |
| `training_frames_study` | Table 8                   | (those of Table 3)                                             |
| `iteration_study`     | Table 14                    | iteration{r}_answerer, iteration{r}_localizer                  |
| `threshold_study`     | the open question on τ      | labels_* and sr_* (stored pseudo-labels under each rule)       |
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from . import experiments as ex, training
from .workspace import Workspace

# The claims of the paper's §3.3 and Tables 3/5 this kit tests: (rows, metric, baseline, treatment).
LOCALIZER_CLAIMS = {
    "Localizer pre-training raises keyframe hit-rate": ("hit_rate", dict(pretrained=False, self_refined=False),
                                                        dict(pretrained=True, self_refined=False)),
    "Reverse chain (SR) raises keyframe hit-rate": ("hit_rate", dict(pretrained=False, self_refined=False),
                                                    dict(pretrained=False, self_refined=True)),
    "Reverse chain (SR) raises forward-chain QA accuracy": ("accuracy", dict(pretrained=False, self_refined=False),
                                                            dict(pretrained=False, self_refined=True)),
    "SR on top of PT raises keyframe hit-rate": ("hit_rate", dict(pretrained=True, self_refined=False),
                                                 dict(pretrained=True, self_refined=True)),
    "SR on top of PT raises forward-chain QA accuracy": ("accuracy", dict(pretrained=True, self_refined=False),
                                                         dict(pretrained=True, self_refined=True)),
}
ANSWERER_CLAIMS = {
    "Answerer fine-tuning raises QA accuracy (uniform 4 frames)": ("accuracy", {"row": "B"}, {"row": "E"}),
    "Answerer fine-tuning raises QA accuracy (with Localizer†)": ("accuracy", {"row": "C"}, {"row": "F"}),
    "The refined Localizer helps the fine-tuned Answerer (G vs E)": ("accuracy", {"row": "E"}, {"row": "G"}),
}


def _seeds(ws: Workspace, seeds: Sequence[int]) -> list[int]:
    return list(seeds)[:1] if ws.smoke else list(seeds)


def localizer_study(ws: Workspace, seeds: Sequence[int], num_frames: int = 32, num_keyframes: int = 4) -> pd.DataFrame:
    """Table 5: the zero-shot Answerer reading the top k of n frames of four Localizers — untrained, pre-trained
    on moment queries (PT, Localizer†), self-refined on the zero-shot Answerer's pseudo-labels (SR), both."""
    rows = []
    for seed in _seeds(ws, seeds):
        ex.train(ws, "localizer_pretrained", "pretrain_localizer", seed)
        ex.train(ws, "localizer_refined", "refine_localizer", seed)
        ex.train(ws, "localizer_pt_sr", "refine_localizer", seed, start_from=["localizer_pretrained"])
        for runs, pretrained, refined in (([], False, False), (["localizer_pretrained"], True, False),
                                          (["localizer_refined"], False, True), (["localizer_pt_sr"], True, True)):
            rows += ex.evaluate(ws, runs, seed, ("localizer",), num_frames, num_keyframes, pretrained=pretrained,
                                self_refined=refined)
    return pd.DataFrame(rows)


def answerer_study(ws: Workspace, seeds: Sequence[int], num_frames: int = 32, num_keyframes: int = 4) -> pd.DataFrame:
    """Table 3 rows A–G: A all n frames and B k uniform frames, zero-shot; C Localizer† and D the refined (PT+SR)
    Localizer → zero-shot Answerer; E the Answerer fine-tuned on random frames (one per segment) reading k
    uniform frames; F the Answerer fine-tuned on the frozen Localizer†'s keyframes, with Localizer†; G that
    Answerer with the refined Localizer. Needs `localizer_study`'s runs."""
    rows = []
    for seed in _seeds(ws, seeds):
        ex.train(ws, "answerer_ft_random", "train_answerer", seed, keyframe_source="random")
        ex.train(ws, "answerer_finetuned", "train_answerer", seed, start_from=["localizer_pretrained"])
        for row, runs, variant in (("A", [], "all"), ("B", [], "uniform"), ("C", ["localizer_pretrained"], "localizer"),
                                   ("D", ["localizer_pt_sr"], "localizer"), ("E", ["answerer_ft_random"], "uniform"),
                                   ("F", ["localizer_pretrained", "answerer_finetuned"], "localizer"),
                                   ("G", ["answerer_finetuned", "localizer_pt_sr"], "localizer")):
            rows += ex.evaluate(ws, runs, seed, (variant,), num_frames, num_keyframes, row=row)
    return pd.DataFrame(rows)


def training_frames_study(ws: Workspace, seeds: Sequence[int], num_frames: int = 32,
                          num_keyframes: int = 4) -> pd.DataFrame:
    """Table 8: the Answerer fine-tuned on random frames or on Localizer†'s keyframes, read with uniform frames
    or with Localizer†'s. Uses `answerer_study`'s runs."""
    rows = []
    for seed in _seeds(ws, seeds):
        for run, training_frames in (("answerer_ft_random", "random"), ("answerer_finetuned", "localizer_pretrained")):
            for variant, inference in (("uniform", "uniform"), ("localizer", "localizer_pretrained")):
                rows += ex.evaluate(ws, [run, "localizer_pretrained"], seed, (variant,), num_frames, num_keyframes,
                                    training_frames=training_frames, inference_frames=inference)
    return pd.DataFrame(rows)


def iteration_study(ws: Workspace, seeds: Sequence[int], iterations: int = 3, num_frames: int = 32,
                    num_keyframes: int = 4) -> pd.DataFrame:
    """Table 14: alternate Localizer refinement (labels of the current Answerer) and Answerer fine-tuning (on the
    current Localizer's keyframes), starting from `answerer_study`'s fine-tuned Answerer; each round's chain."""
    rows = []
    for seed in _seeds(ws, seeds):
        answerer, start = "answerer_finetuned", ["localizer_pretrained", "answerer_finetuned"]
        for r in range(1, (min(iterations, 2) if ws.smoke else iterations) + 1):
            if r > 1:
                answerer = f"iteration{r}_answerer"
                ex.train(ws, answerer, "train_answerer", seed, start_from=[f"iteration{r - 1}_localizer"])
                start = [f"iteration{r - 1}_localizer", answerer]
            ex.train(ws, f"iteration{r}_localizer", "refine_localizer", seed, start_from=start)
            rows += ex.evaluate(ws, [answerer, f"iteration{r}_localizer"], seed, ("localizer",), num_frames,
                                num_keyframes, iteration=r)
    return pd.DataFrame(rows)


def claims(localizers: pd.DataFrame, answers: pd.DataFrame) -> dict[str, dict]:
    """The paper's training claims measured on the studies' rows (`experiments.effect`); hit-rate claims only
    where moments are known (the world; not NExT-QA & co.)."""
    accuracy = next(c for c in answers.columns if c.endswith("_avg"))
    out = {}
    for table, claimed in ((answers, ANSWERER_CLAIMS), (localizers, LOCALIZER_CLAIMS)):
        for claim, (metric, before, after) in claimed.items():
            column = accuracy if metric == "accuracy" else metric
            if column in table.columns:
                out[claim] = ex.effect(table, column, before, after)
    return out


def threshold_study(ws: Workspace, taus: Sequence[float | None], label_frames: int, num_frames: int = 32,
                    num_keyframes: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudo-labels of the zero-shot Answerer (and of 02's fine-tuned one, when its seed-`seed` run exists) under
    the argmax rule (tau None) and P(gold) ≥ tau, their precision/recall against the true moments, and the
    Localizer refined on each from the untrained one, evaluated as in Table 5. Returns (labels, results rows)."""
    labellers = {"zero-shot Answerer": []}
    if not ws.model_with("answerer_finetuned", seed=seed)[1]:
        labellers["fine-tuned Answerer"] = ["answerer_finetuned"]
    labels, results = [], ex.evaluate(ws, [], seed, ("localizer",), num_frames, num_keyframes,
                                      labeller="(no refinement)", rule="-")
    for labeller, runs in labellers.items():
        tag = "finetuned" if runs else "zeroshot"
        folder = ws.run_dir(f"labels_{tag}", seed)
        config = ex.recipe(ws, "refine_localizer", seed, folder, label_mode="stored", num_frames=label_frames)
        table = training.compute_pseudo_labels(ws.model_with(*runs, seed=seed)[0],
                                               ex.dataset_for(ws, "refine_localizer", config, seed), config,
                                               folder / "labels.csv")
        for tau in taus:
            rule, relabelled = ("argmax" if tau is None else f"P(gold) ≥ {tau}"), ex.relabel(table, tau)
            path = folder / f"labels_{'argmax' if tau is None else tau}.csv"
            training.write_label_table(relabelled, path)
            stats = training.pseudo_label_stats(relabelled)
            labels.append(dict(labeller=labeller, rule=rule, tau=tau, **(ex.label_quality(relabelled, ws) if ws.world else {}),
                               no_positive_questions=round(100 * stats["no_positive_fraction"], 1)))
            name = f"sr_{'ft' if runs else 'zs'}_{'argmax' if tau is None else tau}"
            ex.train(ws, name, "refine_localizer", seed, label_mode="stored", num_frames=label_frames, labels_path=str(path))
            results += ex.evaluate(ws, [name], seed, ("localizer",), num_frames, num_keyframes, labeller=labeller,
                                   rule=rule)
    return pd.DataFrame(labels), pd.DataFrame(results)

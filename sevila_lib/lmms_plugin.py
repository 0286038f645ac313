"""lmms-eval plugin: the kit's chain as the lmms-eval model "sevila", the moments world as a local lmms-eval task.

The model runs the forward chain with any scorer × rule × k (paper §3.1 and Table 6); the tasks are the moments
world and a local copy of NExT-QA, asked and scored as lmms-eval's own nextqa_mc_test.

lmms-eval (EvolvingLMMs-Lab) compares video LMMs on shared tasks; its models receive a prompt and a video path
and return text. This model reads the task's own record (lmms-eval hands every model its documents), runs the
kit's `evaluation.Evaluator.select` on the video files, the same path as `Evaluator.select` in a notebook
(segment sampling, ViT features once per frame, scorer, rule, `chain.answer_keyframes`), and answers with the
option letter that lmms-eval's multiple-choice video QA tasks parse ("B"). Each task's selections are written
as the kit's frame-index JSON (`selection_files`), so they can be read back by `Evaluator.run_selections`.

    make lmms                                                # .venv-lmms with lmms-eval 0.7.3 beside .venv
    python -m sevila_lib.lmms_plugin export-world --out .cache/lmms/world --limit 20
    .venv-lmms/bin/lmms-eval --model sevila --model_args scorer=localizer,rule=aks,rule_depth=3,k=4 \
        --include_path .cache/lmms/world --tasks sevila_world_val --batch_size 8 --output_path .cache/lmms/out

(`--tasks <file>.yaml` does not work in lmms-eval 0.7.3: the file loads, then is reported missing; name the task
and pass its folder with `--include_path`.)

Model arguments (`--model_args key=value,...`): `blip2` ("mini", a BLIP-2 folder or hub id), `checkpoint`
(official LAVIS `.pth`), `bridges` (a folder of the kit's trained bridges), `scorer` and `rule` (names in
`scorers.SCORERS` / `selection.RULES`), `scorer_<param>` / `rule_<param>` for their parameters, `n` sampled
frames, `k` keyframes, `readout`, `selections_path`, `cache_dir` (ViT features on disk); `--device` and
`--batch_size` come from lmms-eval's own flags. Registered through the entry-point group `lmms_eval.models`
(pyproject.toml), so `--model sevila` works once the kit is installed in lmms-eval's environment.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path
from typing import Sequence

from . import paths, prompts
from .files import atomic_write_text
from .records import VideoQASample

try:
    from lmms_eval.api.model import lmms as _LmmsModel
except ImportError:  # the export commands need only the kit; the model itself needs `make lmms`
    _LmmsModel = object

MODEL_NAME = "sevila"
MODULE = "sevila_lib.lmms_plugin"  # not __name__, which is "__main__" under `python -m`
NEXTQA_FIELDS = ("video", "question", "qid", "type", "a0", "a1", "a2", "a3", "a4")

# lmms-eval's own nextqa utils (imported when a task uses its prompts or scoring) read os.environ["HF_HOME"]
# at import and fail when it is unset; the value set here is huggingface_hub's default, so nothing else moves.
os.environ.setdefault("HF_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                              "huggingface"))


def manifest():
    """The entry point lmms-eval 0.7.3 reads (`[project.entry-points."lmms_eval.models"]`): the model's manifest."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{MODULE}.Sevila")


# ---------------------------------------------------------------------------------------------------------
# lmms-eval requests -> the kit's samples
# ---------------------------------------------------------------------------------------------------------

_OPTION_LINE = re.compile(r"^\s*\(?([A-E])[.)]\s*(.+?)\s*$")


def parse_mc_context(context: str) -> tuple[str, list[str]]:
    """A multiple-choice prompt as lmms-eval's video QA tasks write it ("question\\nA. opt\\nB. opt ...", or
    "(A) opt") -> (question, options). For tasks whose documents do not carry NExT-QA's fields."""
    question, options = [], []
    for line in context.splitlines():
        match = _OPTION_LINE.match(line)
        if match and match.group(1) == prompts.OPTION_LETTERS[len(options)]:
            options.append(match.group(2))
        elif not options:
            question.append(line.strip())
    if len(options) < 2:
        raise ValueError(f"no lettered options (A. ... B. ...) in the prompt {context[:200]!r}")
    return " ".join(q for q in question if q), options


def request_sample(doc: dict, context: str, video: str, task: str, doc_id: int) -> VideoQASample:
    """The kit's sample for one lmms-eval document. Documents in NExT-QA's field layout (lmms-eval's nextqa MC
    task, the exported moments world) convert exactly as `datasets.read_nextqa` converts the csv, so question
    ids and prompts equal the kit's; any other multiple-choice task is read from its prompt."""
    from .datasets import _Bad, nextqa_sample

    if all(doc.get(key) is not None for key in NEXTQA_FIELDS):
        try:
            return nextqa_sample(doc, video)
        except _Bad as err:
            raise ValueError(f"task {task}, document {doc_id}: {err}") from None
    question, options = parse_mc_context(context)
    answer = doc.get("answer")
    return VideoQASample(f"{task}_{doc_id}", video, question, options,
                         answer if isinstance(answer, int) and 0 <= answer < len(options) else None)


def _video_path(visuals, task: str, doc_id: int) -> str:
    if not (isinstance(visuals, (list, tuple)) and len(visuals) == 1 and isinstance(visuals[0], (str, os.PathLike))):
        raise ValueError(f"task {task}, document {doc_id}: the sevila model reads one video file per question, "
                         f"the task gives {type(visuals).__name__} {str(visuals)[:120]}")
    return os.fspath(visuals[0])


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------

class Sevila(_LmmsModel):
    """lmms-eval model "sevila": Scorer → rule → keyframes → Answerer on each question's video, one letter out.

    Requests of one task are evaluated together by one `evaluation.Evaluator` (ViT features of a frame are
    computed once and shared by every scorer and by the Answerer); `batch_size` questions go through each
    scorer and Answerer call."""

    is_simple = True

    def __init__(self, blip2: str = "mini", checkpoint: str = "", bridges: str = "", scorer: str = "localizer",
                 rule: str = "top_k", n: int = 32, k: int = 4, readout: str = "official", selections_path: str = "",
                 cache_dir: str = "", device: str | None = None, batch_size: int | str | None = 8,
                 max_batch_size: int | None = None, **params):  # max_batch_size: lmms-eval passes it; unused
        if _LmmsModel is object:
            raise ImportError("the sevila lmms-eval model needs lmms-eval: run `make lmms` (see README)")
        super().__init__()
        import torch

        from .scorers import get_scorer
        from .selection import get_rule

        rule_params = {key[len("rule_"):]: v for key, v in params.items() if key.startswith("rule_")}
        scorer_params = {key[len("scorer_"):]: v for key, v in params.items() if key.startswith("scorer_")}
        unknown = sorted(key for key in params if not key.startswith(("rule_", "scorer_")))
        if unknown:
            raise ValueError(f"unknown sevila model arguments {unknown}; valid: blip2, checkpoint, bridges, scorer, "
                             f"rule, n, k, readout, selections_path, cache_dir, rule_<param>, scorer_<param>")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if scorer == "similarity":
            scorer_params.setdefault("device", self.device)
        self.scorer = get_scorer(scorer, **scorer_params)
        self.rule = get_rule(rule, **rule_params)
        self.num_frames, self.num_keyframes, self.readout = int(n), int(k), readout
        self.rule(torch.zeros(1, self.num_frames), self.num_keyframes)  # k <= n and the rule's parameters, now
        # "auto" (lmms-eval's flag) has no meaning here: the kit's evaluation default.
        self.batch_size = 8 if batch_size in (None, "auto") or str(batch_size).startswith("auto") else int(batch_size)
        self.weights = dict(blip2=str(blip2), checkpoint=str(checkpoint), bridges=str(bridges))
        self.selections_path = Path(selections_path) if selections_path else paths.CACHE_DIR / "lmms" / "selections"
        self.cache_dir = cache_dir or None
        self.model = self.load_model()
        self.written: dict[str, Path] = {}  # task -> its selections file

    def load_model(self):
        """The kit's SeViLA from the weight arguments: the shipped mini BLIP-2, or real BLIP-2 weights with the
        official `.pth` (`workspace.load_paper_model`), then any trained bridges (`checkpoints.load_bridges`)."""
        from .checkpoints import load_bridges
        from .mini import load_mini
        from .workspace import load_paper_model

        w = self.weights
        if w["blip2"] == "mini" and not w["checkpoint"]:
            model = load_mini(device=self.device)
        else:
            model, _ = load_paper_model(w["blip2"], w["checkpoint"], self.device)
        if w["bridges"]:
            load_bridges(model, w["bridges"])
        return model

    def generate_until(self, requests) -> list[str]:
        from loguru import logger  # lmms-eval's logger

        from .evaluation import Evaluator
        from .selection_files import write_selections
        from .video import VideoFileReader

        if not hasattr(self, "model"):  # lmms-eval's `clean()` drops nn.Module attributes after a run
            self.model = self.load_model()
        samples: dict[str, dict[tuple, VideoQASample]] = defaultdict(dict)  # task -> (split, doc_id) -> sample
        for request in requests:
            context, _gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            if (split, doc_id) not in samples[task]:
                doc = self.task_dict[task][split][doc_id]
                video = _video_path(doc_to_visual(doc), task, doc_id)
                samples[task][(split, doc_id)] = request_sample(doc, context, video, task, doc_id)
        letters: dict[tuple, str] = {}
        for task, by_doc in samples.items():
            ids = [s.question_id for s in by_doc.values()]
            if len(set(ids)) != len(ids):
                raise ValueError(f"task {task}: question ids repeat ({len(ids) - len(set(ids))} duplicates)")
            # Absolute video paths: the reader's root is unused ("" joins to the path itself).
            ev = Evaluator(self.model, list(by_doc.values()), VideoFileReader(""), cache_dir=self.cache_dir,
                           batch_size=self.batch_size, progress=False)
            table = ev.select(self.scorer, self.rule, self.num_frames, self.num_keyframes, self.readout)
            self.written[task] = write_selections(table, self.selections_file(task, len(samples)))
            logger.info(f"sevila: {task}: {len(table)} selections ({self.scorer.label} + {self.rule.label}, "
                        f"n={self.num_frames}, k={self.num_keyframes}) -> {self.written[task]}")
            prediction = dict(zip(table["question_id"], table["prediction"]))
            for key, sample in by_doc.items():
                letters[(task, *key)] = prompts.OPTION_LETTERS[int(prediction[sample.question_id])]
        return [letters[(r.args[4], r.args[5], r.args[3])] for r in requests]

    def selections_file(self, task: str, num_tasks: int = 1) -> Path:
        """Where a task's selections go: `selections_path` itself when it names one .json file and one task runs,
        else `<selections_path>/<task>.json` (or `<stem>_<task>.json` beside a named file)."""
        path = self.selections_path
        if path.suffix == ".json":
            return path if num_tasks == 1 else path.with_name(f"{path.stem}_{task}.json")
        return path / f"{task}.json"

    def loglikelihood(self, requests):
        raise NotImplementedError("the sevila model answers multiple-choice tasks through generate_until "
                                  "(an option letter); loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("the sevila model answers one multiple-choice question per video")


# ---------------------------------------------------------------------------------------------------------
# Local tasks: the moments world and a local NExT-QA
# ---------------------------------------------------------------------------------------------------------

def world_doc_to_visual(doc: dict) -> list[str]:
    """The exported world task's `doc_to_visual`: the question's mp4 file."""
    return [doc["video_path"]]


def world_doc(sample: VideoQASample, video_path: Path, num_frames: int, size: int) -> dict:
    """One world question in NExT-QA's field layout (the csv and lmms-eval's NExTQA "MC" set): question without
    its "?", options without their "." (`datasets.nextqa_sample` adds them back), type = the question family,
    qid = its index in the video, so the kit's question id `{type}_{video}_{qid}` comes back unchanged."""
    from .datasets import nextqa_sample

    family, video, qid = sample.question_id.rsplit("_", 2)
    doc = {"video": video, "frame_count": num_frames, "width": size, "height": size,
           "question": sample.question.removesuffix("?"), "answer": sample.answer, "qid": int(qid), "type": family,
           **{f"a{i}": option.removesuffix(".") for i, option in enumerate(sample.options)},
           "video_path": str(video_path)}
    back = nextqa_sample(doc)
    if (back.question_id, back.question, back.options) != (sample.question_id, sample.question, sample.options):
        raise ValueError(f"{sample.question_id}: does not survive NExT-QA's layout ({back})")
    return doc


def _yaml(lines: Sequence[str]) -> str:
    return "\n".join(lines) + "\n"


def export_world(out_dir: str | Path, split: str = "val", limit: int | None = None, seed: int = 0) -> Path:
    """Write the moments world's `split` as a local lmms-eval task in `out_dir`: videos as mp4 (the normal
    video path, `world.write_world_videos`), the questions as `world_<split>.jsonl` in NExT-QA's fields (the
    first `limit`), and `sevila_world_<split>.yaml`, which asks and scores exactly as lmms-eval's nextqa_mc_test
    (its `doc_to_text` and `process_results`). Returns the YAML, to pass to `lmms-eval --tasks`."""
    from .world import MomentsWorld, WorldConfig, write_world_videos

    out_dir = Path(out_dir).resolve()
    world = MomentsWorld(WorldConfig(seed=seed))
    samples = world.qa_samples(split)[:limit] if limit else world.qa_samples(split)
    write_world_videos(world, split, out_dir, samples=samples)  # the videos of these questions only
    cfg = world.config
    docs = [world_doc(s, out_dir / "videos" / f"{s.video}.mp4", cfg.num_frames, cfg.image_size) for s in samples]
    data = atomic_write_text(out_dir / f"world_{split}.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    task = f"sevila_world_{split}"
    nextqa = "lmms_eval.tasks.nextqa.utils"
    return atomic_write_text(out_dir / f"{task}.yaml", _yaml([
        f"# Written by `python -m sevila_lib.lmms_plugin export-world`: the moments world (seed {seed}, {split},",
        f"# {len(docs)} questions) in NExT-QA's fields, asked and scored as lmms-eval's nextqa_mc_test.",
        f"task: {task}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {data.name}",
        "test_split: test",
        "output_type: generate_until",
        f"doc_to_visual: !function {MODULE}.world_doc_to_visual",
        f"doc_to_text: !function {nextqa}.nextqa_doc_to_text_mc",
        f"doc_to_target: !function {nextqa}.nextqa_doc_to_target",
        f"process_results: !function {nextqa}.nextqa_mc_process_results",
        "metric_list:",
        "  - metric: exact_match",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 0.0.1",
        f"  world_seed: {seed}",
    ]))


def export_nextqa(csv_path: str | Path, map_path: str | Path, video_root: str | Path, out_dir: str | Path,
                  hf_home: str | Path | None = None) -> Path:
    """A local copy of NExT-QA as lmms-eval's own nextqa_mc_test: the csv's rows as `nextqa_<name>.jsonl` (its
    fields are the ones lmms-eval's NExTQA "MC" set carries), a YAML that includes lmms-eval's
    nextqa_mc_test.yaml and overrides only where the data comes from, and links
    `$HF_HOME/nextqa/NExTVideo/<video>.mp4` -> `<video_root>/<map[video]>.mp4`, where lmms-eval's nextqa utils
    look. Returns the YAML. Run lmms-eval with the same HF_HOME."""
    from .datasets import read_nextqa

    out_dir, video_root = Path(out_dir).resolve(), Path(video_root).resolve()
    spec = find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("export-nextqa includes lmms-eval's own task file: run it with .venv-lmms (`make lmms`)")
    included = Path(spec.submodule_search_locations[0]) / "tasks" / "nextqa" / "nextqa_mc_test.yaml"
    read_nextqa(csv_path, map_path)  # every row checked (fields, types, answers, map) before anything is written
    import pandas as pd

    rows = pd.read_csv(csv_path, dtype={"video": str}).to_dict("records")
    video_map = json.loads(Path(map_path).read_text())
    videos = Path(hf_home or os.environ["HF_HOME"]) / "nextqa" / "NExTVideo"
    videos.mkdir(parents=True, exist_ok=True)
    for video in dict.fromkeys(str(r["video"]) for r in rows):
        link, target = videos / f"{video}.mp4", video_root / f"{video_map[video]}.mp4"
        if not target.is_file():
            raise FileNotFoundError(f"{target}: video {video} of {csv_path} (see data/README.md)")
        if link.is_symlink() and link.resolve() != target:  # an earlier link elsewhere; a real file is kept
            link.unlink()
        if not link.exists():
            link.symlink_to(target)
    name = Path(csv_path).stem
    data = atomic_write_text(out_dir / f"nextqa_{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task = f"nextqa_mc_local_{name}"
    return atomic_write_text(out_dir / f"{task}.yaml", _yaml([
        "# Written by `python -m sevila_lib.lmms_plugin export-nextqa`: lmms-eval's nextqa_mc_test on a local csv.",
        f"include: {included}",
        f"task: {task}",
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {data.name}",
        "test_split: test",
    ]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevila_lib.lmms_plugin", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    world = sub.add_parser("export-world", help="the moments world as a local lmms-eval task")
    world.add_argument("--out", required=True, help="folder for the videos, the jsonl and the task YAML")
    world.add_argument("--split", default="val")
    world.add_argument("--limit", type=int, default=0, help="the first N questions and their videos (0: all)")
    world.add_argument("--seed", type=int, default=0)
    nextqa = sub.add_parser("export-nextqa", help="a local NExT-QA csv as lmms-eval's own nextqa_mc_test")
    nextqa.add_argument("--csv", required=True, help="e.g. data/nextqa/val.csv")
    nextqa.add_argument("--map", required=True, help="map_vid_vidorID.json")
    nextqa.add_argument("--videos", required=True, help="e.g. data/nextqa/videos")
    nextqa.add_argument("--out", required=True, help="folder for the jsonl and the task YAML")
    nextqa.add_argument("--hf-home", default=None, help="where lmms-eval looks for videos (default: $HF_HOME)")
    args = parser.parse_args(argv)
    if args.command == "export-world":
        path = export_world(args.out, args.split, args.limit or None, args.seed)
    else:
        path = export_nextqa(args.csv, args.map, args.videos, args.out, args.hf_home)
    print(f"task {path.stem}: {path}\nrun: lmms-eval --model sevila --model_args rule=top_k,k=4 "
          f"--include_path {path.parent} --tasks {path.stem}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

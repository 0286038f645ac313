"""One call that gives a notebook its model, questions, frames and output folders, for either profile.

* profile "mini" (the embedded default): the moments world (`world.py`) and the shipped mini BLIP-2 (`mini.py`);
* profile "paper": a real dataset read by `datasets.py` from its release files, real BLIP-2 weights (a local
  Hugging Face directory or hub id) and, optionally, the official `sevila_pretrained.pth` (Localizer†).

Every notebook's parameters cell declares `shared: dict = {}` (the parameters all notebooks share: `SHARED`) next
to its own few, and opens with `ws = open_workspace(**shared)`. The batch runner (`notebooks.py`) fills `shared`:
`-p NAME=VALUE` with a name of `SHARED` goes there. Introduced in `notebooks/00_setup.ipynb`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import environment, paths
from .evaluation import Evaluator
from .model import SeViLA
from .records import VideoQASample
from .video import FrameReader


# The parameters every notebook shares, with their defaults (the runner checks `-p` values against these types).
SHARED: dict = dict(
    profile="mini",  # "mini" (moments world + mini BLIP-2) or "paper" (real data and weights, GPU)
    device="cpu",  # "cpu", "cuda" or "auto"
    seed=0,  # seeds every RNG
    max_questions=0,  # cap on questions per split, 0 means all
    smoke=False,  # tiny run (the test suite): few questions, two training steps
    reports_dir="",  # where tables, figures and executed notebooks go; "" = the scratch folder (`paths.SCRATCH_DIR`)
    dataset="nextqa",  # profile paper: nextqa, star, how2qa, tvqa, vlep
    train_annotations="",  # profile paper: the dataset's train annotations
    val_annotations="",  # profile paper: the dataset's val annotations
    map_path="",  # profile paper, NExT-QA only: map_vid_vidorID.json
    video_root="",  # profile paper: folder of the dataset's videos
    moment_annotations="",  # profile paper: QVHighlights train jsonl (Localizer pre-training)
    moment_video_root="",  # profile paper: folder of the QVHighlights videos
    blip2="Salesforce/blip2-flan-t5-xl",  # profile paper: BLIP-2 checkpoint folder or hub id
    checkpoint="",  # profile paper: the official sevila_pretrained.pth (Localizer†), optional
)


def reports_folder(reports_dir: str | Path | None = "", **_) -> Path:
    """Where a run writes: `reports_dir`, or the scratch folder when it is empty, so an interactive run never
    overwrites the committed `reports/` (only the batch runner passes `reports/`)."""
    return _mkdir(Path(reports_dir) if reports_dir else paths.SCRATCH_DIR)


@dataclass
class Workspace:
    profile: str
    model: SeViLA
    reader: FrameReader
    questions: dict[str, list[VideoQASample]]  # split -> QA samples
    moments: dict[str, list[VideoQASample]]  # split -> moment-retrieval queries (may be empty)
    reports_dir: Path
    runs_dir: Path  # checkpoints and stored pseudo-labels (generated, not committed)
    device: str = "cpu"
    world: object | None = None
    notes: list[str] = field(default_factory=list)
    moment_reader: FrameReader | None = None  # frames of the moment-retrieval videos (default: `reader`)
    seed: int = 0
    smoke: bool = False
    options: dict = field(default_factory=dict)  # the `open_workspace` arguments: another process reopens it

    def __post_init__(self):
        self.moment_reader = self.moment_reader or self.reader

    @property
    def tables_dir(self) -> Path:
        return _mkdir(self.reports_dir / "tables")

    @property
    def figures_dir(self) -> Path:
        return _mkdir(self.reports_dir / "figures")

    def evaluator(self, split: str = "val", model: SeViLA | None = None, **kwargs) -> Evaluator:
        """An Evaluator over a split, sharing one on-disk ViT feature cache and one folder of per-frame score files
        per profile (so notebooks that score the same questions with the same Localizer score them once)."""
        kwargs.setdefault("cache_dir", paths.CACHE_DIR / "features" / self.profile)
        kwargs.setdefault("score_dir", paths.CACHE_DIR / "scores" / self.profile)
        kwargs.setdefault("progress", False)
        return Evaluator(model or self.model, self.questions[split], self.reader, **kwargs)

    def fresh_model(self) -> SeViLA:
        """The starting model with bridges of its own (for training runs that must not touch `self.model`); the
        frozen ViT and T5 are shared, never copied (`SeViLA.sharing_frozen_parts`)."""
        return self.model.sharing_frozen_parts()

    def run_dir(self, name: str, seed: int = 0) -> Path:
        """Where a training run of an earlier notebook keeps its bridges, e.g. "localizer_pretrained-seed0"."""
        return self.runs_dir / f"{name}-seed{seed}"

    def model_with(self, *runs: str | Path, seed: int = 0) -> tuple[SeViLA, list[str]]:
        """A copy of the starting model with the bridges of earlier training runs loaded, in order (a run name
        or a folder). Runs that do not exist yet are skipped and named in the returned list."""
        from .checkpoints import BRIDGES_FILE, load_bridges

        model, missing = self.fresh_model(), []
        for run in runs:
            folder = Path(run) if Path(run).is_absolute() else self.run_dir(str(run), seed)
            if (folder / BRIDGES_FILE).exists():
                load_bridges(model, folder)
            else:
                missing.append(str(run))
        return model, missing


def load_paper_model(blip2: str, checkpoint: str = "", device: str = "cpu") -> tuple[SeViLA, list[str]]:
    """Real BLIP-2 weights (a folder or hub id) as SeViLA, in the official precisions on a GPU (ViT fp16, T5
    bf16), optionally with the official LAVIS `.pth` (Localizer†) loaded; returns the model and load notes."""
    from . import checkpoints

    dtypes = dict(vision_dtype="float16", llm_dtype="bfloat16") if device.startswith("cuda") else {}
    model, _ = checkpoints.from_hf_blip2(blip2, device=device, **dtypes)
    notes = []
    if checkpoint:
        report = checkpoints.load_lavis(model, checkpoint, require=("localizer.",))
        notes.append(f"loaded {checkpoint}: {report}")
    return model, notes


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _limit(samples: Sequence[VideoQASample], max_questions: int | None) -> list[VideoQASample]:
    return list(samples)[:max_questions] if max_questions else list(samples)


def open_workspace(profile: str = "mini", *, device: str = "cpu", seed: int = 0, max_questions: int | None = None,
                   reports_dir: str | Path | None = None, world_seed: int = 0,
                   dataset: str = "nextqa", train_annotations: str = "", val_annotations: str = "",
                   map_path: str = "", video_root: str = "", moment_annotations: str = "", moment_video_root: str = "",
                   blip2: str = "Salesforce/blip2-flan-t5-xl", checkpoint: str = "", smoke: bool = False) -> Workspace:
    """Build the workspace of a profile (seeding every RNG with `seed`); `max_questions` caps every split (smoke
    runs, quick looks; 0 or None: all); `reports_dir` empty: the scratch folder (`reports_folder`)."""
    options = {name: value for name, value in locals().items()}  # before anything else is defined here
    environment.seed_everything(seed)
    reports_dir = reports_folder(reports_dir)
    runs_dir = _mkdir(paths.CACHE_DIR / "runs" / (f"{profile}-smoke" if smoke else profile))
    if profile == "mini":
        from .mini import load_mini
        from .world import MomentsWorld, WorldConfig, WorldFrameReader

        world = MomentsWorld(WorldConfig(seed=world_seed))
        questions = {split: _limit(world.qa_samples(split), max_questions) for split in ("train", "val", "test")}
        moments = {split: _limit(world.moment_samples(split), max_questions) for split in ("train", "val")}
        return Workspace(profile, load_mini(device=device), WorldFrameReader(world), questions, moments,
                         reports_dir, runs_dir, device, world, seed=seed, smoke=smoke, options=options)
    if profile == "paper":
        from .datasets import read_annotations
        from .video import VideoFileReader

        if not val_annotations or not video_root:
            raise ValueError("profile 'paper' needs val_annotations= and video_root= (see data/README.md)")
        model, notes = load_paper_model(blip2, checkpoint, device)
        questions = {"val": _limit(read_annotations(dataset, val_annotations, map_path or None), max_questions)}
        if train_annotations:
            questions["train"] = _limit(read_annotations(dataset, train_annotations, map_path or None), max_questions)
        moments = {}
        if moment_annotations:
            moments["train"] = _limit(read_annotations("qvh", moment_annotations), max_questions)
        return Workspace(profile, model, VideoFileReader(video_root), questions, moments, reports_dir, runs_dir,
                         device, None, notes, VideoFileReader(moment_video_root or video_root), seed, smoke, options)
    raise ValueError(f"unknown profile {profile!r}; use 'mini' or 'paper'")

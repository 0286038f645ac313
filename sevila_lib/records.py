"""The one sample record every reader produces and every loader consumes (official `Data Preprocess.ipynb`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VideoQASample:
    """One multiple-choice question about one video (or one moment-retrieval query, with no options).

    `start`/`end` are the clip window in seconds (None = whole video). `moments` are the relevant windows in
    seconds when known (QVHighlights, the mini world); a frame at index i is relevant if i / fps lies inside one
    of them, inclusive (the official QVHighlights labelling rule).

    `original_id` is the release file's own id when the kit's `question_id` is not it (TVQA's and How2QA's `qid`,
    whose kit ids are the official `TVQA_<line>` / `HOW2QA_<line>`): test-set submissions are keyed by it.
    `duration` is the video's length in seconds when the release states it (QVHighlights).
    """

    question_id: str
    video: str  # a path relative to the dataset's video root (without or with extension), or a world video id
    question: str | None
    options: list[str]
    answer: int | None
    question_type: str = ""
    dataset: str = "generic"  # "nextqa" | "star" | "how2qa" | "tvqa" | "vlep" | "qvh" | "world" | "generic"
    start: float | None = None
    end: float | None = None
    moments: list[tuple[float, float]] = field(default_factory=list)
    original_id: str | None = None
    duration: float | None = None
    source: str = ""  # "file:row" the record came from, for error messages

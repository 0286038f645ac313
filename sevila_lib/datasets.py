"""The five QA benchmarks and QVHighlights: annotation readers, the torch Dataset, and a checker
(official `Data Preprocess.ipynb`; official `data_utils.load_video`).

Readers take each dataset's ORIGINAL release files (or SeViLA's unified JSON) and return `VideoQASample`s
with the question ids, options and windows of the official conversion (`sevila_data/Data Preprocess.ipynb`,
official `Data Preprocess.ipynb`). Every problem in a file is reported as an `AnnotationError` naming the file, the
line/row and the question id — or, with `on_error="skip"`, recorded in `samples.skipped` while the good records are
kept.
A bad record is never replaced by another one (the official loader silently retries a random sample).

`VideoQADataset` turns samples into model inputs: frames sampled as in the official `load_video`, pixels as in
`video.frames_to_tensor`, and the prompt texts of `prompts.py`.

Check a download:  python -m sevila_lib.datasets check nextqa --annotations data/nextqa/val.csv \
                       --map data/nextqa/map_vid_vidorID.json --videos data/nextqa/videos
Introduced in `notebooks/01_forward_chain.ipynb`; folder layout in `data/README.md`.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import prompts
from .records import VideoQASample
from .video import (FrameReader, VideoError, VideoFileReader, frame_count, frames_to_tensor, relevant_frame_mask,
                    segment_frame_indices, window_overhang)

DATASETS = ("nextqa", "star", "how2qa", "tvqa", "vlep", "qvh")
NUM_OPTIONS = {"nextqa": 5, "star": 4, "how2qa": 4, "tvqa": 5, "vlep": 2}
NEXTQA_TYPES = ("CW", "CH", "TN", "TC", "TP", "DL", "DC", "DO")
STAR_TYPES = ("Interaction", "Sequence", "Prediction", "Feasibility")
QUESTION_GROUPS = {"T": "Temporal", "C": "Causal", "D": "Descriptive"}
# Question-id prefixes of the official conversion (official `Data Preprocess.ipynb`); the prefix is also the metric's
# type key (§3.4).
QID_PREFIX_DATASET = {"TVQA": "tvqa", "HOW2QA": "how2qa", "VLEP": "vlep", "QVHighlight": "qvh",
                      **{t: "nextqa" for t in NEXTQA_TYPES}, **{t: "star" for t in STAR_TYPES}}


def question_group(question_type: str) -> str:
    """NExT-QA's paper groups: "CW" -> "Causal", "TN" -> "Temporal", "DC" -> "Descriptive" (first letter)."""
    if question_type not in NEXTQA_TYPES:
        raise ValueError(f"{question_type!r} is not a NExT-QA question type {NEXTQA_TYPES}")
    return QUESTION_GROUPS[question_type[0]]


# ---------------------------------------------------------------------------------------------------------
# Errors and the result type
# ---------------------------------------------------------------------------------------------------------

class AnnotationError(ValueError):
    """A bad annotation record (or file); the message names the file, the line/row and the question id."""

    def __init__(self, path: str | os.PathLike, where: str, reason: str, question_id: str | None = None):
        self.path, self.where, self.reason, self.question_id = str(path), where, reason, question_id
        who = f" (question {question_id})" if question_id else ""
        super().__init__(f"{self.path}, {where}{who}: {reason}")


class Skip(NamedTuple):
    """One record left out with on_error="skip": where it came from, its question id, and why."""

    source: str
    question_id: str | None
    reason: str


class Samples(list):
    """A `list[VideoQASample]` that also carries the records skipped while reading (`.skipped`)."""

    def __init__(self, samples: Sequence[VideoQASample] = ()):
        super().__init__(samples)
        self.skipped: list[Skip] = []


class _Bad(Exception):
    """A record-level problem; `_collect` turns it into an AnnotationError or a Skip."""


@dataclass
class _Raw:
    """One record as found in the file, before conversion."""

    index: int  # 0-based record number: the official `i` of 'TVQA_' + i
    where: str  # "line 7", "row 3 (line 4)", "record 2 (line 1)"
    line: int  # first line of the record
    span: tuple[int, int]  # its characters in the text, to find non-UTF-8 bytes inside this record only
    data: Any = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Files -> raw records (json list, jsonl, csv), with line numbers and UTF-8 checks
# ---------------------------------------------------------------------------------------------------------

# Invalid UTF-8 bytes decoded with "surrogateescape" become these characters (one per byte).
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def _decode(path: Path) -> str:
    """The file's text; invalid UTF-8 bytes are kept as surrogates, so one bad record can be reported (or
    skipped) without losing the whole file. A BOM is kept too (as "\ufeff") so byte offsets stay exact."""
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as err:
        raise AnnotationError(path, "file", f"cannot read the annotation file ({err.strerror})") from err


def _bad_byte(text: str, span: tuple[int, int]) -> str | None:
    """Where the first invalid UTF-8 byte inside `span` is ("byte offset 812, line 3"), or None."""
    found = _BAD_BYTE.search(text, *span)
    if found is None:
        return None
    offset = len(text[:found.start()].encode("utf-8", "surrogateescape"))
    return f"byte offset {offset}, line {text.count(chr(10), 0, found.start()) + 1}"


def _jsonl_records(path: Path, text: str) -> Iterator[_Raw]:
    index, pos = 0, 0
    for number, line in enumerate(text.split("\n"), start=1):
        span, pos = (pos, pos + len(line)), pos + len(line) + 1
        if not line.strip():
            continue
        raw = _Raw(index, f"line {number}", number, span)
        try:
            raw.data = json.loads(line.removeprefix("\ufeff"))
        except json.JSONDecodeError as err:
            raw.error = f"malformed or truncated JSON line ({err.msg}, column {err.colno})"
        index += 1
        yield raw


def _json_list_records(path: Path, text: str) -> Iterator[_Raw]:
    """Records of a JSON list one by one, so each has a line number and a truncated file keeps its good part."""
    decoder, ws = json.JSONDecoder(), re.compile(r"[\s\ufeff]*")
    pos = ws.match(text, 0).end()
    if not text.startswith("[", pos):
        raise AnnotationError(path, "line 1", "expected a JSON list of records ('[' ...)")
    pos = ws.match(text, pos + 1).end()
    line, index = 1 + text.count("\n", 0, pos), 0
    if text.startswith("]", pos):
        return
    while True:
        where = f"record {index} (line {line})"
        try:
            data, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            yield _Raw(index, where, line, (pos, len(text)), error=f"malformed or truncated JSON ({err.msg}, "
                       f"line {err.lineno} column {err.colno}); the rest of the file cannot be read")
            return
        yield _Raw(index, where, line, (pos, end), data)
        after = ws.match(text, end).end()
        line, index = line + text.count("\n", pos, after), index + 1
        if text.startswith(",", after):
            pos = ws.match(text, after + 1).end()
            line += text.count("\n", after, pos)
        elif text.startswith("]", after) and not text[after + 1:].strip():
            return
        else:
            yield _Raw(index, f"line {line}", line, (after, len(text)),
                       error="malformed JSON: expected ',' or a final ']' after a record")
            return


def _csv_records(path: Path, text: str, required: Sequence[str], names: Sequence[str] | None = None) -> Iterator[_Raw]:
    """Rows of a csv as dicts. With `names`, the file has no header row and its fields are named by position."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)] + [len(text)]
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))  # doubled quotes ("") inside fields
    if names is None:
        header = next(reader, None)
        missing = [c for c in required if c not in (header or [])]
        if missing:
            raise AnnotationError(path, "line 1 (header)", f"missing column(s) {missing}; found {header}")
    else:
        header = list(names)
    last_line, index = reader.line_num, 0
    for row in reader:
        first, last_line = last_line + 1, reader.line_num
        if not row:
            continue
        # A short row keeps its leading fields, so the error can still name the question.
        span = (line_starts[first - 1], line_starts[min(last_line, len(line_starts) - 1)])
        raw = _Raw(index, f"row {index + 1} (line {first})", first, span, dict(zip(header, row)))
        if len(row) != len(header):
            expected = f"the header has {len(header)}" if names is None else \
                f"expected {len(header)} ({', '.join(header)})"
            raw.error = f"malformed or truncated row: {len(row)} fields, {expected}"
        index += 1
        yield raw


def _collect(path: str | os.PathLike, records: Callable[[Path, str], Iterator[_Raw]],
             convert: Callable[[dict, int], VideoQASample], question_id: Callable[[dict, int], str | None],
             on_error: str) -> Samples:
    """Convert raw records, check UTF-8 and duplicate ids, and raise or record every problem."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    text = _decode(path)
    any_bad_bytes = _BAD_BYTE.search(text) is not None
    samples, first_seen = Samples(), {}
    for raw in records(path, text):
        qid = question_id(raw.data if isinstance(raw.data, dict) else {}, raw.index)
        try:
            bad_byte = _bad_byte(text, raw.span) if any_bad_bytes else None
            if bad_byte:
                raise _Bad(f"text is not valid UTF-8 ({bad_byte})")
            if raw.error:
                raise _Bad(raw.error)
            if not isinstance(raw.data, dict):
                raise _Bad(f"expected a JSON object, got {type(raw.data).__name__}")
            sample = convert(raw.data, raw.index)
            if sample.question_id in first_seen:
                raise _Bad(f"duplicate question id (first at {first_seen[sample.question_id]})")
            if sample.original_id is not None and ("original", sample.original_id) in first_seen:
                # TVQA/How2QA ids come from the line number, but a test submission is keyed by the file's qid
                raise _Bad(f"duplicate qid {sample.original_id} (first at "
                           f"{first_seen[('original', sample.original_id)]})")
        except _Bad as bad:
            if on_error == "raise":
                raise AnnotationError(path, raw.where, str(bad), qid) from None
            samples.skipped.append(Skip(f"{path}, {raw.where}", qid, str(bad)))
            continue
        first_seen[sample.question_id] = raw.where
        if sample.original_id is not None:
            first_seen[("original", sample.original_id)] = raw.where
        sample.source = f"{path}:{raw.line}"
        samples.append(sample)
    return samples


# ---------------------------------------------------------------------------------------------------------
# Field helpers: each raises _Bad with a reason a person can act on
# ---------------------------------------------------------------------------------------------------------

def _get(record: dict, key: str) -> Any:
    if record.get(key) is None:
        raise _Bad(f"missing field {key!r}")
    return record[key]


def _text(record: dict, key: str) -> str:
    value = _get(record, key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ids such as NExT-QA's video or QVH's qid may be numbers
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"field {key!r} is empty or not text: {value!r}")
    return value


def _options(record: dict, count: int) -> list[str]:
    """Options a0..a{count-1}; exactly `count` must be present."""
    keys = [f"a{i}" for i in range(count)]
    absent = [k for k in keys if not isinstance(record.get(k), str) or not record[k].strip()]
    if absent:
        raise _Bad(f"wrong number of options: expected {count} ({keys[0]}..{keys[-1]}), "
                   f"{absent[0]} is missing or empty")
    if record.get(f"a{count}") not in (None, ""):
        raise _Bad(f"wrong number of options: expected {count}, found an extra a{count}")
    return [record[k] for k in keys]


def _answer(value: Any, num_options: int) -> int:
    """An option index given as int or numeric string (the official code does `int()`)."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"answer {value!r} is not an option index")
    if not 0 <= value < num_options:
        raise _Bad(f"answer index {value} out of range 0..{num_options - 1}")
    return value


def _seconds(value: Any, name: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise _Bad(f"{name} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _Bad(f"{name} {value!r} is not a finite, non-negative number of seconds")
    return seconds


def _window(start: Any, end: Any, name: str = "window") -> tuple[float, float]:
    start, end = _seconds(start, f"{name} start"), _seconds(end, f"{name} end")
    if end < start:
        raise _Bad(f"{name} [{start}, {end}] ends before it starts")
    return start, end


def _ts_window(ts: Any) -> tuple[float, float]:
    """TVQA/How2QA `ts` "20.16-25.12" (strings in the release)."""
    parts = ts.split("-") if isinstance(ts, str) else []
    if len(parts) != 2:
        raise _Bad(f"ts {ts!r} is not 'start-end' in seconds")
    return _window(parts[0], parts[1], "ts")


def _qid_type(question_id: str) -> str:
    return question_id.split("_")[0]  # the metric's type key (official `vqa.py`)


# ---------------------------------------------------------------------------------------------------------
# Readers of the original release files
# ---------------------------------------------------------------------------------------------------------

def nextqa_sample(rec: dict, video: str | None = None) -> VideoQASample:
    """One NExT-QA record (csv row, or a row of lmms-eval's NExTQA "MC" set: the same fields) as a sample:
    question_id `{type}_{video}_{qid}`, question + '?' and each option + '.' (the official conversion).
    `video` replaces the record's video id as the file to read (a mapped path); the answer may be absent
    (unlabelled test rows). Raises `_Bad` naming the field for a malformed record."""
    qtype, video_id = _text(rec, "type"), _text(rec, "video")
    qid = re.sub(r"^(\d+)\.0+$", r"\1", _text(rec, "qid"))  # "6.0" from a csv re-saved by pandas: the id is 6
    answer = rec.get("answer")
    return VideoQASample(
        question_id=f"{qtype}_{video_id}_{qid}", video=video or video_id,
        question=_text(rec, "question") + "?", options=[option + "." for option in _options(rec, 5)],
        answer=None if answer is None else _answer(answer, 5), question_type=qtype, dataset="nextqa")


def read_nextqa(csv_path: str | os.PathLike, map_path: str | os.PathLike | None = None,
                on_error: str = "raise") -> Samples:
    """NExT-QA csv (video, frame_count, width, height, question, answer, qid, type, a0..a4).

    question_id `{type}_{video}_{qid}`; video from `map_vid_vidorID.json` (e.g. "1104/3555755537"; the raw id
    if no map is given); question + '?' and each option + '.', as the official conversion does
    (official `Data Preprocess.ipynb`).
    """
    video_map = None
    if map_path is not None:
        try:
            video_map = json.loads(Path(map_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AnnotationError(map_path, "file", f"cannot read the video map ({err})") from err

    def question_id(rec: dict, index: int) -> str | None:
        if all(rec.get(k) for k in ("type", "video", "qid")):
            return f"{rec['type']}_{rec['video']}_{rec['qid']}"
        return None

    def convert(rec: dict, index: int) -> VideoQASample:
        qtype, video = _text(rec, "type"), _text(rec, "video")
        if qtype not in NEXTQA_TYPES:
            raise _Bad(f"question type {qtype!r} is not one of {NEXTQA_TYPES}")
        if video_map is not None and video not in video_map:
            raise _Bad(f"video {video} is not in {map_path}")
        _get(rec, "answer")  # the release files label every question
        return nextqa_sample(rec, video_map[video] if video_map is not None else None)

    columns = ["video", "question", "answer", "qid", "type"] + [f"a{i}" for i in range(5)]
    return _collect(csv_path, lambda p, t: _csv_records(p, t, columns), convert, question_id, on_error)


def read_star(json_path: str | os.PathLike, on_error: str = "raise") -> Samples:
    """STAR json list (question_id, question, video_id, start, end, answer, choices[{choice_id, choice}]).

    Options are `choices[i]['choice']` in file order; the answer is the index of the choice equal to the
    answer text. The type is the question_id prefix (Interaction, Sequence, Prediction, Feasibility).
    A missing `answer` (test split) gives answer None.
    """
    def convert(rec: dict, index: int) -> VideoQASample:
        qid = _text(rec, "question_id")
        if _qid_type(qid) not in STAR_TYPES:
            raise _Bad(f"question_id prefix {_qid_type(qid)!r} is not one of {STAR_TYPES}")
        choices = _get(rec, "choices")
        if not isinstance(choices, list) or len(choices) != 4:
            raise _Bad(f"wrong number of options: expected 4 choices, got "
                       f"{len(choices) if isinstance(choices, list) else choices!r}")
        if not all(isinstance(choice, dict) for choice in choices):
            raise _Bad(f"choices must be objects with a 'choice' text, got {choices!r}")
        options = [_text(choice, "choice") for choice in choices]
        answer = None
        if rec.get("answer") is not None:
            if rec["answer"] not in options:
                raise _Bad(f"answer {rec['answer']!r} is not one of the choices")
            answer = options.index(rec["answer"])
        start, end = _window(_get(rec, "start"), _get(rec, "end"))
        return VideoQASample(question_id=qid, video=_text(rec, "video_id"), question=_text(rec, "question"),
                             options=options, answer=answer, question_type=_qid_type(qid), dataset="star",
                             start=start, end=end)

    return _collect(json_path, _json_list_records, convert, lambda rec, i: rec.get("question_id"), on_error)


def _tv_style_reader(dataset: str, prefix: str) -> Callable[[dict, int], VideoQASample]:
    """TVQA and How2QA share one layout: vid_name, ts "s-e", q, a0..aN, answer_idx; id prefix + line index."""
    def convert(rec: dict, index: int) -> VideoQASample:
        n = NUM_OPTIONS[dataset]
        start, end = _ts_window(_get(rec, "ts"))
        answer = _answer(rec["answer_idx"], n) if rec.get("answer_idx") not in (None, "") else None
        original = str(rec["qid"]) if rec.get("qid") not in (None, "") else None
        return VideoQASample(question_id=f"{prefix}_{index}", video=_text(rec, "vid_name"),
                             question=_text(rec, "q"), options=_options(rec, n), answer=answer,
                             question_type=prefix, dataset=dataset, start=start, end=end, original_id=original)
    return convert


def read_tvqa(jsonl_path: str | os.PathLike, on_error: str = "raise") -> Samples:
    """TVQA jsonl (qid, q, a0..a4, answer_idx, vid_name, ts "s-e", show_name).

    question_id `TVQA_<i>` with i the 0-based line index, as the official conversion; the file's own `qid`
    (what a TVQA test-set submission is keyed by) is kept as `original_id`.
    """
    return _collect(jsonl_path, _jsonl_records, _tv_style_reader("tvqa", "TVQA"), lambda rec, i: f"TVQA_{i}", on_error)


HOW2QA_COLUMNS = ("vid_name", "ts", "q", "a0", "a1", "a2", "a3", "answer_idx")
# The original How2R-and-How2QA release csv (`how2QA_{train,val}_release.csv`): no header, seven fields.
HOW2QA_RELEASE_COLUMNS = ("youtube_id", "span", "wrong_1", "wrong_2", "wrong_3", "question", "answer")
HOW2QA_CLIP_SECONDS = 60


def _bracket_span(span: Any) -> tuple[float, float]:
    """How2QA release spans "[7.2:18.0]" (seconds in the full YouTube video)."""
    found = re.fullmatch(r"\s*\[\s*([^:\]]+?)\s*:\s*([^:\]]+?)\s*\]\s*", span) if isinstance(span, str) else None
    if found is None:
        raise _Bad(f"time span {span!r} is not '[start:end]' in seconds")
    return _window(found.group(1), found.group(2), "time span")


def _how2qa_release_sample(rec: dict, index: int) -> VideoQASample:
    """One row of the original release: the 60-s clip `{youtube_id}_{60c}_{60(c+1)}` holding the span's start
    (c = start // 60, the clip naming of the HERO/VALUE release and SeViLA's `clips/`), the span made relative to
    that clip, and the correct answer (the LAST field) placed at option index `i % 4` (i = row index) with the
    three wrong answers around it in file order. The release gives no option order; a fixed position for the
    correct answer would let an answerer with a letter bias score high, so the position rotates (balanced and
    deterministic). A span running past its clip's end is kept; `check` reports it as overhanging the video."""
    video, (start, end) = _text(rec, "youtube_id"), _bracket_span(_get(rec, "span"))
    wrong = [_text(rec, f"wrong_{i}") for i in (1, 2, 3)]
    position = index % 4
    options = wrong[:position] + [_text(rec, "answer")] + wrong[position:]
    offset = HOW2QA_CLIP_SECONDS * int(start // HOW2QA_CLIP_SECONDS)
    return VideoQASample(question_id=f"HOW2QA_{index}", video=f"{video}_{offset}_{offset + HOW2QA_CLIP_SECONDS}",
                         question=_text(rec, "question"), options=options, answer=position, question_type="HOW2QA",
                         dataset="how2qa", start=start - offset, end=end - offset)


def _has_header(path: str | os.PathLike, columns: Sequence[str]) -> bool:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            first = next(csv.reader(handle), [])
    except OSError:
        return True  # let the reader report the unreadable file
    return bool(first) and first[0].removeprefix("\ufeff") == columns[0]


def read_how2qa(path: str | os.PathLike, on_error: str = "raise") -> Samples:
    """How2QA in any of its three layouts; question_id `HOW2QA_<i>`, i = 0-based record index.

    `.jsonl`: the VALUE/HERO release (`how2qa_{split}_release.jsonl`): vid_name (a 60-s clip), ts "s-e", q,
    a0..a3, answer_idx, qid — the layout SeViLA converts, same as TVQA; `qid` is kept as `original_id`.
    `.csv` with the header `vid_name,ts,q,a0,a1,a2,a3,answer_idx`: the same fields as a table.
    `.csv` without a header: the original How2R-and-How2QA release (`how2QA_{train,val}_release.csv`), seven
    fields per row — YouTube id, span "[start:end]" in the full video, three wrong answers, the question, the
    correct answer text — mapped onto the 60-s clips as `_how2qa_release_sample` describes.
    """
    convert = _tv_style_reader("how2qa", "HOW2QA")
    qid = lambda rec, i: f"HOW2QA_{i}"  # noqa: E731
    if Path(path).suffix.lower() == ".csv":
        if _has_header(path, HOW2QA_COLUMNS):
            return _collect(path, lambda p, t: _csv_records(p, t, HOW2QA_COLUMNS), convert, qid, on_error)
        return _collect(path, lambda p, t: _csv_records(p, t, HOW2QA_RELEASE_COLUMNS, names=HOW2QA_RELEASE_COLUMNS),
                        _how2qa_release_sample, qid, on_error)
    return _collect(path, _jsonl_records, convert, qid, on_error)


def vlep_video(vid_name: str) -> str:
    """The video file (stem) the official loader opens for a VLEP `vid_name` (`MCVideoQADataset.__getitem__` in
    `lavis/datasets/datasets/mc_video_vqa_datasets.py`):
    a YouTube clip (':' in the name, e.g. "aBcDeFgHiJk_00:01:10_00:01:40") as is; a TV clip
    ("friends_s03e09_seg02_clip_07_ep") with its last 3 characters cut, i.e. the TVQA clip name. The official
    loader cuts 3 characters whatever they are, so a TV name that does not end in "_ep" raises instead of
    silently opening another clip."""
    if ":" in vid_name:
        return vid_name
    if not vid_name.endswith("_ep"):
        raise _Bad(f"VLEP TV clip name {vid_name!r} does not end in '_ep' (the official loader cuts the last 3 "
                   f"characters of names without ':' and would open {vid_name[:-3]!r})")
    return vid_name[:-3]


def vlep_vid_name(video: str) -> str:
    """The inverse of `vlep_video`: the `vid_name` to write so the official loader opens `video`."""
    return video if ":" in video else video + "_ep"


def read_vlep(jsonl_path: str | os.PathLike, on_error: str = "raise") -> Samples:
    """VLEP jsonl (example_id, vid_name, ts [s, e], events [e0, e1], answer).

    No question (the official conversion writes none; prompts use a fixed VLEP text). `video` is the file the
    official loader opens (`vlep_video`): TV clips ("..._ep", no ':') the TVQA clip with "_ep" removed, YouTube
    clips (':' in the id) their name.
    """
    def convert(rec: dict, index: int) -> VideoQASample:
        events, ts, vid = _get(rec, "events"), _get(rec, "ts"), _text(rec, "vid_name")
        if not isinstance(events, list) or len(events) != 2 or not all(isinstance(e, str) and e for e in events):
            raise _Bad(f"wrong number of options: expected 2 events, got {events!r}")
        if not isinstance(ts, list) or len(ts) != 2:
            raise _Bad(f"ts {ts!r} is not [start, end]")
        start, end = _window(ts[0], ts[1], "ts")
        answer = _answer(rec["answer"], 2) if rec.get("answer") is not None else None
        return VideoQASample(question_id=f"VLEP_{_text(rec, 'example_id')}", video=vlep_video(vid), question=None,
                             options=list(events), answer=answer, question_type="VLEP", dataset="vlep",
                             start=start, end=end)

    qid = lambda rec, i: f"VLEP_{rec['example_id']}" if "example_id" in rec else None  # noqa: E731
    return _collect(jsonl_path, _jsonl_records, convert, qid, on_error)


def _moments(windows: Any) -> list[tuple[float, float]]:
    if not isinstance(windows, list) or not all(isinstance(w, (list, tuple)) and len(w) == 2 for w in windows):
        raise _Bad(f"relevant_windows {windows!r} is not a list of [start, end]")
    return [_window(s, e, "relevant window") for s, e in windows]


def read_qvhighlights(jsonl_path: str | os.PathLike, on_error: str = "raise") -> Samples:
    """QVHighlights jsonl (qid, query, vid, duration, relevant_windows [[s, e], ...]).

    Moment-retrieval queries: no options, answer None, moments = relevant windows (absent in the test
    split, so empty there), question = the query, dataset "qvh", question_id `QVHighlight_<qid>`, the file's
    `qid` as `original_id` (submissions and `metrics.read_qvh_ground_truth` are keyed by it), `duration` kept.
    """
    def convert(rec: dict, index: int) -> VideoQASample:
        moments = _moments(rec["relevant_windows"]) if rec.get("relevant_windows") is not None else []
        duration = _seconds(rec["duration"], "duration") if rec.get("duration") is not None else None
        return VideoQASample(question_id=f"QVHighlight_{_text(rec, 'qid')}", video=_text(rec, "vid"),
                             question=_text(rec, "query"), options=[], answer=None,
                             question_type="QVHighlight", dataset="qvh", moments=moments,
                             original_id=_text(rec, "qid"), duration=duration)

    qid = lambda rec, i: f"QVHighlight_{rec['qid']}" if "qid" in rec else None  # noqa: E731
    return _collect(jsonl_path, _jsonl_records, convert, qid, on_error)


# ---------------------------------------------------------------------------------------------------------
# SeViLA's unified JSON (official `Data Preprocess.ipynb`): read and write
# ---------------------------------------------------------------------------------------------------------

def read_unified_json(path: str | os.PathLike, dataset: str | None = None, on_error: str = "raise") -> Samples:
    """SeViLA's converted JSON: a list of {video, qid, num_option, a0.., answer, question, start, end}.

    Every question record must have what the official loader reads (`MCVideoQADataset.__getitem__`): `num_option`
    and exactly that many options a0.., the number of options of its dataset (NExT-QA 5, STAR 4, How2QA 4, TVQA
    5, VLEP 2), an `answer` (int or numeric string), and a `question` key (null only for VLEP, whose prompt has
    no question; the official loader reads the key even then, outside its try block). A record missing one of these
    is an `AnnotationError` naming the file, the record and its qid (or is skipped and recorded). `start`/`end`:
    numbers or numeric strings. QVHighlights records (qid prefix "QVHighlight") have `query` and
    `relevant_windows` instead of options. VLEP's `video` is the official `vid_name` ("..._ep" for TV clips),
    turned into the file the official loader opens (`vlep_video`). Optional `original_qid` and `duration` are
    the kit's own additions (`write_unified_json`; the official loader ignores them).
    `dataset` None infers it per record from the qid prefix (e.g. "VLEP_3" -> "vlep", "CW_..." -> "nextqa").
    """
    def convert(rec: dict, index: int) -> VideoQASample:
        qid = _text(rec, "qid")
        name = dataset or QID_PREFIX_DATASET.get(_qid_type(qid), "generic")
        video = _text(rec, "video")
        original = str(rec["original_qid"]) if rec.get("original_qid") is not None else None
        duration = _seconds(rec["duration"], "duration") if rec.get("duration") is not None else None
        moments = _moments(rec["relevant_windows"]) if rec.get("relevant_windows") is not None else []
        is_query = name == "qvh" or ("num_option" not in rec and "a0" not in rec and "query" in rec)
        if is_query:
            return VideoQASample(question_id=qid, video=video, question=_text(rec, "query"), options=[], answer=None,
                                 question_type=_qid_type(qid), dataset=name, moments=moments, original_id=original,
                                 duration=duration)
        count = _get(rec, "num_option")
        if not isinstance(count, int) or isinstance(count, bool):
            raise _Bad(f"num_option {count!r} is not an integer")
        if name in NUM_OPTIONS and count != NUM_OPTIONS[name]:
            raise _Bad(f"wrong number of options for {name}: num_option is {count}, the layout has "
                       f"{NUM_OPTIONS[name]}")
        options = _options(rec, count)
        if "answer" not in rec or rec["answer"] is None:
            raise _Bad("missing field 'answer' (the official loader reads it for every question)")
        answer = _answer(rec["answer"], count)
        if "question" not in rec:
            raise _Bad("missing field 'question' (the official loader reads it for every record, VLEP included: "
                       "write null for VLEP)")
        question = rec["question"]
        if question is None and name != "vlep":
            raise _Bad("question is null (only VLEP records may have no question)")
        if question is not None and (not isinstance(question, str) or not question.strip()):
            raise _Bad(f"question {question!r} is empty or not text")
        if name == "vlep":
            video = vlep_video(video)
        start = _seconds(rec["start"], "start") if rec.get("start") is not None else None
        end = _seconds(rec["end"], "end") if rec.get("end") is not None else None
        if start is not None and end is not None:
            start, end = _window(start, end)
        return VideoQASample(question_id=qid, video=video, question=question, options=options,
                             answer=answer, question_type=_qid_type(qid), dataset=name, start=start, end=end,
                             moments=moments, original_id=original, duration=duration)

    return _collect(path, _json_list_records, convert, lambda rec, i: rec.get("qid"), on_error)


def write_unified_json(samples: Sequence[VideoQASample], path: str | os.PathLike) -> None:
    """Write samples as SeViLA's unified JSON (readable by `read_unified_json` and the official loader).

    `question` is always written (null for VLEP), which also avoids the official loader's VLEP KeyError
    (`MCVideoQADataset.__getitem__`); VLEP videos are written as the official `vid_name` (`vlep_vid_name`: "_ep"
    appended to TV clips), so the official loader's path rule opens the same file the kit opens; QVHighlights
    queries are written as `query` with their `relevant_windows`. `original_qid` and `duration` are written when
    known.
    """
    records = []
    for s in samples:
        video = vlep_vid_name(s.video) if s.dataset == "vlep" else s.video
        rec: dict[str, Any] = {"video": video, "qid": s.question_id}
        if s.options:
            rec["num_option"] = len(s.options)
            rec.update({f"a{i}": option for i, option in enumerate(s.options)})
        if s.answer is not None:
            rec["answer"] = s.answer
        rec["query" if s.dataset == "qvh" or not s.options else "question"] = s.question
        if s.start is not None:
            rec["start"] = s.start
        if s.end is not None:
            rec["end"] = s.end
        if s.moments:
            rec["relevant_windows"] = [list(m) for m in s.moments]
        if s.original_id is not None:
            rec["original_qid"] = s.original_id
        if s.duration is not None:
            rec["duration"] = s.duration
        records.append(rec)
    Path(path).write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_annotations(dataset: str, path: str | os.PathLike, map_path: str | os.PathLike | None = None,
                     on_error: str = "raise") -> Samples:
    """Dispatch to the reader of `dataset` ("nextqa", "star", "how2qa", "tvqa", "vlep", "qvh", "unified")."""
    if dataset == "nextqa":
        return read_nextqa(path, map_path, on_error)
    readers = {"star": read_star, "how2qa": read_how2qa, "tvqa": read_tvqa, "vlep": read_vlep,
               "qvh": read_qvhighlights, "unified": read_unified_json}
    if dataset not in readers:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS + ('unified',)}")
    return readers[dataset](path, on_error=on_error)


# ---------------------------------------------------------------------------------------------------------
# The torch Dataset
# ---------------------------------------------------------------------------------------------------------

class VideoQADataset(Dataset):
    """Samples -> model inputs: sampled frames (official `data_utils.load_video`) and the prompt texts (official
    `sevila.py` prompts).

    Item keys: frames (T, 3, S, S) float, frame_indices, question_id, qa_text, loc_text, target, answer,
    num_options, relevant (per-frame QVH labels if the sample has moments, else None), repeated.
    train=True samples frames at random and crops; the randomness of item `index` comes only from
    `numpy.random.default_rng([seed, epoch, index])`, so it is reproducible and differs per `set_epoch`.

    Video problems (missing, corrupt, zero frames, window outside the video) raise `VideoError` naming the
    path and question id; with on_error="skip" they are recorded in `self.skipped` and the item is None
    (dropped by `collate_video_qa`) — never replaced by another sample. Windows with fewer frames than
    `num_frames` repeat frames, and the question ids are recorded in `self.repeated`. Both records live in
    the process that loaded the item (with DataLoader workers, read `item["repeated"]` instead).
    """

    def __init__(self, samples: Sequence[VideoQASample], reader: FrameReader, num_frames: int, image_size: int,
                 train: bool = False, seed: int = 0, prompt: str = "official", on_error: str = "raise",
                 crop: bool = True):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.samples, self.reader, self.num_frames, self.image_size = list(samples), reader, num_frames, image_size
        self.train, self.seed, self.prompt, self.on_error, self.epoch = train, seed, prompt, on_error, 0
        self.crop = crop  # train mode's random resized crop (off for the 32x32 mini world: it cuts objects out)
        self.skipped: list[Skip] = []
        self.repeated: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        """Change the train-mode randomness (frame choice and crop) for the next pass."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _where(self, sample: VideoQASample) -> str:
        path = getattr(self.reader, "path", None)
        return path(sample) if callable(path) else str(sample.video)

    def _frames(self, sample: VideoQASample, rng: np.random.Generator | None) -> tuple[torch.Tensor, list[int], bool]:
        info = self.reader.info(sample)
        if sample.moments and all(int(s * info.fps) >= info.num_frames for s, _ in sample.moments):
            raise VideoError(self._where(sample), f"every relevant window starts after the video's end "
                             f"({info.num_frames / info.fps:.2f} s): no frame could be labelled relevant (a video "
                             f"cut short?)", sample.question_id)
        try:
            indices, repeated = segment_frame_indices(info.num_frames, info.fps, self.num_frames,
                                                      "random" if self.train else "uniform", rng,
                                                      sample.start, sample.end)
        except ValueError as err:
            raise VideoError(self._where(sample), str(err), sample.question_id) from err
        frames = self.reader.read(sample, indices)
        return frames_to_tensor(frames, self.image_size, self.train and self.crop, rng), indices, repeated

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        try:
            frames, indices, repeated = self._frames(sample, rng)
        except VideoError as err:
            if self.on_error == "raise":
                raise
            self.skipped.append(Skip(err.path, sample.question_id, err.reason))
            return None
        if repeated:
            self.repeated.append(sample.question_id)
        relevant = None
        if sample.moments:
            relevant = relevant_frame_mask(indices, self.reader.info(sample).fps, sample.moments)
        if sample.dataset == "qvh" or not sample.options:
            qa_text, loc_text = None, prompts.moment_query_text(sample.question or "", self.prompt)
        else:
            qa_text, loc_text = prompts.sample_qa_text(sample), prompts.sample_loc_text(sample, self.prompt)
        return {
            "frames": frames,  # (T, 3, S, S)
            "frame_indices": indices,
            "question_id": sample.question_id,
            "qa_text": qa_text,
            "loc_text": loc_text,
            "target": prompts.answer_target(sample.answer) if sample.answer is not None else None,
            "answer": sample.answer,
            "num_options": len(sample.options),
            "relevant": relevant,
            "repeated": repeated,
        }


def collate_video_qa(items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Batch items: frames stacked to (B, T, 3, S, S), every other key a list. Skipped items (None) are
    dropped; a batch with none left is None."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    batch: dict[str, Any] = {key: [item[key] for item in items] for key in items[0]}
    batch["frames"] = torch.stack(batch["frames"])  # (B, T, 3, S, S)
    return batch


# ---------------------------------------------------------------------------------------------------------
# The checker: python -m sevila_lib.datasets check <dataset> --annotations FILE [--videos DIR] ...
# ---------------------------------------------------------------------------------------------------------

MAX_LISTED = 20  # overhanging windows listed by `check` (they are common in real releases: a few seconds past the end)


def check(dataset: str, annotations: str, videos: str | None = None, map_path: str | None = None,
          num_frames: int = 32, extension: str = ".mp4", backend: str = "pyav", out=None) -> int:
    """Print counts and every problem of one annotation file (and its videos); return 1 if anything is wrong.

    With `videos`: missing and unreadable files, videos whose frames cannot all be decoded (each video's sampled
    frames are decoded, so a file cut short behind an intact header is caught), videos with fewer than
    `num_frames` frames, windows and relevant windows entirely outside their video (errors), and windows or
    relevant windows that overhang the video or start before it (reported, not errors: they are clamped, as the
    official loader does). An empty file is an error; questions without a gold answer are counted (a test split).
    """
    samples = read_annotations(dataset, annotations, map_path, on_error="skip")
    say = lambda text="": print(text, file=out or sys.stdout)  # noqa: E731
    say(f"{dataset}: {annotations}")
    say(f"  questions: {len(samples)}   videos: {len({s.video for s in samples})}")
    types = Counter(s.question_type for s in samples)
    say("  per type: " + ", ".join(f"{t} {n}" for t, n in sorted(types.items())))
    problems = len(samples.skipped)
    say(f"  annotation problems: {len(samples.skipped)}")
    for skip in samples.skipped:
        say(f"    {skip.source} (question {skip.question_id}): {skip.reason}")
    if not samples:  # an empty or header-only file: usually a download that failed
        say("  no questions in the file")
        problems += 1
    unlabelled = [s.question_id for s in samples if s.answer is None and s.options]
    if unlabelled:  # normal in a test split; accuracy and training refuse these questions
        say(f"  questions without a gold answer (a test split?): {len(unlabelled)}, e.g. "
            + ", ".join(unlabelled[:5]))
    if videos is not None:
        reader = VideoFileReader(videos, backend=backend, extension=extension)
        missing, unreadable, short_videos, outside, cut_short, overhang, shorter = [], [], [], [], [], [], []
        short_windows, checked, needed = 0, {}, {}
        for sample in samples:
            path = reader.path(sample)
            if path not in checked:
                try:
                    checked[path] = reader.info(sample)
                except VideoError as err:
                    checked[path] = None
                    (missing if not os.path.isfile(path) else unreadable).append(str(err))
                    continue
                if checked[path].num_frames < num_frames:
                    short_videos.append(f"{path}: {checked[path].num_frames} frames")
                seconds = checked[path].num_frames / checked[path].fps
                if sample.duration and seconds < sample.duration - 2:  # QVHighlights states each clip's length
                    shorter.append(f"{path}: {seconds:.2f} s, the release says {sample.duration:g} s")
            info = checked[path]
            if info is None:
                continue
            try:
                indices, repeated = segment_frame_indices(info.num_frames, info.fps, num_frames, "uniform",
                                                          start=sample.start, end=sample.end)
                if repeated and info.num_frames >= num_frames:
                    short_windows += 1
            except ValueError as err:
                outside.append(f"{path} (question {sample.question_id}): {err}")
                continue
            needed.setdefault(path, (sample, set()))[1].update(indices)
            clamped = window_overhang(info.num_frames, info.fps, sample.start, sample.end)
            if clamped:
                overhang.append(f"{path} (question {sample.question_id}): window [{sample.start}, {sample.end}] s "
                                f"{clamped}; clamped to the video, as the official loader does")
            for s_, e_ in sample.moments:
                if int(s_ * info.fps) >= info.num_frames:  # no frame is relevant: every label would be "no"
                    outside.append(f"{path} (question {sample.question_id}): relevant window [{s_}, {e_}] s starts "
                                   f"after the video's end ({info.num_frames / info.fps:.2f} s)")
                    continue
                clamped = window_overhang(info.num_frames, info.fps, s_, e_)
                if clamped:
                    overhang.append(f"{path} (question {sample.question_id}): relevant window [{s_}, {e_}] s "
                                    f"{clamped}")
        # A header can promise frames the file no longer holds (a download cut short): decode the frames the
        # questions would sample, which reaches the last one.
        for path, (sample, indices) in needed.items():
            try:
                reader.read(sample, sorted(indices))
            except VideoError as err:
                cut_short.append(f"{path}: {err.reason}")
        for title, found in (("missing videos", missing), ("unreadable videos", unreadable),
                             ("videos cut short or undecodable at a sampled frame", cut_short),
                             (f"videos with fewer than {num_frames} frames", short_videos),
                             ("windows outside their video", outside)):
            say(f"  {title}: {len(found)}")
            for line in found:
                say(f"    {line}")
            problems += len(found)
        if shorter:  # reported, not errors: the windows inside the video still label correctly
            say(f"  videos shorter than the release's duration (a download cut short?): {len(shorter)}")
            for line in shorter[:MAX_LISTED]:
                say(f"    {line}")
        say(f"  windows overhanging their video (clamped, as in the official code): {len(overhang)}")
        for line in overhang[:MAX_LISTED]:
            say(f"    {line}")
        if len(overhang) > MAX_LISTED:
            say(f"    ... and {len(overhang) - MAX_LISTED} more")
        say(f"  windows shorter than {num_frames} frames (frames repeat, as in the official code): "
            f"{short_windows}")
    say("  OK" if problems == 0 else f"  {problems} problem(s) found")
    return 0 if problems == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevila_lib.datasets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("check", help="count questions and report every annotation/video problem")
    cmd.add_argument("dataset", choices=DATASETS + ("unified",))
    cmd.add_argument("--annotations", required=True, help="the release file (csv/json/jsonl)")
    cmd.add_argument("--videos", help="the video folder; omit to check annotations only")
    cmd.add_argument("--map", help="NExT-QA map_vid_vidorID.json")
    cmd.add_argument("--num-frames", type=frame_count, default=32, help="frames sampled per question (n)")
    cmd.add_argument("--extension", default=".mp4")
    cmd.add_argument("--backend", default="pyav", choices=("pyav", "decord"))
    args = parser.parse_args(argv)
    try:
        return check(args.dataset, args.annotations, args.videos, args.map, args.num_frames, args.extension,
                     args.backend)
    except AnnotationError as err:  # a file that cannot be read at all
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

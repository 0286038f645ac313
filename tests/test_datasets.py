"""Annotation readers, bad-input reporting, the torch Dataset and the checker (sevila_lib/datasets.py)."""
from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sevila_lib import prompts
from sevila_lib.datasets import (AnnotationError, VideoQADataset, check, collate_video_qa, main, question_group,
                                 read_how2qa, read_nextqa, read_qvhighlights, read_star, read_tvqa,
                                 read_unified_json, read_vlep, write_unified_json)
from sevila_lib.paths import SAMPLE_VIDEOS_DIR
from sevila_lib.records import VideoQASample
from sevila_lib.video import VideoError, VideoFileReader, relevant_frame_mask, write_video

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
NEXTQA_CSV, NEXTQA_MAP = FIXTURES / "nextqa" / "val.csv", FIXTURES / "nextqa" / "map_vid_vidorID.json"
STAR_JSON = FIXTURES / "star" / "STAR_val.json"
TVQA_JSONL = FIXTURES / "tvqa" / "tvqa_val.jsonl"
VLEP_JSONL = FIXTURES / "vlep" / "vlep_dev_release.jsonl"
QVH_JSONL = FIXTURES / "qvh" / "highlight_val_release.jsonl"


# --- readers on their fixtures ----------------------------------------------------------------------------

def test_nextqa_ids_map_and_official_punctuation():
    samples = read_nextqa(NEXTQA_CSV, NEXTQA_MAP)
    assert [s.question_id for s in samples] == ["CW_9000000001_0", "TN_9000000001_1", "DO_9000000002_0",
                                                "CH_9000000002_1"]
    first = samples[0]
    assert first.video == "bikes" and first.question == "why do the riders lean forward?"
    assert first.options[0] == "to read a sign." and len(first.options) == 5 and first.answer == 1
    assert (first.question_type, first.dataset, first.start, first.end) == ("CW", "nextqa", None, None)
    assert samples[3].question == "why does the man look up, then down?"  # quoted csv field
    assert read_nextqa(NEXTQA_CSV)[0].video == "9000000001"  # no map: the raw id
    assert [question_group(s.question_type) for s in samples] == ["Causal", "Temporal", "Descriptive", "Causal"]


def test_question_group_rejects_other_types():
    with pytest.raises(ValueError, match="not a NExT-QA question type"):
        question_group("Interaction")


def test_star_answer_is_the_index_of_the_matching_choice():
    samples = read_star(STAR_JSON)
    assert [(s.question_id, s.question_type, s.answer) for s in samples] == [
        ("Interaction_T1_900", "Interaction", 1), ("Sequence_T3_901", "Sequence", 2),
        ("Feasibility_T5_902", "Feasibility", 0)]
    assert samples[0].options == ["The bag.", "The phone.", "The cup.", "The book."]
    assert (samples[0].video, samples[0].start, samples[0].end) == ("bikes", 1.5, 6.25)


def test_tvqa_and_how2qa_ids_are_line_indices_and_ts_is_split():
    tvqa = read_tvqa(TVQA_JSONL)
    assert [s.question_id for s in tvqa] == ["TVQA_0", "TVQA_1", "TVQA_2"]
    assert (tvqa[0].start, tvqa[0].end, tvqa[0].answer, len(tvqa[0].options)) == (20.16, 25.12, 2, 5)
    jsonl = read_how2qa(FIXTURES / "how2qa" / "how2qa_val_release.jsonl")
    csv_ = read_how2qa(FIXTURES / "how2qa" / "val.csv")
    assert [s.question_id for s in jsonl] == ["HOW2QA_0", "HOW2QA_1"]
    assert [dataclasses.replace(s, source="", original_id=None) for s in jsonl] == \
        [dataclasses.replace(s, source="") for s in csv_]
    assert (jsonl[1].start, jsonl[1].end, jsonl[1].options[2], jsonl[1].dataset) == (2.0, 9.0, "On a road.", "how2qa")
    # The release's own ids are kept: TVQA test-set submissions are keyed by them.
    assert [s.original_id for s in tvqa] == ["800001", "800002", "800003"]
    assert [s.original_id for s in jsonl] == ["how2qa-inv-0", "how2qa-inv-1"]


def test_how2qa_original_release_csv_without_header():
    samples = read_how2qa(FIXTURES / "how2qa" / "how2QA_val_release.csv")
    assert [s.question_id for s in samples] == ["HOW2QA_0", "HOW2QA_1", "HOW2QA_2"]
    first, second, third = samples
    # "[7.2:18.0]" in the full video -> the 60-s clip holding its start, window relative to that clip.
    assert (first.video, first.start, first.end) == ("Ijg8lInIsTE_0_60", 7.2, 18.0)
    assert (second.video, second.start, second.end) == ("Ijg8lInIsTE_60_120", 15.5, 32.0)
    assert (third.video, third.start, third.end) == ("xYz_12-AbC0_60_120", 58.0, 66.5)  # overhangs its clip
    # The correct answer is the LAST field; it goes to option i % 4, the wrong answers around it in file order.
    assert (first.answer, first.options) == (0, ["A wrench.", "A hammer.", "A spoon.", "A brush."])
    assert second.answer == 1 and second.options[1] == "She picks up the drill."
    assert third.answer == 2 and third.options == ["On a beach.", "Indoors.", "On a road.", "On a roof."]
    # Doubled quotes inside quoted fields.
    assert second.question == 'What does the woman do after saying "ready"?'
    assert second.options[0] == 'She says "done" and leaves.'
    assert (first.question_type, first.dataset, first.original_id) == ("HOW2QA", "how2qa", None)


def test_vlep_has_no_question_and_official_video_names():
    samples = read_vlep(VLEP_JSONL)
    assert [s.question_id for s in samples] == ["VLEP_70001", "VLEP_70002", "VLEP_70003"]
    assert samples[0].video == "friends_s03e09_seg02_clip_07"  # TV clip: "_ep" dropped -> TVQA clip name
    assert samples[2].video == "aBcDeFgHiJk_00:01:10_00:01:40"  # YouTube clip: kept
    assert samples[0].question is None and samples[0].options == ["He opens the fridge.", "He drops the keys."]
    assert (samples[0].start, samples[0].end, samples[0].answer) == (38.18, 40.65, 1)


def official_vlep_path(video: str, tv_root: str = "tvqa", youtube_root: str = "youtube") -> str:
    """The official loader's VLEP path rule (official `Data Preprocess.ipynb`): ':' -> YouTube clip folder, else cut 3 characters."""
    return f"{youtube_root}/{video}.mp4" if ":" in video else f"{tv_root}/{video[:-3]}.mp4"


def test_vlep_unified_json_opens_the_same_files_as_the_official_loader(tmp_path):
    samples = read_vlep(VLEP_JSONL)
    # Kit -> unified JSON -> official loader: the official rule must land on the file the kit opens.
    write_unified_json(samples, tmp_path / "vlep.json")
    records = json.loads((tmp_path / "vlep.json").read_text())
    assert [r["video"] for r in records] == ["friends_s03e09_seg02_clip_07_ep", "bikes_ep",
                                             "aBcDeFgHiJk_00:01:10_00:01:40"]
    tv, youtube = VideoFileReader("tvqa"), VideoFileReader("youtube")
    for sample, record in zip(samples, records):
        kit = (youtube if ":" in sample.video else tv).path(sample)
        assert official_vlep_path(record["video"]) == kit
    assert records[0]["question"] is None  # the key the official loader reads, present
    # Official unified JSON -> kit: the kit opens what the official loader opens.
    back = read_unified_json(tmp_path / "vlep.json")
    assert [s.video for s in back] == ["friends_s03e09_seg02_clip_07", "bikes", "aBcDeFgHiJk_00:01:10_00:01:40"]
    assert [dataclasses.replace(s, source="") for s in back] == [dataclasses.replace(s, source="") for s in samples]
    # A TV name without "_ep": the official loader would cut "ine" and open another file; the kit refuses.
    bad = write_bad(tmp_path, "v.jsonl", json.dumps({"example_id": 9, "vid_name": "carphone_pristine",
                                                     "ts": [0, 1], "events": ["a", "b"], "answer": 0}))
    with pytest.raises(AnnotationError, match=r"line 1 \(question VLEP_9\): VLEP TV clip name 'carphone_pristine' "
                                              r"does not end in '_ep'.*'carphone_prist'"):
        read_vlep(bad)


def test_qvhighlights_queries_have_moments_and_no_options():
    val = read_qvhighlights(QVH_JSONL)
    assert val[0].question_id == "QVHighlight_9001" and val[0].dataset == "qvh"
    assert (val[0].original_id, val[0].duration, val[1].duration) == ("9001", 10.0, 4.0)
    assert val[0].moments == [(2.0, 4.0), (6.5, 8.0)] and val[0].options == [] and val[0].answer is None
    test = read_qvhighlights(FIXTURES / "qvh" / "highlight_test_release.jsonl")
    assert test[0].moments == []


def test_unified_json_reads_string_answers_and_infers_datasets():
    samples = read_unified_json(FIXTURES / "unified" / "val.json")
    assert [(s.dataset, s.question_type, s.answer) for s in samples] == [
        ("nextqa", "TC", 2), ("vlep", "VLEP", 0), ("qvh", "QVHighlight", None)]
    assert (samples[1].question, samples[1].start, samples[1].end) == (None, 0.5, 3.2)
    assert samples[2].moments == [(1.0, 2.5)] and samples[2].question == "A rider passes a sign."


def test_unified_json_round_trip_for_every_dataset(tmp_path):
    samples = (read_nextqa(NEXTQA_CSV, NEXTQA_MAP) + read_star(STAR_JSON) + read_tvqa(TVQA_JSONL)
               + read_how2qa(FIXTURES / "how2qa" / "how2qa_val_release.jsonl") + read_vlep(VLEP_JSONL)
               + [dataclasses.replace(s, question_id=f"{s.question_id}_release")
                  for s in read_how2qa(FIXTURES / "how2qa" / "how2QA_val_release.csv")]
               + read_qvhighlights(QVH_JSONL))
    write_unified_json(samples, tmp_path / "all.json")
    back = read_unified_json(tmp_path / "all.json")
    assert [dataclasses.replace(s, source="") for s in back] == [dataclasses.replace(s, source="") for s in samples]
    records = json.loads((tmp_path / "all.json").read_text())
    first = records[0]
    assert first["qid"] == "CW_9000000001_0" and first["num_option"] == 5 and first["answer"] == 1
    assert "question" in first and all("question" in r for r in records if "num_option" in r)


# --- bad input: every problem names file, line/row and question ---------------------------------------------

def tvqa_line(**changes) -> str:
    record = {"a0": "x", "a1": "y", "a2": "z", "a3": "u", "a4": "v", "answer_idx": 1, "q": "What?",
              "qid": 1, "ts": "1.0-2.0", "vid_name": "clip", "show_name": "Show"}
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not None}, ensure_ascii=False)


def nextqa_row(qid: int = 0, answer: int = 1, video: str = "9000000001") -> str:
    return f"{video},250,640,272,why,{answer},{qid},CW,o0,o1,o2,o3,o4"


NEXTQA_HEADER = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4"
STAR_RECORD = {"question_id": "Interaction_T1_1", "question": "What?", "video_id": "V1", "start": 0, "end": 2,
               "answer": "b", "choices": [{"choice_id": i, "choice": c} for i, c in enumerate("abcd")]}

UNIFIED_RECORD = {"video": "s01e01_seg01_clip_00", "qid": "TVQA_0", "num_option": 5, "a0": "a", "a1": "b", "a2": "c",
                  "a3": "d", "a4": "e", "answer": 0, "question": "q?", "start": "1.0", "end": "2.5"}

# name -> (file name, content as bytes, reader, where the problem is, question id, reason pattern)
BAD_INPUTS = {
    "bad JSON line": ("t.jsonl", f"{tvqa_line()}\n{{\"q\": \"What?\", \"a0\n{tvqa_line(qid=2)}\n",
                      read_tvqa, "line 2", "TVQA_1", "malformed or truncated JSON line"),
    "truncated JSON list": ("s.json", "[" + json.dumps(STAR_RECORD) + ",\n" + json.dumps(STAR_RECORD)[:40],
                            read_star, r"record 1 \(line 2\)", None, "malformed or truncated JSON"),
    "truncated csv row": ("n.csv", f"{NEXTQA_HEADER}\n{nextqa_row()}\n{nextqa_row(1)[:-6]}\n",
                          read_nextqa, r"row 2 \(line 3\)", "CW_9000000001_1", "malformed or truncated row"),
    "missing field": ("v.jsonl", json.dumps({"example_id": 5, "vid_name": "c", "events": ["a", "b"], "answer": 0}),
                      read_vlep, "line 1", "VLEP_5", "missing field 'ts'"),
    "answer out of range (tvqa)": ("t.jsonl", tvqa_line(answer_idx=7), read_tvqa, "line 1", "TVQA_0",
                                   r"answer index 7 out of range 0\.\.4"),
    "answer out of range (nextqa)": ("n.csv", f"{NEXTQA_HEADER}\n{nextqa_row(answer=5)}\n", read_nextqa,
                                     r"row 1 \(line 2\)", "CW_9000000001_0", r"answer index 5 out of range"),
    "answer not a choice (star)": ("s.json", json.dumps([{**STAR_RECORD, "answer": "e"}]), read_star,
                                   r"record 0 \(line 1\)", "Interaction_T1_1", "'e' is not one of the choices"),
    "too few options (tvqa)": ("t.jsonl", tvqa_line(a4=None), read_tvqa, "line 1", "TVQA_0",
                               r"wrong number of options: expected 5 \(a0\.\.a4\), a4 is missing"),
    "too many options (how2qa)": ("h.jsonl", tvqa_line(), read_how2qa, "line 1", "HOW2QA_0",
                                  "wrong number of options: expected 4, found an extra a4"),
    "wrong number of choices (star)": ("s.json", json.dumps([{**STAR_RECORD, "choices": STAR_RECORD["choices"][:3]}]),
                                       read_star, "record 0", "Interaction_T1_1", "expected 4 choices, got 3"),
    "wrong number of events (vlep)": ("v.jsonl", json.dumps({"example_id": 5, "vid_name": "c", "ts": [0, 1],
                                                             "events": ["a", "b", "c"], "answer": 0}),
                                      read_vlep, "line 1", "VLEP_5", "expected 2 events"),
    "num_option mismatch (unified)": ("u.json", json.dumps([{"video": "v", "qid": "TVQA_0", "num_option": 5,
                                                             "a0": "a", "a1": "b", "a2": "c", "a3": "d",
                                                             "answer": 0, "question": "q"}]),
                                      read_unified_json, "record 0", "TVQA_0", "a4 is missing"),
    "question missing (unified)": ("u.json", json.dumps([{**UNIFIED_RECORD, "question": None}]), read_unified_json,
                                   "record 0", "TVQA_0", "question is null"),
    "question key absent (unified vlep)": ("u.json", json.dumps([{"video": "c_ep", "qid": "VLEP_4", "num_option": 2,
                                                                   "a0": "a", "a1": "b", "answer": 1}]),
                                           read_unified_json, "record 0", "VLEP_4", "missing field 'question'"),
    "answer missing (unified)": ("u.json", json.dumps([{k: v for k, v in UNIFIED_RECORD.items() if k != "answer"}]),
                                 read_unified_json, "record 0", "TVQA_0", "missing field 'answer'"),
    "num_option missing (unified)": ("u.json", json.dumps([{k: v for k, v in UNIFIED_RECORD.items()
                                                            if k != "num_option"}]),
                                     read_unified_json, "record 0", "TVQA_0", "missing field 'num_option'"),
    "options do not match the layout (unified)": ("u.json", json.dumps([{k: v for k, v in UNIFIED_RECORD.items()
                                                                         if k != "a4"} | {"num_option": 4}]),
                                                  read_unified_json, "record 0", "TVQA_0",
                                                  "wrong number of options for tvqa: num_option is 4, the layout "
                                                  "has 5"),
    "bad time span (how2qa release csv)": ("h.csv", "vid1,[7.2-18.0],w1,w2,w3,q?,right\n", read_how2qa,
                                           r"row 1 \(line 1\)", "HOW2QA_0", r"time span '\[7\.2-18\.0\]' is not"),
    "short row (how2qa release csv)": ("h.csv", "vid1,[7.2:18.0],w1,w2,w3,q?,right\nvid2,[1:2],w1,w2,q?\n",
                                       read_how2qa, r"row 2 \(line 2\)", "HOW2QA_1",
                                       r"5 fields, expected 7 \(youtube_id, span"),
    "duplicate question id (nextqa)": ("n.csv", f"{NEXTQA_HEADER}\n{nextqa_row()}\n{nextqa_row(1)}\n{nextqa_row()}\n",
                                       read_nextqa, r"row 3 \(line 4\)", "CW_9000000001_0",
                                       r"duplicate question id \(first at row 1 \(line 2\)\)"),
    "duplicate qid (tvqa: ids from line numbers)": ("t.jsonl", f"{tvqa_line(qid=12)}\n{tvqa_line(qid=12)}\n", read_tvqa,
                                                    "line 2", "TVQA_1", r"duplicate qid 12 \(first at line 1\)"),
    "duplicate question id (star)": ("s.json", json.dumps([STAR_RECORD, STAR_RECORD]), read_star, "record 1",
                                     "Interaction_T1_1", "duplicate question id"),
    "non-UTF-8 (tvqa)": ("t.jsonl", tvqa_line() + "\n" + tvqa_line(qid=2, q="Caf\udcffe?"), read_tvqa, "line 2",
                         "TVQA_1", None),
    "non-UTF-8 (nextqa)": ("n.csv", f"{NEXTQA_HEADER}\n{nextqa_row()}\n" + nextqa_row(1).replace("why", "wh\udcffy"),
                           read_nextqa, r"row 2 \(line 3\)", "CW_9000000001_1", None),
    "non-UTF-8 (star)": ("s.json", "[\n" + json.dumps(STAR_RECORD) + ",\n"
                         + json.dumps({**STAR_RECORD, "question_id": "Sequence_T1_2", "question": "Wh\udcffat?"},
                                      ensure_ascii=False) + "\n]",
                         read_star, r"record 1 \(line 3\)", "Sequence_T1_2", None),
    "non-UTF-8 (star, one line)": ("s.json", json.dumps([STAR_RECORD, {**STAR_RECORD, "question_id": "Sequence_T1_2",
                                                                        "question": "Wh\udcffat?"}], ensure_ascii=False),
                                   read_star, r"record 1 \(line 1\)", "Sequence_T1_2", None),
    "window ends before it starts": ("t.jsonl", tvqa_line(ts="9.0-2.0"), read_tvqa, "line 1", "TVQA_0",
                                     r"ts \[9\.0, 2\.0\] ends before it starts"),
    "bad relevant window (qvh)": ("q.jsonl", json.dumps({"qid": 3, "query": "x", "vid": "v", "duration": 10,
                                                         "relevant_windows": [[4, 2]]}),
                                  read_qvhighlights, "line 1", "QVHighlight_3", "ends before it starts"),
}


def test_nextqa_qids_of_a_csv_resaved_by_pandas_keep_their_official_ids(tmp_path):
    resaved = write_bad(tmp_path, "val.csv", f"{NEXTQA_HEADER}\n{nextqa_row(6)}\n".replace(",6,CW,", ",6.0,CW,"))
    assert [s.question_id for s in read_nextqa(resaved)] == ["CW_9000000001_6"]


def write_bad(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))  # "\udcff" becomes the invalid byte 0xff
    return path


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_raises_naming_file_row_and_question(tmp_path, case):
    name, text, reader, where, qid, reason = BAD_INPUTS[case]
    path = write_bad(tmp_path, name, text)
    if reason is None:  # non-UTF-8: the message gives the exact byte offset and its line
        offset = path.read_bytes().index(b"\xff")
        line = path.read_bytes()[:offset].count(b"\n") + 1
        reason = rf"not valid UTF-8 \(byte offset {offset}, line {line}\)"
    with pytest.raises(AnnotationError) as raised:
        reader(path)
    message = str(raised.value)
    assert message.startswith(f"{path}, ")
    assert f"(question {qid})" in message if qid else "(question" not in message
    assert re.search(where, message) and re.search(reason, message), message


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_skip_mode_keeps_the_good_records_and_records_the_bad_one(tmp_path, case):
    name, text, reader, where, qid, _ = BAD_INPUTS[case]
    path = write_bad(tmp_path, name, text)
    good_count = {"bad JSON line": 2, "truncated JSON list": 1, "truncated csv row": 1,
                  "short row (how2qa release csv)": 1,
                  "duplicate question id (nextqa)": 2, "duplicate question id (star)": 1, "non-UTF-8 (tvqa)": 1,
                  "duplicate qid (tvqa: ids from line numbers)": 1,
                  "non-UTF-8 (nextqa)": 1, "non-UTF-8 (star)": 1, "non-UTF-8 (star, one line)": 1}.get(case, 0)
    samples = reader(path, on_error="skip")
    assert len(samples) == good_count
    assert len(samples.skipped) == 1
    source, skipped_qid, reason = samples.skipped[0]
    assert source.startswith(f"{path}, ") and skipped_qid == qid and reason
    ids = [s.question_id for s in samples]
    assert len(set(ids)) == len(ids) and ("duplicate" in case or qid not in ids)  # nothing substituted


def test_file_level_problems_always_raise(tmp_path):
    with pytest.raises(AnnotationError, match=r"missing\.jsonl, file: cannot read"):
        read_tvqa(tmp_path / "missing.jsonl", on_error="skip")
    header = write_bad(tmp_path, "n.csv", NEXTQA_HEADER.replace(",a4", "") + "\n" + nextqa_row()[:-3] + "\n")
    with pytest.raises(AnnotationError, match=r"n\.csv, line 1 \(header\): missing column\(s\) \['a4'\]"):
        read_nextqa(header, on_error="skip")
    with pytest.raises(AnnotationError, match=r"s\.json, line 1: expected a JSON list"):
        read_star(write_bad(tmp_path, "s.json", json.dumps(STAR_RECORD)))


def test_nextqa_video_missing_from_map(tmp_path):
    path = write_bad(tmp_path, "n.csv", f"{NEXTQA_HEADER}\n{nextqa_row(video='123')}\n")
    with pytest.raises(AnnotationError, match=r"row 1 \(line 2\) \(question CW_123_0\): video 123 is not in"):
        read_nextqa(path, NEXTQA_MAP)


# --- the torch Dataset ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reader() -> VideoFileReader:
    return VideoFileReader(SAMPLE_VIDEOS_DIR)


def test_eval_items_carry_frames_prompts_and_targets(reader):
    samples = read_nextqa(NEXTQA_CSV, NEXTQA_MAP)[2:]  # the two carphone questions
    dataset = VideoQADataset(samples, reader, num_frames=4, image_size=32)
    item = dataset[0]
    assert item["frames"].shape == (4, 3, 32, 32) and item["frames"].dtype == torch.float32
    assert item["frame_indices"] == [15, 45, 75, 105] and item["repeated"] is False  # 120 frames, midpoints
    s = samples[0]
    assert item["qa_text"] == prompts.answerer_text(s.question, s.options)
    assert item["loc_text"] == prompts.localizer_text(s.question, s.options)
    assert (item["target"], item["answer"], item["num_options"], item["relevant"]) == ("Option A", 0, 5, None)
    torch.testing.assert_close(dataset[0]["frames"], item["frames"])  # eval is deterministic


def test_vlep_and_qvh_items_use_their_own_prompts(reader):
    vlep = VideoQADataset(read_vlep(VLEP_JSONL)[1:2], reader, num_frames=4, image_size=16)[0]
    assert vlep["qa_text"].startswith(prompts.VLEP_QUESTION) and vlep["target"] == "Option A"
    assert vlep["loc_text"] == prompts.localizer_text(None, ["The riders stop.", "The riders turn left."], "vlep")
    qvh_sample = read_qvhighlights(QVH_JSONL)[0]
    qvh = VideoQADataset([qvh_sample], reader, num_frames=10, image_size=16, prompt="has_information")[0]
    assert qvh["qa_text"] is None and qvh["target"] is None and qvh["answer"] is None
    assert qvh["loc_text"] == prompts.moment_query_text("Cyclists ride past a parked car", "has_information")
    assert qvh["relevant"] == relevant_frame_mask(qvh["frame_indices"], 25.0, qvh_sample.moments)
    assert qvh["relevant"] == [False, False, True, True, False, False, False, True, False, False]
    # windows past the end of a video cut short would label every frame "no": refused, or skipped and recorded
    past_end = dataclasses.replace(qvh_sample, moments=[(60.0, 70.0)])
    with pytest.raises(VideoError, match=r"bikes\.mp4 \(question QVHighlight_9001\): every relevant window starts "
                                         r"after the video's end"):
        VideoQADataset([past_end], reader, num_frames=10, image_size=16)[0]
    skipping = VideoQADataset([past_end], reader, num_frames=10, image_size=16, on_error="skip")
    assert skipping[0] is None and skipping.skipped[0].question_id == "QVHighlight_9001"


def test_train_items_are_deterministic_per_seed_epoch_and_index(reader):
    samples = read_star(STAR_JSON)[1:]  # carphone, windows 0-3.5 s and 0.5-1.0 s

    def make(seed: int) -> VideoQADataset:
        return VideoQADataset(samples, reader, num_frames=4, image_size=24, train=True, seed=seed)

    a, b = make(0), make(0)
    first = a[0]
    torch.testing.assert_close(first["frames"], b[0]["frames"])
    assert first["frame_indices"] == b[0]["frame_indices"]
    assert all(0 <= i < int(3.5 * 30000 / 1001) for i in first["frame_indices"])
    a.set_epoch(1)
    assert not torch.equal(a[0]["frames"], first["frames"])
    assert not torch.equal(make(1)[0]["frames"], first["frames"])


def test_bad_videos_raise_or_are_skipped_never_substituted(reader, tmp_path):
    good = VideoQASample("CW_1_0", "carphone_distorted", "why?", ["a.", "b."], 1)
    missing = VideoQASample("CW_2_0", "no_such_clip", "why?", ["a.", "b."], 0)
    outside = VideoQASample("TVQA_7", "carphone_distorted", "what?", ["a", "b"], 0, dataset="tvqa",
                            start=30.0, end=40.0)
    with pytest.raises(VideoError, match=r"no_such_clip\.mp4 \(question CW_2_0\): video file not found"):
        VideoQADataset([missing], reader, 4, 16)[0]
    with pytest.raises(VideoError, match=r"carphone_distorted\.mp4 \(question TVQA_7\): window \[30\.0, 40\.0\] s "
                                         r".* outside the video \(frames \[0, 120\)"):
        VideoQADataset([outside], reader, 4, 16)[0]
    dataset = VideoQADataset([good, missing, outside], reader, 4, 16, on_error="skip")
    items = [dataset[i] for i in range(3)]
    assert items[1] is None and items[2] is None
    assert [(s.question_id, Path(s.source).name) for s in dataset.skipped] == [
        ("CW_2_0", "no_such_clip.mp4"), ("TVQA_7", "carphone_distorted.mp4")]
    batch = collate_video_qa(items)
    assert batch["question_id"] == ["CW_1_0"] and batch["frames"].shape == (1, 4, 3, 16, 16)
    assert collate_video_qa([None, None]) is None


def test_videos_shorter_than_n_repeat_frames_and_are_recorded(tmp_path):
    write_video(tmp_path / "short.mp4", np.full((5, 16, 16, 3), 90, np.uint8), fps=10)
    sample = VideoQASample("DO_5_0", "short", "what?", ["a", "b"], 0)
    dataset = VideoQADataset([sample], VideoFileReader(tmp_path), num_frames=8, image_size=16)
    item = dataset[0]
    assert item["frame_indices"] == [0, 0, 1, 1, 2, 3, 3, 4] and item["repeated"]
    assert dataset.repeated == ["DO_5_0"] and item["frames"].shape == (8, 3, 16, 16)


def test_collate_stacks_frames_and_keeps_lists(reader):
    dataset = VideoQADataset(read_star(STAR_JSON)[1:], reader, num_frames=3, image_size=16)
    batch = collate_video_qa([dataset[0], dataset[1]])
    assert batch["frames"].shape == (2, 3, 3, 16, 16)
    assert batch["target"] == ["Option C", "Option A"] and batch["num_options"] == [4, 4]
    assert len(batch["frame_indices"]) == 2 and batch["relevant"] == [None, None]


# --- the checker ------------------------------------------------------------------------------------------

def test_checker_passes_on_the_fixture_with_the_sample_videos(capsys):
    argv = ["check", "nextqa", "--annotations", str(NEXTQA_CSV), "--map", str(NEXTQA_MAP),
            "--videos", str(SAMPLE_VIDEOS_DIR), "--num-frames", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "questions: 4   videos: 2" in out and "CH 1, CW 1, DO 1, TN 1" in out and out.rstrip().endswith("OK")


def test_checker_reports_every_problem_and_fails(tmp_path):
    lines = [tvqa_line(vid_name="bikes", ts="1.0-2.0"), tvqa_line(vid_name="gone", qid=2), "{broken",
             tvqa_line(vid_name="carphone_distorted", ts="50.0-60.0", qid=4)]
    annotations = write_bad(tmp_path, "tvqa.jsonl", "\n".join(lines) + "\n")
    out = io.StringIO()
    assert check("tvqa", str(annotations), videos=str(SAMPLE_VIDEOS_DIR), num_frames=200, out=out) == 1
    report = out.getvalue()
    assert "questions: 3" in report and "annotation problems: 1" in report and "line 3 (question TVQA_2)" in report
    assert "missing videos: 1" in report and "gone.mp4 (question TVQA_1)" in report
    assert "videos with fewer than 200 frames: 1" in report and "carphone_distorted.mp4: 120 frames" in report
    assert "windows outside their video: 1" in report and "(question TVQA_3)" in report
    assert "windows shorter than 200 frames (frames repeat, as in the official code): 1" in report


def test_checker_decodes_sampled_frames_and_reports_overhanging_windows(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "full.mp4", noise, fps=10, faststart=True)
    (videos / "cut.mp4").write_bytes((tmp_path / "full.mp4").read_bytes()[:20_000])  # header first, data cut
    (videos / "carphone.mp4").write_bytes((SAMPLE_VIDEOS_DIR / "carphone_distorted.mp4").read_bytes())  # 4.0 s
    lines = [tvqa_line(vid_name="cut", ts="0.0-5.0"), tvqa_line(vid_name="carphone", ts="3.0-5.5", qid=2),
             tvqa_line(vid_name="carphone", ts="0.5-3.5", qid=3)]
    annotations = write_bad(tmp_path, "tvqa.jsonl", "\n".join(lines) + "\n")
    out = io.StringIO()
    assert check("tvqa", str(annotations), videos=str(videos), num_frames=8, out=out) == 1
    report = out.getvalue()
    # The header of cut.mp4 still says 60 frames: only decoding the sampled frames finds the missing data.
    assert "unreadable videos: 0" in report
    assert "videos cut short or undecodable at a sampled frame: 1" in report
    assert re.search(r"cut\.mp4: decoding ended before frame \d+ .*truncated", report)
    assert "windows overhanging their video (clamped, as in the official code): 1" in report
    assert re.search(r"carphone\.mp4 \(question TVQA_1\): window \[3\.0, 5\.5\] s ends 1\.50 s after the video's "
                     r"end \(4\.00 s, 120 frames at 29\.97 fps\); clamped", report)
    assert "1 problem(s) found" in report  # overhanging windows are reported, not counted as errors


def test_checker_fails_on_labels_no_frame_can_carry_and_on_empty_files(tmp_path):
    # carphone_pristine.mp4 lasts 4.0 s: a relevant window from 6 s on would label every frame "no".
    qvh = write_bad(tmp_path, "qvh.jsonl", json.dumps({"qid": 5113, "query": "a man talks", "duration": 150,
                                                       "vid": "carphone_pristine", "relevant_windows": [[6, 9]]}))
    out = io.StringIO()
    assert check("qvh", str(qvh), videos=str(SAMPLE_VIDEOS_DIR), num_frames=8, out=out) == 1
    assert re.search(r"windows outside their video: 1\n.*carphone_pristine\.mp4 \(question QVHighlight_5113\): "
                     r"relevant window \[6\.0, 9\.0\] s starts after the video's end \(4\.00 s\)", out.getvalue())
    assert "videos shorter than the release's duration (a download cut short?): 1" in out.getvalue()
    assert "carphone_pristine.mp4: 4.00 s, the release says 150 s" in out.getvalue()
    for name, text in (("tvqa", ""), ("nextqa", NEXTQA_HEADER + "\n")):
        out = io.StringIO()
        assert check(name, str(write_bad(tmp_path, f"{name}_empty", text)), out=out) == 1
        assert "questions: 0" in out.getvalue() and "no questions in the file" in out.getvalue()
    out = io.StringIO()  # a test split: counted, not an error
    assert check("tvqa", str(write_bad(tmp_path, "test.jsonl", tvqa_line(answer_idx=None) + "\n")), out=out) == 0
    assert "questions without a gold answer (a test split?): 1, e.g. TVQA_0" in out.getvalue()


def test_window_overhang_describes_what_is_clamped():
    from sevila_lib.video import segment_frame_indices, window_overhang
    assert window_overhang(100, 10.0, 2.0, 9.99) is None and window_overhang(100, 10.0, None, None) is None
    assert window_overhang(100, 10.0, 2.0, 10.0) is None  # ends exactly at the last frame's end
    assert window_overhang(100, 10.0, -1.5, 4.0) == "starts 1.5 s before the video"
    assert window_overhang(100, 10.0, 5.0, 12.0) == ("ends 2.00 s after the video's end (10.00 s, 100 frames at "
                                                     "10 fps)")
    # The frames themselves are still taken from the clamped window, as the official loader does.
    assert segment_frame_indices(100, 10.0, 2, start=-1.5, end=4.0)[0] == segment_frame_indices(
        100, 10.0, 2, start=0.0, end=4.0)[0]

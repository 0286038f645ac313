"""The world tokenizer behaves like Flan-T5's where the kit depends on it (official `sevila.py` prompts)."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from sevila_lib import prompts
from sevila_lib.scoring import AnswerTokens
from sevila_lib.tokenizer import PIECE, build_world_tokenizer, prompt_texts
from sevila_lib.world import MomentsWorld


@pytest.fixture(scope="module")
def world() -> MomentsWorld:
    return MomentsWorld()


@pytest.fixture(scope="module")
def saved(world, tmp_path_factory):
    directory = tmp_path_factory.mktemp("world_tokenizer")
    build_world_tokenizer(world.texts(), directory)
    return directory


@pytest.fixture(scope="module")
def tokenizer(saved):
    return AutoTokenizer.from_pretrained(saved)  # test the tokenizer as the kit loads it


def tokens(tokenizer, text: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_t5_specials_and_eos(tokenizer):
    assert [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id] == [0, 1, 2]
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    ids = tokenizer("what colour is the cross?")["input_ids"]
    assert ids[-1] == 1 and 1 not in ids[:-1]
    assert len(tokenizer) <= 1500


def test_frame_prefixes_end_with_a_lone_metaspace(tokenizer):
    assert tokens(tokenizer, prompts.FRAME_PREFIX) == ["▁Frame", ":", "▁"]
    for i in range(1, 65):
        assert tokens(tokenizer, prompts.keyframe_prefix(i)) == ["▁Frame", f"▁{i}", ":", "▁"]


def test_option_targets_and_yes_no_are_t5_like(tokenizer):
    for i, letter in enumerate(prompts.OPTION_LETTERS):
        assert tokens(tokenizer, prompts.answer_target(i)) == ["▁Option", f"▁{letter}"]
    assert tokens(tokenizer, prompts.YES) == ["▁yes"] and tokens(tokenizer, prompts.NO) == ["▁no"]
    answer_tokens = AnswerTokens.from_tokenizer(tokenizer)  # the kit's own check
    assert len(set(answer_tokens.letter_ids)) == 5


def test_world_texts_round_trip_in_whole_words(world, tokenizer):
    """No <unk>, exact decoding, and every word/number/punctuation mark is ONE token (no character fallback)."""
    texts = prompt_texts() + world.texts()
    texts += [t for e in world.image_examples("val", 200, seed=1) for t in e[1:]]
    texts += [prompts.localizer_text(s.question, s.options, prompt=p)
              for s in world.qa_samples("test")[:8] for p in prompts.LOCALIZER_PROMPTS]
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text.strip() or tokenizer.decode(ids) == text, text
        expected = [p for word, _ in pre.pre_tokenize_str(text) for p in PIECE.findall(word)]
        assert tokenizer.convert_ids_to_tokens(ids) == expected, text


def test_build_is_deterministic(world, saved, tmp_path):
    build_world_tokenizer(world.texts(), tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (saved / name).read_bytes()

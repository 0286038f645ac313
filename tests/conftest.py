"""Shared fixtures: a tiny T5-style tokenizer and a tiny random SeViLA (no downloads, milliseconds per call)."""
from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import T5TokenizerFast

from sevila_lib import prompts
from sevila_lib.config import preset
from sevila_lib.model import SeViLA

QUESTIONS = [
    ("why does the person lie down without wearing her footwear?",
     ["follow woman.", "cleasn environment.", "resting.", "hot indoor.", "sunbathing in beach."]),
    ("what colour is the ball?", ["red.", "blue.", "green.", "yellow.", "white."]),
]


def build_test_tokenizer() -> T5TokenizerFast:
    """A small Unigram tokenizer with T5's specials and Metaspace pre-tokenisation (like T5's sentencepiece)."""
    corpus = [*prompts.LOCALIZER_PROMPTS.values(), prompts.ANSWERER_INSTRUCTION, prompts.VLEP_QUESTION,
              prompts.VLEP_LOCALIZER_PROMPT, prompts.QVH_OPTIONS, prompts.FRAME_PREFIX,
              *[prompts.keyframe_prefix(i) for i in range(1, 65)], *[prompts.answer_target(i) for i in range(5)],
              *[f"Option {letter}: " for letter in prompts.OPTION_LETTERS], "yes", "no"]
    corpus += [prompts.answerer_text(q, o) + " " + prompts.localizer_text(q, o) for q, o in QUESTIONS]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(corpus * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)


@pytest.fixture(scope="session")
def tokenizer():
    return build_test_tokenizer()


def make_tiny_model(tokenizer, seed: int = 0) -> SeViLA:
    torch.manual_seed(seed)
    return SeViLA(preset("tiny", vocab_size=len(tokenizer)), tokenizer).eval()


@pytest.fixture()
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


@pytest.fixture()
def frames():
    torch.manual_seed(1)
    return torch.randn(2, 6, 3, 16, 16)  # (B, T, C, H, W)

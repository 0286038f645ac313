"""A small T5-style tokenizer for the mini world, built offline (no download of T5's sentencepiece model).

It mimics what the kit relies on in the real Flan-T5 tokenizer (official `sevila.py` prompts): a Unigram model over
"▁"-prefixed pieces (Metaspace pre-tokenisation, as sentencepiece), T5's specials `<pad>`=0, `</s>`=1,
`<unk>`=2, `</s>` appended to every encoded text, "yes"/"no" single tokens, "Option A" -> ["▁Option", "▁A"],
and a lone "▁" at the end of "Frame: " / "Frame 1: " (the official frame prefixes end with it).

The vocabulary is every word, number and punctuation mark of the world's texts and of `prompts.py`, plus
every single character as a fallback, scored by log-frequency like a sentencepiece model: about 450 pieces
instead of T5's 32k, so the mini T5's embedding stays small. Used by `notebooks/01_forward_chain.ipynb`
through the shipped mini BLIP-2 (`data/mini_blip2`).

transformers 5 rebuilds a `T5Tokenizer`'s pre-tokenizer on loading (adding a whitespace split that drops the
trailing "▁"), so the tokenizer is saved as a plain tokenizers-backed class: `AutoTokenizer.from_pretrained`
then loads tokenizer.json exactly as built.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import PreTrainedTokenizerFast

from . import prompts

SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5
# A pre-token ("▁Options:", "▁(red.", "▁1:", "▁") splits into words, numbers and single punctuation marks.
PIECE = re.compile(r"▁?[A-Za-z]+|▁?[0-9]+|▁?[^A-Za-z0-9▁]|▁")


def prompt_texts() -> list[str]:
    """Every fixed string of `prompts.py` the kit feeds to T5 or reads from it."""
    return [*prompts.LOCALIZER_PROMPTS.values(), prompts.VLEP_LOCALIZER_PROMPT, prompts.ANSWERER_INSTRUCTION,
            prompts.VLEP_QUESTION, prompts.QVH_OPTIONS, prompts.FRAME_PREFIX,
            *(prompts.keyframe_prefix(i) for i in range(1, 65)),
            *(prompts.answer_target(i) for i in range(len(prompts.OPTION_LETTERS))),
            *(f"Option {letter}: " for letter in prompts.OPTION_LETTERS), prompts.YES, prompts.NO,
            "0 1 2 3 4 5 6 7 8 9", "Question: Options: ( ) Answer:"]


def _backend() -> Tokenizer:
    """The pipeline without a vocabulary: T5's normalisation and "▁" handling."""
    tok = Tokenizer(Unigram([(s, 0.0) for s in SPECIALS], unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    # No whitespace split before Metaspace: a trailing space must survive as the lone "▁" token.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return tok


def vocabulary(texts: list[str]) -> list[tuple[str, float]]:
    """(piece, log-probability) for the specials, every piece of `texts`, and every character."""
    pre = _backend()
    counts: Counter[str] = Counter()
    for text in texts:
        for word, _ in pre.pre_tokenizer.pre_tokenize_str(pre.normalizer.normalize_str(text)):
            counts.update(PIECE.findall(word))
    total = sum(counts.values())
    scores = {piece: math.log(n / total) for piece, n in counts.items()}
    # Single characters as a fallback far below any word, so whole words always win the Viterbi search.
    floor = min(scores.values()) - 10.0
    for char in sorted({c for piece in counts for c in piece}):
        scores.setdefault(char, floor)
    pieces = sorted(scores.items(), key=lambda item: (-item[1], item[0]))  # deterministic order
    return [(s, 0.0) for s in SPECIALS] + pieces


def build_world_tokenizer(world_texts: Sequence[str], out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """The world's T5-style tokenizer over the kit's prompts and `world_texts` (`MomentsWorld.texts()`: every text
    the world can produce). Saved to `out_dir` if given (`AutoTokenizer.from_pretrained(out_dir)` loads it back).
    Same texts -> byte-identical files."""
    tok = _backend()
    tok.model = Unigram(vocabulary(prompt_texts() + list(world_texts)), unk_id=2)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=512)
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer

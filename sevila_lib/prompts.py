"""Every prompt string SeViLA feeds to the language model, in one place (paper §3.1, official `sevila.py` prompts).

The strings reproduce the official `MCVideoQADataset.__getitem__` exactly, including its quirks
(a space before ")" in the localizer's option list, options without letters, question text used raw).
Introduced in `notebooks/01_forward_chain.ipynb`; the prompt ablation is `04_ablation_prompts.ipynb`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

OPTION_LETTERS = "ABCDE"

# The T5 encoder sees one of these before each frame's visual tokens.
FRAME_PREFIX = "Frame: "  # localizer input and every single-frame answerer input


def keyframe_prefix(position: int) -> str:
    """Prefix of the `position`-th keyframe (1-based, temporal order), e.g. "Frame 2: "."""
    return f"Frame {position}: "


# Localization instructions: the one SeViLA uses and the two alternatives of the paper's Table 16.
LOCALIZER_PROMPTS: dict[str, str] = {
    "official": "Does the information within the frame provide the necessary details to accurately "
                "answer the given question?",
    "has_information": "Does the frame have the information needed to answer the question correctly?",
    "contains_information": "Does the provided frame contain the necessary information to accurately "
                            "answer the given question?",
}
VLEP_LOCALIZER_PROMPT = ("Does the information within the frame provide the necessary details to "
                         "predict next event?")
ANSWERER_INSTRUCTION = ("Considering the information presented in the frame, select the correct answer "
                        "from the options.")
VLEP_QUESTION = "Upon observing the provided frames, what is the most probable subsequent event?"
QVH_OPTIONS = "Option A: yes. Option B: no."

# Targets of the language model (training) and the words whose logits are read (inference).
YES, NO = "yes", "no"


def answer_target(option_index: int) -> str:
    """The Answerer's target string, e.g. "Option C" (official `qa_output`)."""
    return f"Option {OPTION_LETTERS[option_index]}"


def _lettered_options(options: Sequence[str]) -> str:
    return " ".join(f"Option {OPTION_LETTERS[i]}: {option}" for i, option in enumerate(options))


def _check_options(options: Sequence[str]) -> None:
    if not 2 <= len(options) <= len(OPTION_LETTERS):
        raise ValueError(f"SeViLA prompts take 2 to {len(OPTION_LETTERS)} options, got {len(options)}")


def answerer_text(question: str | None, options: Sequence[str], dataset: str = "generic") -> str:
    """The Answerer's text after the visual tokens.

    generic (NExT-QA, STAR, How2QA, TVQA, the mini world):
      "Question: <q> Option A: <a0> ... Option E: <a4> Considering the information presented in the
      frame, select the correct answer from the options."
    vlep: "Upon observing the provided frames, what is the most probable subsequent event? Option A: <a0>
      Option B: <a1>" (no question, no trailing instruction).
    """
    _check_options(options)
    if dataset == "vlep":
        return f"{VLEP_QUESTION} {_lettered_options(options)}"
    return f"Question: {question} {_lettered_options(options)} {ANSWERER_INSTRUCTION}"


def localizer_text(question: str | None, options: Sequence[str], dataset: str = "generic",
                   prompt: str = "official") -> str:
    """The Localizer's text after one frame's visual tokens.

    generic: "Question: <q> Options: (<a0> <a1> ... <aN-1> ) <instruction>" — options carry no letters and
    each is followed by a space, so a space stands before ")" exactly as in the official code.
    `prompt` names an entry of LOCALIZER_PROMPTS or is an instruction string of your own.
    """
    _check_options(options)
    if dataset == "vlep":
        return f"{answerer_text(None, options, 'vlep')} {VLEP_LOCALIZER_PROMPT}"
    instruction = LOCALIZER_PROMPTS.get(prompt, prompt)
    option_list = "".join(option + " " for option in options)
    return f"Question: {question} Options: ({option_list}) {instruction}"


def moment_query_text(query: str, prompt: str = "official") -> str:
    """Localizer text for moment-retrieval pre-training (QVHighlights): a '.' is appended if missing."""
    if not query.endswith("."):
        query = query + "."
    instruction = LOCALIZER_PROMPTS.get(prompt, prompt)
    return f"Question: {query} {QVH_OPTIONS} {instruction}"


def _dataset_style(dataset: str) -> str:
    return "vlep" if dataset == "vlep" else "generic"


def sample_qa_text(sample) -> str:
    """The Answerer text of a `records.VideoQASample`."""
    return answerer_text(sample.question, sample.options, _dataset_style(sample.dataset))


def sample_loc_text(sample, prompt: str = "official") -> str:
    """The Localizer text of a `records.VideoQASample` (moment queries for dataset "qvh")."""
    if sample.dataset == "qvh":
        return moment_query_text(sample.question, prompt)
    return localizer_text(sample.question, sample.options, _dataset_style(sample.dataset), prompt)


@dataclass
class TruncationCounter:
    """How many prompts the 77-token limit cut (the official code truncates silently)."""

    texts: int = 0
    truncated: int = 0

    @property
    def fraction(self) -> float:
        return self.truncated / self.texts if self.texts else 0.0


def _options_end(text: str) -> int:
    """Character offset just past the last option of a prompt built by this module (see `truncated_options`)."""
    if text.endswith(ANSWERER_INSTRUCTION):  # generic Answerer: "... Option E: <a4> Considering ..."
        return len(text) - len(ANSWERER_INSTRUCTION) - 1
    if text.endswith(VLEP_LOCALIZER_PROMPT):  # VLEP Localizer: "... Option B: <a1> Does ... next event?"
        return len(text) - len(VLEP_LOCALIZER_PROMPT) - 1
    if text.startswith(VLEP_QUESTION):  # VLEP Answerer: the options end the text
        return len(text)
    if QVH_OPTIONS in text:  # moment query: the fixed yes/no options
        return text.index(QVH_OPTIONS) + len(QVH_OPTIONS)
    if "Options: (" in text and " ) " in text:  # generic Localizer: "Options: (<a0> ... <aN> ) <instruction>"
        return text.rfind(" ) ")
    raise ValueError(f"not a prompt built by sevila_lib.prompts, cannot tell where its options end: {text[:80]!r}")


def truncated_options(tokenizer, text: str, max_length: int = 77) -> bool:
    """Does the `max_length`-token cut (`encode_prompts`) remove any option, or part of one, from `text`?

    `text` is a prompt of this module (Answerer, Localizer, VLEP or moment query). The official code tokenises
    with `truncation=True, max_length=77` and never says when that cuts: a long TVQA or How2QA question can lose
    its last options, so the model chooses among options it never read. Losing only the trailing instruction is
    not flagged here (`TruncationCounter` counts every cut). Tokens before the end of the last option are counted
    on that prefix alone, which splits at the same whitespace as the whole text; `</s>` takes the last place.
    """
    end = _options_end(text)
    kept = max_length - 1  # content tokens that survive: `</s>` is kept as the last of the max_length
    return len(tokenizer(text[:end], add_special_tokens=False)["input_ids"]) > kept


def encode_prompts(tokenizer, texts: Sequence[str], max_length: int = 77,
                   counter: TruncationCounter | None = None):
    """Tokenise prompt texts as the official code does: `</s>` appended, cut at `max_length` tokens
    (77 by default, counting `</s>`), padded to the longest. Counts cuts in `counter`. The official code cuts
    silently; `truncated_options` tells whether a cut removed options."""
    full = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    if counter is not None:
        counter.texts += len(full)
        counter.truncated += sum(len(ids) > max_length for ids in full)
    return tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length,
                     padding="longest", return_tensors="pt")

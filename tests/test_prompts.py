import pytest

from sevila_lib import prompts
from tests.conftest import QUESTIONS

Q, OPTIONS = QUESTIONS[0]


def test_localizer_text_equals_spec_example():
    assert prompts.localizer_text(Q, OPTIONS) == (
        "Question: why does the person lie down without wearing her footwear? Options: (follow woman. "
        "cleasn environment. resting. hot indoor. sunbathing in beach. ) Does the information within the frame "
        "provide the necessary details to accurately answer the given question?")


def test_answerer_text_equals_spec_example():
    assert prompts.answerer_text(Q, OPTIONS) == (
        "Question: why does the person lie down without wearing her footwear? Option A: follow woman. "
        "Option B: cleasn environment. Option C: resting. Option D: hot indoor. Option E: sunbathing in beach. "
        "Considering the information presented in the frame, select the correct answer from the options.")


def test_vlep_and_moment_prompts():
    vlep = prompts.answerer_text(None, ["He leaves.", "He sits."], dataset="vlep")
    assert vlep == ("Upon observing the provided frames, what is the most probable subsequent event? "
                    "Option A: He leaves. Option B: He sits.")
    assert prompts.localizer_text(None, ["He leaves.", "He sits."], dataset="vlep") == (
        vlep + " Does the information within the frame provide the necessary details to predict next event?")
    assert prompts.moment_query_text("a dog runs") == (
        "Question: a dog runs. Option A: yes. Option B: no. Does the information within the frame provide the "
        "necessary details to accurately answer the given question?")
    assert prompts.moment_query_text("a dog runs.").count("..") == 0


def test_alternative_localizer_prompts_and_custom():
    text = prompts.localizer_text("q?", ["a.", "b."], prompt="has_information")
    assert text.endswith("Does the frame have the information needed to answer the question correctly?")
    assert prompts.localizer_text("q?", ["a.", "b."], prompt="Is it here?").endswith(") Is it here?")


def test_prefixes_and_targets():
    assert prompts.FRAME_PREFIX == "Frame: "
    assert [prompts.keyframe_prefix(i) for i in (1, 4)] == ["Frame 1: ", "Frame 4: "]
    assert prompts.answer_target(2) == "Option C"


def test_truncation_is_counted(tokenizer):
    counter = prompts.TruncationCounter()
    long_text = prompts.answerer_text(Q, OPTIONS) * 3
    enc = prompts.encode_prompts(tokenizer, [long_text, "yes"], max_length=20, counter=counter)
    assert enc["input_ids"].shape[1] == 20
    assert enc["input_ids"][0, -1].item() == tokenizer.eos_token_id  # </s> kept as the last token
    assert (counter.texts, counter.truncated) == (2, 1)
    assert counter.fraction == 0.5


def test_truncated_options_flags_prompts_that_lose_options(tokenizer):
    qa, loc = prompts.answerer_text(Q, OPTIONS), prompts.localizer_text(Q, OPTIONS)
    vlep_qa = prompts.answerer_text(None, ["He leaves.", "He sits."], dataset="vlep")
    vlep_loc = prompts.localizer_text(None, ["He leaves.", "He sits."], dataset="vlep")
    moment = prompts.moment_query_text("a dog runs")
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    for text in (qa, loc, vlep_qa, vlep_loc, moment):
        assert not prompts.truncated_options(tokenizer, text, max_length=count(text) + 1)  # nothing cut
    # Cut inside the instruction only: the options survive (the cut is counted by TruncationCounter alone).
    options_end = qa.index(" Considering")
    n_options = count(qa[:options_end])
    assert not prompts.truncated_options(tokenizer, qa, max_length=n_options + 1)
    assert prompts.truncated_options(tokenizer, qa, max_length=n_options)  # the last option loses a token
    cut = prompts.encode_prompts(tokenizer, [qa], max_length=n_options)["input_ids"][0]
    assert not tokenizer.decode(cut, skip_special_tokens=True).endswith("sunbathing in beach.")
    n_loc = count(loc[:loc.rindex(" ) ")])
    assert not prompts.truncated_options(tokenizer, loc, max_length=n_loc + 1)
    assert prompts.truncated_options(tokenizer, loc, max_length=n_loc)
    assert prompts.truncated_options(tokenizer, vlep_qa, max_length=count(vlep_qa))
    assert prompts.truncated_options(tokenizer, vlep_loc, max_length=10)
    # The shipped prompts at the official 77 tokens: a long question pushes options out.
    assert not prompts.truncated_options(tokenizer, prompts.answerer_text("why?", ["yes.", "no."]))
    long_question = "why " + " ".join(["does the person lie down"] * 20) + "?"
    assert prompts.truncated_options(tokenizer, prompts.answerer_text(long_question, OPTIONS))
    with pytest.raises(ValueError, match="not a prompt built by sevila_lib.prompts"):
        prompts.truncated_options(tokenizer, "free text")

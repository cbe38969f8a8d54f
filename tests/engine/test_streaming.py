"""Streaming: whole characters only, exact stop strings, budgets, deltas == generate().text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inference.engine.text import IncrementalDetokenizer, StopStringFilter

MULTIBYTE = "Héllo wörld 👋🏽 ça va? 日本語 🎉 naïve — fin"


def test_multibyte_characters_are_never_split(bundled_engine):
    tokenizer = bundled_engine.tokenizer
    ids = tokenizer(MULTIBYTE, add_special_tokens=False).input_ids
    assert len(ids) > len(MULTIBYTE.encode()) / 4  # the emoji really span several tokens
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.push(token) for token in ids] + [detokenizer.flush()]
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == MULTIBYTE


def test_a_byte_level_tokenizer_emits_each_character_whole(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    ids = tokenizer(MULTIBYTE, add_special_tokens=False).input_ids
    assert len(ids) == len(MULTIBYTE.encode())  # one token per byte
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [d for d in (detokenizer.push(token) for token in ids) if d]
    assert "".join(deltas) == MULTIBYTE
    assert "👋" in deltas and "é" in "".join(deltas[:2])


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="abUser: </s>x", max_size=40), cuts=st.lists(st.integers(0, 40), max_size=8))
def test_stop_strings_cut_exactly_and_never_leak_a_fragment(text, cuts):
    stops = ["User:", "</s>"]
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = text[: min(hits)] if hits else text
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    stream = StopStringFilter(stops)
    emitted = ""
    for a, b in zip(bounds, bounds[1:]):
        emitted += stream.push(text[a:b])
        assert expected.startswith(emitted)  # never emits stop text or anything past it
        if stream.stopped:
            break
    if not stream.stopped:
        emitted += stream.flush()
    assert emitted == expected
    assert stream.stopped == bool(hits)


PROMPT = [{"role": "user", "content": "List three fruits, one per line."}]


def test_joined_deltas_equal_generate_text_and_the_tokens(bundled_engine):
    deltas = list(bundled_engine.stream(PROMPT, max_new_tokens=24))
    streamed_stats = bundled_engine.last_stats
    result = bundled_engine.generate(PROMPT, max_new_tokens=24)
    assert "".join(deltas) == result.text
    assert result.text == bundled_engine.tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert streamed_stats.new_tokens == len(result.token_ids) <= 24
    assert len(deltas) > 3  # really streamed, not one blob


def test_stop_string_ends_the_reply_before_it(bundled_engine):
    full = bundled_engine.generate(PROMPT, max_new_tokens=24).text
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    result = bundled_engine.generate(PROMPT, max_new_tokens=24, stop=[stop, "NEVER-APPEARS"])
    assert result.text == full[: full.index(stop)]
    assert result.stats.stop_reason == "stop"
    assert stop not in "".join(bundled_engine.stream(PROMPT, max_new_tokens=24, stop=[stop]))


def test_max_new_tokens_is_respected(bundled_engine):
    result = bundled_engine.generate(PROMPT, max_new_tokens=5)
    assert len(result.token_ids) == 5
    assert result.stats.stop_reason == "length" and result.stats.new_tokens == 5

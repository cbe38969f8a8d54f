"""The JSONL prompt loader: accepts the shipped set, names the line of a bad one."""

import json

import pytest

from inference.cli import SHIPPED_PROMPTS
from inference.engine.bench import PromptFileError, load_prompts

GOOD = json.dumps({"id": "ok", "messages": [{"role": "user", "content": "hi"}]})


def test_it_loads_the_shipped_set():
    prompts = load_prompts(SHIPPED_PROMPTS)
    assert len(prompts) >= 32
    assert len({p["id"] for p in prompts}) == len(prompts)
    assert all(p["messages"][-1]["role"] == "user" for p in prompts)


def test_it_ignores_extra_keys_and_blank_lines(prompt_file):
    prompt_file.write_text(prompt_file.read_text() + "\n\n")
    prompts = load_prompts(prompt_file)
    assert [p["id"] for p in prompts] == ["a", "b", "c"]
    assert set(prompts[2]) == {"id", "messages"}


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', '"id" must be'),
    ('{"id": "x", "messages": []}', '"messages" must be'),
    ('{"id": "x", "messages": [{"role": "user"}]}', "messages[0]"),
    (GOOD, "duplicate id"),
])
def test_it_rejects_a_malformed_line_with_its_number(tmp_path, bad, message):
    path = tmp_path / "p.jsonl"
    path.write_text(GOOD + "\n\n" + bad + "\n")
    with pytest.raises(PromptFileError) as e:
        load_prompts(path)
    assert f"{path}:3:" in str(e.value)
    assert message in str(e.value)

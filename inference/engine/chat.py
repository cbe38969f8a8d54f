"""Chat messages -> token ids, through the model's own chat template.

    ids = chat_ids(tokenizer, [{"role": "system", ...}, {"role": "user", ...}])

One way for everything that renders a conversation (the engine's prompts, the precision probe's
calibration chats):
- thinking off: templates with a thinking switch (Qwen3) get `enable_thinking=False`, so the
  reply is the answer, not a <think> block first; templates without one ignore the variable;
- no system role (Gemma-2-it, Mistral-7B-Instruct-v0.1 raise on one): the system text is merged
  into the first user turn, as Gemma-3's template does itself;
- control tokens typed in a message's text are encoded as the text they are;
- a model that cannot write the conversation at all (no template: a base model) is an EngineError.
"""

from __future__ import annotations

from jinja2 import TemplateError

from .errors import EngineError


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of `messages` as the chat template renders them, ready for the reply."""
    try:
        try:
            return _render(tokenizer, messages)
        except TemplateError:  # it refuses these turns: most often a system turn it has no role for
            merged = merge_system_turn(messages)
            if merged is None:
                raise
            return _render(tokenizer, merged)
    except (ValueError, TemplateError) as error:  # none (a base model), or one refusing these turns
        raise EngineError(f"the model's chat template cannot write this conversation ({error}); "
                          "a chat (instruct) model is needed") from None


def _render(tokenizer, messages: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        sanitize_control_tokens=True, enable_thinking=False)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding in newer transformers


def merge_system_turn(messages: list[dict]) -> list[dict] | None:
    """The conversation without its leading system turn, whose text opens the first user turn
    (or becomes one); None when it has no system turn to merge."""
    if not messages or messages[0].get("role") != "system":
        return None
    system, rest = messages[0]["content"], list(messages[1:])
    for i, message in enumerate(rest):
        if message.get("role") == "user":
            rest[i] = {**message, "content": f"{system}\n\n{message['content']}"}
            return rest
    return [{"role": "user", "content": system}] + rest

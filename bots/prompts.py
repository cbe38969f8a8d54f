"""Compile a bot (persona, voice, instructions, knowledge) and a conversation into chat messages.

``system_prompt(config, knowledge)`` is what the builder previews;
``build_messages(...)`` adds recent history and trims it to fit the model's context.
"""
from .knowledge import retrieve

TONES = {
    "friendly": "warm, friendly and approachable",
    "formal": "polite, professional and formal",
    "playful": "playful and upbeat, with light humour",
    "concise": "concise and factual",
}
LENGTHS = {
    "short": "Keep replies to one or two sentences.",
    "medium": "Keep replies to a short paragraph.",
    "long": "Give complete, detailed answers.",
}


def system_prompt(config, knowledge=()):
    """The system prompt for ``config`` with the retrieved ``knowledge`` pieces.

    The facts come right after who the bot is, with an explicit "answer using these
    facts": small models (the bundled 135M one) ignore facts left at the end of a
    long list of style rules, and answer from them when they come first.
    """
    who = f"You are {config['name']}"
    if config.get("role"):
        who += f", the {config['role']}"
    if config.get("company"):
        who += f" at {config['company']}"
    lines = [who + "."]
    if knowledge:
        lines.append("Answer the customer's question using these facts:")
        lines.extend(piece["text"] for piece in knowledge)
    lines.append(f"Your tone is {TONES.get(config.get('tone'), 'friendly')}.")
    lines.append(LENGTHS.get(config.get("reply_length"), LENGTHS["short"]))
    lines.append("Use emoji where they fit." if config.get("use_emoji") else "Do not use emoji.")
    if config.get("voice_notes", "").strip():
        lines.append("Style notes: " + config["voice_notes"].strip())
    if config.get("instructions", "").strip():
        lines.append(config["instructions"].strip())
    avoid = [t.strip() for t in config.get("topics_to_avoid", "").splitlines() if t.strip()]
    if avoid:
        lines.append("Never discuss: " + "; ".join(avoid) + ". Politely decline and steer back.")
    if config.get("fallback_answer"):
        condition = "If the facts do not answer the question" if knowledge else "If you do not know the answer"
        lines.append(f'{condition}, say: "{config["fallback_answer"]}"')
    return "\n".join(lines)


def build_messages(config, history, question, count_tokens=None, max_prompt_tokens=None):
    """Chat messages for the engine: system prompt with knowledge for ``question``, then history.

    ``history`` is a list of ``{"role", "content"}`` ending with the question. With
    ``count_tokens`` and ``max_prompt_tokens`` it is made to fit, never refused: the oldest turns go
    first (and a reply left first without its question); then a question longer than half the room
    keeps its beginning and end (a pasted document); then the least relevant knowledge; then the
    question is cut further, to a quarter of the room at least; last, the middle of the system
    prompt (a bot's very long instructions: who it is, the facts and the rules at the end stay).
    """
    knowledge = list(retrieve(config, question))
    turns = _from_the_customer(list(history))

    def compose():
        return [{"role": "system", "content": system_prompt(config, knowledge)}, *turns]

    messages = compose()
    if not (count_tokens and max_prompt_tokens):
        return messages

    def fits():
        return count_tokens(messages) <= max_prompt_tokens

    while len(turns) > 1 and not fits():
        turns = _from_the_customer(turns[1:])
        messages = compose()
    room = max_prompt_tokens
    if not fits() and count_tokens([turns[-1]]) > room // 2:
        turns[-1] = _cut(turns[-1], lambda m: count_tokens([m]) <= room // 2, _head_and_tail)
        messages = compose()
    while knowledge and not fits():
        knowledge = knowledge[:-1]
        messages = compose()
    if not fits() and count_tokens([turns[-1]]) > room // 4:
        fitting = _cut(turns[-1], lambda m: count_tokens([messages[0], *turns[:-1], m]) <= room, _head_and_tail)
        floor = _cut(turns[-1], lambda m: count_tokens([m]) <= room // 4, _head_and_tail)
        turns[-1] = max(fitting, floor, key=lambda m: len(m["content"]))
        messages = compose()
    if not fits():
        messages[0] = _cut(messages[0], lambda m: count_tokens([m, *turns]) <= room, _head_and_tail)
    return messages


def _from_the_customer(turns):
    """``turns`` without the bot's turns before the customer's first (what a window of the latest
    messages, or dropping the oldest, can leave): many chat templates refuse to start with them."""
    while len(turns) > 1 and turns[0]["role"] != "user":
        turns = turns[1:]
    return turns


def _head_and_tail(text, keep):
    half = keep // 2
    return text[:half].rstrip() + " […] " + text[len(text) - (keep - half):].lstrip()


def _cut(message, fits, shorten):
    """``message`` with its text shortened by ``shorten(text, keep)`` to the most characters that
    ``fits`` (a binary search: each try is one tokenisation)."""
    text = message["content"]
    low, high = 0, len(text)
    while low < high:
        keep = (low + high + 1) // 2
        if fits({**message, "content": shorten(text, keep)}):
            low = keep
        else:
            high = keep - 1
    return {**message, "content": shorten(text, low)}

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

    ``history`` is a list of ``{"role", "content"}`` ending with the question. Oldest
    turns are dropped first until ``count_tokens(messages) <= max_prompt_tokens``;
    the system prompt and the question always stay.
    """
    system = {"role": "system", "content": system_prompt(config, retrieve(config, question))}
    turns = list(history)
    messages = [system, *turns]
    if count_tokens and max_prompt_tokens:
        while len(turns) > 1 and count_tokens(messages) > max_prompt_tokens:
            turns = turns[1:]
            messages = [system, *turns]
    return messages

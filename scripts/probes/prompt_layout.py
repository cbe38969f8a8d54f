"""Where should a bot's retrieved facts go in the prompt? Answers carrying the fact vs prompt
tokens reused, for three layouts, on the demo bot with the configured engine (greedy).

    scripts/run.sh (once: creates the demo bot), then
    .venv/bin/python manage.py shell < scripts/probes/prompt_layout.py

- system: the platform's layout (bots/prompts.py): the facts for the latest question right
  after the bot's first line of the system prompt;
- accumulated: the facts of every retained user turn, oldest first, new ones appended (at most
  MAX_FACTS pieces; past that, from a later turn on), so a later turn keeps the earlier prefix;
- user turn: no facts in the system prompt; the latest user message carries them.

Each layout answers 16 demo questions with a known fact (a reply "carries the fact" when it
contains one of the expected strings), single questions and as four 4-question conversations.
README ("Prompt prefix reuse") has the 2026-11-27 numbers.
"""
from bots.knowledge import retrieve
from bots.models import Bot
from bots.prompts import system_prompt
from inference.runtime import engine_for

QA = [("What are your opening hours?", ["9am", "9 am", "monday"]), ("When are you open on Saturday?", ["10am", "10 am", "4pm"]),
      ("Is delivery free?", ["50"]), ("How much does delivery cost?", ["5 euro", "50"]),
      ("Can I return a bike I bought?", ["30 days"]), ("What's your refund policy?", ["30 days"]),
      ("Do you repair bikes?", ["49"]), ("How long does a bike service take?", ["two days", "2 days"]),
      ("How much is the Tejo e-bike?", ["1,890", "1890"]), ("What is the range of the Tejo?", ["80"]),
      ("Can I try a bike before buying?", ["free", "30 minutes"]), ("Where is your shop?", ["lisbon"]),
      ("When was Demo Bikes founded?", ["2012"]), ("Do you sell helmets?", ["helmet"]),
      ("Are you open on Sunday?", ["closed", "sunday"]), ("What kinds of bikes do you sell?", ["e-bike", "city", "kids"])]  # fmt: skip
MAX_FACTS = 6
MAX_NEW_TOKENS = 64

config = Bot.objects.get(organization__slug="demo-bikes", name="Ava").live_config()
engine = engine_for("none")


def questions(history):
    return [turn["content"] for turn in history if turn["role"] == "user"]


def in_system(history):
    facts = retrieve(config, questions(history)[-1])
    return [{"role": "system", "content": system_prompt(config, facts)}, *history]


def accumulated(history):
    asked = questions(history)
    for start in range(len(asked)):
        seen, facts = set(), []
        for question in asked[start:]:
            for piece in retrieve(config, question):
                if piece["text"] not in seen:
                    seen.add(piece["text"])
                    facts.append(piece)
        if len(facts) <= MAX_FACTS:
            break
    return [{"role": "system", "content": system_prompt(config, facts)}, *history]


def in_user_turn(history):
    facts = retrieve(config, questions(history)[-1])
    last = history[-1]["content"]
    if facts:
        last = "Facts:\n" + "\n".join(piece["text"] for piece in facts) + "\n\nQuestion: " + last
    return [{"role": "system", "content": system_prompt(config, ())}, *history[:-1], {"role": "user", "content": last}]


def run(layout, conversations):
    engine.prefixes.clear()
    hits = reused = prompt = 0
    groups = [QA[i::4] for i in range(4)] if conversations else [[qa] for qa in QA]
    for group in groups:
        history = []
        for question, expected in group:
            history.append({"role": "user", "content": question})
            result = engine.generate(layout(history), max_new_tokens=MAX_NEW_TOKENS)
            hits += any(text in result.text.lower() for text in expected)
            reused, prompt = reused + result.stats.prefix_reused, prompt + result.stats.prompt_tokens
            history.append({"role": "assistant", "content": result.text})
    return hits, reused, prompt


print(f"{'layout':<14}{'single: with fact':>20}{'conversations: with fact':>27}{'prompt tokens reused':>24}")
for name, layout in (("system", in_system), ("accumulated", accumulated), ("user turn", in_user_turn)):
    single, _, _ = run(layout, conversations=False)
    hits, reused, prompt = run(layout, conversations=True)
    print(f"{name:<14}{single:>17}/16{hits:>24}/16{reused:>14} / {prompt} ({reused / max(prompt, 1):.0%})")

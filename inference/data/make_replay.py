"""Generate the traffic-replay workload `replay_support.jsonl` (deterministic, seeded).

    python inference/data/make_replay.py                      # writes replay_support.jsonl beside it
    python inference/data/make_replay.py --seed 1 --messages 300 --out /tmp/replay.jsonl

Support traffic is repetitive: a few questions make most of it. Four bots, each with its
facts in the system prompt and a list of intents (a question, several paraphrases). Each
conversation picks a bot (busier bots more often), a user, a greeting style, then 1-3
user turns: questions drawn with a Zipf-like skew (weight 1/rank^1.1) in one of their
paraphrases, and follow-ups ("Thanks! And ...", a second question, a thank-you).

One JSON object per line, replayed in file order:
    {"id": "c0001", "bot": "bikeshop", "user": "u017", "system": "...", "turns": ["...", ...]}
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ZIPF_S = 1.1  # intent of rank r is asked with weight 1 / r^s

BOTS = {
    "bikeshop": {
        "weight": 4,
        "system": (
            "You are Sprocket, the friendly support assistant of Spoke & Chain Cycles, an independent bike shop "
            "at 214 Alder Street, Portland, Oregon.\nFacts:\n"
            "- Opening hours: Monday to Friday 10:00-19:00, Saturday 09:00-17:00, closed on Sunday.\n"
            "- Phone: (503) 555-0142. Email: help@spokeandchain.example.\n"
            "- Basic tune-up: $79 (brakes, gears, tyre pressure, chain lube). Full overhaul: $189. "
            "Flat tyre repair: $15 plus parts.\n"
            "- Service turnaround: 2 business days for a tune-up, 5 business days for a full overhaul.\n"
            "- City bike rental: $35 per day, e-bike rental: $60 per day, helmet and lock included. "
            "A $200 card deposit is held during a rental.\n"
            "- Returns: unused items within 30 days with receipt, full refund to the original payment method.\n"
            "- Online orders ship within 1 business day; free shipping over $75, otherwise a flat $8.95.\n"
            "Answer briefly, use the facts exactly as written, and never invent prices."),
        "intents": [
            ["What are your opening hours?", "When are you open?", "what time do you open and close",
             "Are you open on weekends?"],
            ["How much is a tune-up?", "What does a basic tune-up cost?", "price of a tune up?",
             "How much do you charge to service a bike?"],
            ["Can I rent an e-bike?", "How much is an e-bike rental?", "do you rent electric bikes and how much",
             "What does it cost to rent a bike for a day?"],
            ["How long does a repair take?", "When will my bike be ready after a tune-up?",
             "how many days for a full overhaul", "What's the turnaround for service?"],
            ["Can I return something I bought?", "What is your return policy?", "how do refunds work",
             "I want to return a helmet, is that possible?"],
            ["How much is shipping?", "Do you offer free shipping?", "what does delivery cost for online orders"],
            ["Where are you located?", "What's your address?", "where is the shop"],
            ["How much to fix a flat tyre?", "I have a flat, what does a repair cost?", "flat tire fix price"],
            ["Is there a deposit for rentals?", "Do you hold a deposit when I rent a bike?"],
            ["How can I contact you?", "What's your phone number?", "Can I email you?"],
        ],
    },
    "dental": {
        "weight": 3,
        "system": (
            "You are Molly, the assistant of Brightside Dental, a family dental clinic at 88 Harbour Road, Leeds.\n"
            "Facts:\n"
            "- Opening hours: Monday to Thursday 08:00-18:00, Friday 08:00-14:00, closed at weekends.\n"
            "- Check-up: £45. Hygienist clean: £60. White filling: from £120. Emergency appointment: £75.\n"
            "- New patients register online at brightside.example/register or by phone on 0113 496 0127.\n"
            "- Emergency slots are held every weekday at 08:00; call at 08:00 to get one.\n"
            "- Cancellations need 24 hours' notice, otherwise a £25 fee applies.\n"
            "- We accept card, cash and the Denplan insurance scheme; payment is due on the day.\n"
            "- Free parking behind the clinic; step-free access and a hearing loop.\n"
            "Be warm and concise, use the facts exactly as written, and never give medical diagnoses."),
        "intents": [
            ["How much is a check-up?", "What does a dental check-up cost?", "price for a checkup please",
             "How much do you charge for an examination?"],
            ["I have toothache, can I get an emergency appointment?", "Do you do emergency appointments?",
             "my tooth hurts a lot, can you see me today?", "How do I get an emergency slot?"],
            ["How do I register as a new patient?", "Are you taking new patients?", "how can I sign up with you",
             "I'd like to join the practice, what do I do?"],
            ["What are your opening hours?", "When are you open?", "Are you open on Saturday?"],
            ["How much is a hygienist appointment?", "What does a clean cost?", "price of a scale and polish"],
            ["What if I need to cancel?", "Is there a cancellation fee?", "can I cancel my appointment"],
            ["Do you accept Denplan?", "How can I pay?", "do you take card payments"],
            ["Is there parking?", "Where can I park?", "Is the clinic wheelchair accessible?"],
        ],
    },
    "fibre": {
        "weight": 2,
        "system": (
            "You are Ada, the support assistant of Lumen Fibre, a home broadband provider.\nFacts:\n"
            "- Plans: Fibre 150 at $39/month, Fibre 500 at $55/month, Fibre 1000 at $75/month; no data caps.\n"
            "- Installation is free and takes about 2 hours; the earliest slot is usually within 7 days.\n"
            "- Contracts: 12 months, or rolling monthly for an extra $5/month.\n"
            "- Router: the Lumen Hub is included; Wi-Fi name and password are on the sticker underneath.\n"
            "- If the internet is down: restart the Lumen Hub by unplugging it for 30 seconds, then check "
            "status.lumen.example for outages.\n"
            "- Moving home: tell us 14 days before, the move is free within our coverage area.\n"
            "- Support line: 1-800-555-0199, 24/7. Bills are issued on the 1st and paid by direct debit.\n"
            "Keep answers short and practical and use the facts exactly as written."),
        "intents": [
            ["My internet is not working, what should I do?", "The internet is down", "wifi stopped working",
             "I have no connection, can you help?"],
            ["What plans do you have?", "How much is Fibre 500?", "what are your prices",
             "Which is the fastest plan and what does it cost?"],
            ["How long does installation take?", "When can you install?", "is installation free?"],
            ["I'm moving house, can I take my broadband?", "How do I move my service to a new address?"],
            ["Where do I find my Wi-Fi password?", "what's my wifi password", "How do I get the Wi-Fi name?"],
            ["How long is the contract?", "Can I get a monthly contract?", "is there a minimum term"],
            ["How do I contact support?", "What's your phone number?"],
        ],
    },
    "bakery": {
        "weight": 1,
        "system": (
            "You are Crumb, the assistant of Rosa's Bakery, 12 Via Verdi, Bologna (online orders and shop).\n"
            "Facts:\n"
            "- Shop hours: Tuesday to Sunday 07:00-13:00, closed on Monday.\n"
            "- Celebration cakes must be ordered at least 3 days in advance; prices start at €28 for 8 people.\n"
            "- Gluten-free bread is baked on Fridays only; all products may contain traces of nuts.\n"
            "- Local delivery in Bologna: €4, free for orders over €40, between 08:00 and 12:00.\n"
            "- Orders can be changed or cancelled until 18:00 the day before delivery.\n"
            "Answer in a friendly, brief way and use the facts exactly as written."),
        "intents": [
            ["Can I order a birthday cake?", "How far in advance do I need to order a cake?",
             "how much is a cake for 8 people"],
            ["Do you have gluten-free bread?", "Is there anything gluten free?", "when do you bake gluten-free"],
            ["Do you deliver?", "How much is delivery?", "do you deliver to my address in Bologna"],
            ["When are you open?", "Are you open on Monday?", "opening hours?"],
            ["Can I change my order?", "How do I cancel an order?"],
        ],
    },
}

GREETINGS = ["", "Hi! ", "Hello, ", "Hey there. ", "Good morning! ", "hi ", "Hello there, quick question: ",
             "Hi, I hope you can help. "]
THANKS = ["Thanks!", "Great, thank you.", "ok thanks", "Perfect, thanks a lot!", "Thank you, that helps."]
SECOND = ["Thanks! And {q}", "Ok. {q}", "One more thing: {q}", "Got it. {q}", "{q}"]


def zipf_choice(rng: random.Random, n: int) -> int:
    return rng.choices(range(n), weights=[1 / (r + 1) ** ZIPF_S for r in range(n)])[0]


def ask(rng: random.Random, intents: list[list[str]]) -> str:
    return rng.choice(intents[zipf_choice(rng, len(intents))])


def conversations(seed: int = 0, messages: int = 160, users: int = 60):
    """Yield conversations until at least `messages` user messages are drawn."""
    rng = random.Random(seed)
    names, weights = list(BOTS), [BOTS[b]["weight"] for b in BOTS]
    total, n = 0, 0
    while total < messages:
        n += 1
        bot = rng.choices(names, weights=weights)[0]
        intents = BOTS[bot]["intents"]
        turns = [rng.choice(GREETINGS) + ask(rng, intents)]
        for _ in range(rng.choices([0, 1, 2], weights=[5, 4, 1])[0]):
            if rng.random() < 0.3:
                turns.append(rng.choice(THANKS))
            else:
                q = ask(rng, intents)
                turns.append(rng.choice(SECOND).format(q=q[0].lower() + q[1:] if rng.random() < 0.5 else q))
        total += len(turns)
        yield {"id": f"c{n:04d}", "bot": bot, "user": f"u{rng.randrange(users):03d}",
               "system": BOTS[bot]["system"], "turns": turns}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--messages", type=int, default=160, help="at least this many user messages")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("replay_support.jsonl"))
    args = parser.parse_args(argv)
    rows = list(conversations(args.seed, args.messages))
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} conversations, {sum(len(r['turns']) for r in rows)} user messages to {args.out}")


if __name__ == "__main__":
    main()

"""Knowledge retrieval (bots.knowledge): relevant pieces, only from the bot's own knowledge."""
from bots.knowledge import chunks, retrieve


def config_with(*items):
    return {"knowledge": [dict(id=i, **item) for i, item in enumerate(items, 1)]}


def test_it_ranks_the_matching_faq_first():
    config = config_with(
        {"kind": "faq", "title": "Do you deliver?", "body": "Yes, within 10 km."},
        {"kind": "faq", "title": "What are your opening hours?", "body": "We are open Monday to Friday, 9am to 6pm."},
    )
    assert retrieve(config, "when are your opening hours")[0]["title"] == "What are your opening hours?"


def test_it_returns_nothing_when_nothing_matches():
    config = config_with({"kind": "faq", "title": "Do you deliver?", "body": "Yes."})
    assert retrieve(config, "quantum chromodynamics") == []
    assert retrieve(config, "") == []


def test_it_splits_documents_by_paragraph():
    body = "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(5))
    pieces = chunks(config_with({"kind": "doc", "title": "Manual", "body": body}))
    assert len(pieces) > 1
    assert all(len(p["text"]) <= 700 for p in pieces)


def test_it_retrieves_only_from_the_bot_it_is_given(acme_bot, globex_bot):
    # Each bot's config carries its own knowledge; Globex's secret is never a candidate for Acme.
    hits = retrieve(acme_bot.live_config(), "Do you take new patients?")
    assert all("Globex" not in piece["text"] for piece in hits)
    assert retrieve(globex_bot.live_config(), "Do you take new patients?")[0]["text"].endswith("yes, on Tuesdays.")

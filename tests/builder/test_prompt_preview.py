"""The builder's system-prompt preview: unsaved form values compiled as the pipeline would."""
from django.urls import reverse

from bots.models import Bot

from .test_bot_pages import settings_data


def test_it_compiles_unsaved_values_without_saving_them(as_alice, acme_bot):
    data = settings_data(acme_bot, name="Zed", company="Zed Cycles", tone="formal", instructions="Always say thanks.")
    response = as_alice.post(reverse("bots:prompt_preview", args=[acme_bot.id]), data)
    assert response.status_code == 200
    prompt = response.json()["prompt"]
    assert prompt.startswith("You are Zed, the support assistant at Zed Cycles.")
    assert "polite, professional and formal" in prompt
    assert "Always say thanks." in prompt
    acme_bot.refresh_from_db()
    assert acme_bot.name == "Ava"


def test_it_puts_the_knowledge_retrieved_for_a_sample_question_in_the_prompt(as_alice, acme_bot):
    data = settings_data(acme_bot, sample_question="When are you open?")
    body = as_alice.post(reverse("bots:prompt_preview", args=[acme_bot.id]), data).json()
    assert "We are open Monday to Friday, 9am to 6pm." in body["prompt"]
    assert body["retrieved"][0]["title"] == "What are your opening hours?"


def test_it_leaves_knowledge_out_without_a_sample_question(as_alice, acme_bot):
    body = as_alice.post(reverse("bots:prompt_preview", args=[acme_bot.id]), settings_data(acme_bot)).json()
    assert "using these facts" not in body["prompt"]
    assert body["retrieved"] == []


def test_it_reports_invalid_fields_and_previews_the_rest(as_alice, acme_bot):
    data = settings_data(acme_bot, name="Yan", temperature="hot")
    body = as_alice.post(reverse("bots:prompt_preview", args=[acme_bot.id]), data).json()
    assert "temperature" in body["errors"]
    assert body["prompt"].startswith("You are Yan")


def test_it_matches_the_pipelines_prompt_for_the_saved_draft(as_alice, acme_bot):
    from bots.prompts import build_messages

    data = settings_data(acme_bot, sample_question="What are your opening hours?")
    body = as_alice.post(reverse("bots:prompt_preview", args=[acme_bot.id]), data).json()
    config = Bot.objects.get(id=acme_bot.id).live_config(draft=True)
    messages = build_messages(config, [{"role": "user", "content": "What are your opening hours?"}], "What are your opening hours?")
    assert body["prompt"] == messages[0]["content"]


def test_it_accepts_the_servers_default_drafter_spelled_out(as_alice, acme_bot, settings):
    """The preview checks the form on an unsaved Bot, so the bot's own drafter was offered only on
    the builder page: one equal to CHATNEXUS_DRAFTER ("model:…", as the API accepts) showed
    "ignoring invalid: drafter" on every keystroke."""
    settings.CHATNEXUS_DRAFTER = "model:var/drafts/ava"
    Bot.objects.filter(id=acme_bot.id).update(drafter="model:var/drafts/ava")
    acme_bot.refresh_from_db()
    body = as_alice.post(reverse("bots:prompt_preview", args=[acme_bot.id]), settings_data(acme_bot)).json()
    assert body["errors"] == {}

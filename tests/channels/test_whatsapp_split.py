"""Splitting a long WhatsApp reply as Twilio counts it (UTF-16 code units, at most 1,600 a message):
emoji count two, Chinese and Japanese are cut after a sentence's 。！？, and no part ends inside a
grapheme cluster (a flag, a family emoji, a letter and its accent)."""
import pytest
import regex

from bots import services
from bots.models import Message
from channels_app.tasks import deliver
from channels_app.whatsapp.split import split_text

from .conftest import CUSTOMER


def utf16(text):
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.django_db
def test_a_reply_of_emoji_goes_out_in_parts_twilio_accepts(whatsapp_channel, twilio_stub):
    text = "🚚 " * 700  # 1,399 characters, 2,099 UTF-16 units: one body Twilio refuses for good (21617)
    inbound = services.receive(bot=whatsapp_channel.bot, channel="whatsapp", thread_id=CUSTOMER, text="Where is it?",
                               external_id="SM" + "e" * 32, answer=False, skip_reason="test").message
    reply, _ = services.record_reply(inbound, text, {})
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == Message.Delivery.SENT, reply.delivery_error
    bodies = [request["form"]["Body"] for request in twilio_stub.messages(to=CUSTOMER)]
    assert len(bodies) == 2 and all(utf16(body) <= 1600 for body in bodies)
    assert " ".join(bodies) == text.strip()


@pytest.mark.parametrize("sentence", ["今日は自転車の修理について、詳しくご説明いたします。", "您的自行车明天可以取吗？可以！"])
def test_chinese_and_japanese_are_cut_after_a_sentence_end(sentence):
    text = sentence * 120  # no spaces at all, and no sentence ends at the 1,600th character
    parts = split_text(text)
    assert len(parts) > 1
    assert all(utf16(part) <= 1600 and part[-1] in "。？！" for part in parts)
    assert "".join(parts) == text


@pytest.mark.parametrize("cluster", [
    "👨\u200d👩\u200d👧\u200d👦",  # a family: four emoji joined by ZWJs
    "🇩🇪",  # a flag: two regional indicators
    "❤\ufe0f",  # a heart with its emoji variation selector
    "e\u0301",  # e and a combining acute accent
    "👍🏽",  # a thumb and its skin tone
])
def test_no_part_ends_inside_a_grapheme_cluster(cluster):
    text = "a" + cluster * (3300 // utf16(cluster))  # the "a" moves every cluster's start off even positions
    parts = split_text(text)
    assert len(parts) > 1
    assert "".join(parts) == text
    for part in parts:
        assert utf16(part) <= 1600
        assert all(piece in ("a", cluster) for piece in regex.findall(r"\X", part)), part[-4:]

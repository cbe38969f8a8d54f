"""The worker stops a reply that has started repeating itself (small models loop)."""
import pytest

from inference.tasks import repetition_cut


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I'm ready to assist you.\n\nI'm ready to assist you.\n\nI'm re", "I'm ready to assist you."),
        ("We open at 9am. Bring your bike. We open at 9am. Bring", "We open at 9am. Bring your bike."),
        ("The answer to your question is:\nThe answer to your question is:\nThe", "The answer to your question is:"),
        # one word more than an earlier sentence (seen from the bundled model on the demo bot)
        ("We repair all brands.\nWe also offer a tune-up for e-bikes.\nWe offer a tune-up for e-bikes.\nW",
         "We repair all brands.\nWe also offer a tune-up for e-bikes."),
        # a stretch said twice in a row with no sentence break between (same)
        ("A: 49 euros, 80 km range We offer 1,890 euros, 80 km range We offer 1,890 euros, 80 km range",
         "A: 49 euros, 80 km range We offer 1,890 euros, 80 km range"),
        # a loop whose period starts mid-sentence ends the reply at the last sentence break before
        # it, not at "... but I can" (seen in an email auto-reply)
        ("Hi,\n\nI'm not sure about that, but I'm sure I can help you with your bike.\n\n"
         "I'm not sure about that, but I can help you with your bike.\n\nI'm not sure about that, but I can",
         "Hi,\n\nI'm not sure about that, but I'm sure I can help you with your bike."),
    ],
)
def test_it_cuts_a_reply_at_the_first_repeat(text, expected):
    assert repetition_cut(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "We are open Monday to Friday, 9am to 6pm. On Saturdays we open at 10am.",
        "Yes. Yes. Sure thing.",  # short pieces may repeat
        "A tune-up is $79. A tune-up is $79",  # the last piece may still be growing: not a finished repeat
        # sentences alike but saying different things: not one word added
        "We open at 9am on Monday. We open at 10am on Saturday. Closed on Sunday.",
        "Delivery is free over 50 euros. Delivery costs 5 euros otherwise. Thanks!",
        "Yes, we sell it. Yes, we do sell it.",  # one word more, but short sentences may echo
        "Your order number is 12345 12345.",  # a short stretch twice is no loop
    ],
)
def test_it_leaves_a_reply_without_finished_repeats_alone(text):
    assert repetition_cut(text) is None


def test_once_the_model_has_stopped_its_last_sentence_counts_too():
    ended = "We open at nine every morning. We open at nine every morning."  # the model stopped here (fp32)
    assert repetition_cut(ended) is None  # while streaming, the last sentence may still be growing
    assert repetition_cut(ended, finished=True) == "We open at nine every morning."
    assert repetition_cut("We are open Monday to Friday. Closed on Sunday.", finished=True) is None


def test_the_worker_cuts_a_real_reply_that_repeats_itself_and_says_so(transactional_db, celery_workers, acme_bot):
    """The bundled model, primed by a looping earlier reply, repeats itself (fp32, int8 and int4
    alike, measured); the stored reply says it once and its stats say why it stopped."""
    from bots import services
    from bots.models import Message
    from tests.conftest import wait_for

    loop = "We open at nine every morning. We open at nine every morning. We open at nine every morning."
    first = services.receive(bot=acme_bot, channel="preview", thread_id="loop", text="When do you open?", answer=False)
    services.record_reply(first.message, loop, {})
    asked = services.receive(bot=acme_bot, channel="preview", thread_id="loop", text="When do you open?").message
    reply = wait_for(lambda: Message.objects.filter(reply_to=asked).first(), timeout=180, what="the reply")
    assert reply.stats["stop_reason"] == "repetition" and reply.stop_note == "cut where it began repeating itself"
    assert reply.text.count("We open at nine") == 1, reply.text

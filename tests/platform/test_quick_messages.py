"""A customer who writes twice quickly, in the embedded `manage.py serve` (two worker threads, one
model): the second message waits for the model while the first is answered. It is answered
knowing the reply to the first — its history read, and the first reply stored, while the model is
held. Read before, its prompt had the two questions in a row, and the model answered the first again
(the history's order itself: test_pipeline.py)."""
import sys
import threading

import pytest
from django.db import connection, transaction

from bots import services
from bots.models import Bot, Message
from tests.conftest import wait_for
from tests.platform.test_takeover import waiting_for_the_model


@pytest.fixture(scope="module")
def roomy_target_dir(tmp_path_factory) -> str:
    """The tiny random Llama of the suite (a byte tokenizer) with room for a whole conversation: with
    512 positions the oldest turns, the very ones this is about, are the first left out."""
    from tests.engine.conftest import byte_tokenizer, save, tiny_llama

    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer), layers=2, hidden=64, seed=0)
    model.config.max_position_embeddings = 4096
    return save(model, tokenizer, tmp_path_factory.mktemp("roomy-target"))


def at_the_first_messages_row(thread) -> bool:
    """Is ``thread`` (running inference.tasks), holding the model, at the first message's row: counting
    the model's start on it (services.reply_started) or storing its reply (services.record_reply)?"""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name in ("reply_started", "record_reply"):
            return True
        frame = frame.f_back
    return False


def answer(message_id):
    """The reply task, as a worker thread of `serve` runs it."""
    from inference.tasks import generate_reply

    try:
        generate_reply(message_id)
    finally:
        connection.close()  # this thread's own connection: the test database is emptied after the test


def test_a_second_message_waiting_for_the_model_is_answered_knowing_the_reply_to_the_first(
        transactional_db, settings, roomy_target_dir, acme_bot):
    from inference import runtime, tasks

    settings.CHATNEXUS_TARGET, settings.CHATNEXUS_DTYPE = roomy_target_dir, "fp32"
    settings.CHATNEXUS_DRAFTER, settings.CHATNEXUS_DEVICE = "none", "cpu"
    engine = runtime.engine_for()  # loaded before the race below
    assert engine.context_length == 4096
    first = services.receive(bot=acme_bot, channel="widget", thread_id="v-quick", text="When are you open?",
                             answer=False).message
    second = services.receive(bot=acme_bot, channel="widget", thread_id="v-quick", text="And where is the shop?",
                              answer=False).message
    Message.objects.filter(id__in=[first.id, second.id]).update(reply_state=Message.ReplyState.PENDING)

    with transaction.atomic():
        # the first task, holding the model, waits on the first message's row until the second task has
        # come as far as it can: to the model, which the first holds until its reply is stored
        Message.objects.select_for_update().get(id=first.id)
        one = threading.Thread(target=answer, args=[first.id])
        one.start()
        wait_for(lambda: at_the_first_messages_row(one), what="the first task at its message, holding the model")
        two = threading.Thread(target=answer, args=[second.id])
        two.start()
        wait_for(lambda: waiting_for_the_model(two) or not two.is_alive(), what="the second task at the model")
    one.join(60)
    two.join(60)

    replies = {m.reply_to_id: m for m in Message.objects.filter(reply_to__in=[first, second], sender="bot")}
    assert set(replies) == {first.id, second.id}
    # what the second reply was written from: the two questions, the first's reply between them
    history = tasks._history(second)
    assert [turn["role"] for turn in history] == ["user", "assistant", "user"]
    assert history[1]["content"] == replies[first.id].text
    prompt = tasks._prompt(second, Bot.objects.get(id=acme_bot.id).live_config(), engine)
    assert replies[second.id].stats["prompt_tokens"] == runtime.count_tokens(engine, prompt)

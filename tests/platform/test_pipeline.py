"""The pipeline end to end on real PostgreSQL, Redis and Celery workers (the bundled model):
a stored message becomes a stored, delivered reply with decoding stats, once."""
import re

from tests.conftest import wait_for

from bots import services
from bots.models import Bot, Conversation, Message
from bots.models.conversations import channel_name


def reply_to(inbound):
    return Message.objects.filter(reply_to=inbound).first()


def test_it_turns_a_stored_message_into_a_stored_reply_with_stats(transactional_db, celery_workers, acme_bot):
    received = services.receive(bot=acme_bot, channel="preview", thread_id="t1", text="When are you open?")
    assert received.created and received.message.reply_state == "pending"
    reply = wait_for(lambda: reply_to(received.message), timeout=120, what="the bot's reply")
    assert reply.sender == "bot" and reply.text.strip()
    assert reply.stats["new_tokens"] > 0 and reply.stats["target_forwards"] > 0
    assert reply.latency_s > 0 and reply.tokens_per_s > 0 and reply.ttft_s is not None
    assert acme_bot.drafter == "" and reply.stats["drafter"] == "suffix"  # no choice: the platform default
    assert reply.stats["precision"] in ("fp32", "int8", "int4", "int4a8")  # CHATNEXUS_DTYPE=auto: measured by the worker
    received.message.refresh_from_db()
    assert received.message.reply_state == "done"
    assert received.message.meta["starts"] == 1  # the task counted its start (the sweep's poison count)
    wait_for(lambda: Message.objects.get(id=reply.id).delivery_status == "sent", what="delivery")


def test_it_decodes_with_the_drafter_the_bot_chose(transactional_db, celery_workers, acme_bot):
    acme_bot.drafter = "lookup"
    acme_bot.save(update_fields=["drafter"])
    acme_bot.publish()
    received = services.receive(bot=acme_bot, channel="preview", thread_id="t5", text="When are you open?")
    reply = wait_for(lambda: reply_to(received.message), timeout=120, what="the bot's reply")
    assert reply.stats["drafter"] == "lookup"


def succeeded(worker):
    return len(re.findall(r"generate_reply\[[^\]]+\] succeeded", worker.output()))


def test_it_stores_one_reply_when_the_task_runs_twice(transactional_db, celery_workers, acme_bot):
    from inference.tasks import generate_reply

    worker = celery_workers["inference"]
    before = succeeded(worker)
    received = services.receive(bot=acme_bot, channel="preview", thread_id="t2", text="Hi!")
    generate_reply.delay(received.message.id)  # a duplicate enqueue, beside the one receive() queued
    wait_for(lambda: reply_to(received.message), timeout=120, what="the bot's reply")
    assert generate_reply.apply(args=[received.message.id]).get() is None  # in-process: nothing to do twice
    wait_for(lambda: succeeded(worker) >= before + 2, what="both queued tasks to finish")
    assert Message.objects.filter(reply_to=received.message).count() == 1
    assert Message.objects.filter(conversation=received.conversation, direction="out").count() == 1


def test_it_returns_the_first_reply_when_recorded_twice(db, acme_bot):
    received = services.receive(bot=acme_bot, channel="preview", thread_id="t3", text="Hi")
    first, created = services.record_reply(received.message, "one", {"new_tokens": 1})
    second, created_again = services.record_reply(received.message, "two", {"new_tokens": 1})
    assert created and not created_again and second.id == first.id and second.text == "one"


def test_it_hands_off_to_a_human_and_emails_the_team(transactional_db, celery_workers, mailbox, alice, bob, acme_bot):
    received = services.receive(bot=acme_bot, channel="widget", thread_id="t4", text="Can I talk to a human please?")
    conversation = Conversation.objects.get(id=received.conversation.id)
    assert conversation.bot_paused and conversation.needs_human
    assert received.message.reply_state == "skipped"
    notice = Message.objects.get(reply_to=received.message)
    assert notice.sender == "system" and notice.text == services.HANDOFF_REPLY
    mails = wait_for(lambda: mailbox.messages, what="the handoff email")
    assert sorted(mails[0]["to"]) == ["alice@example.com", "bob@example.com"]
    assert f"/inbox/{conversation.id}/" in mails[0]["message"].get_content()
    assert f"a person ({channel_name('widget')}, {acme_bot.name})" in mails[0]["message"].get_content()  # not "widget"
    # While the agent has it, the bot stays silent.
    later = services.receive(bot=acme_bot, channel="widget", thread_id="t4", text="Hello?")
    assert later.message.reply_state == "skipped"


def test_a_handoff_in_the_builders_test_chat_emails_nobody(db, smtp_settings, alice, bob, acme_bot):
    """The test chat is a manager trying the bot: the team is not told a customer is waiting."""
    from bots.tasks import notify_agents_of_handoff

    received = services.receive(bot=acme_bot, channel="preview", thread_id="t5", text="Can I talk to a human please?")
    assert Message.objects.get(reply_to=received.message).text == services.HANDOFF_REPLY  # the test chat shows it
    notify_agents_of_handoff(received.conversation.id)  # as the worker would, had it been queued
    assert smtp_settings.messages == []


def test_the_handoff_message_is_the_bots_own_as_published(db, acme_bot):
    acme_bot.handoff_message = "Un membre de l'équipe va vous répondre ici."
    acme_bot.save()
    first = services.receive(bot=acme_bot, channel="widget", thread_id="fr-1", text="Je veux talk to a human")
    assert Message.objects.get(reply_to=first.message).text == services.HANDOFF_REPLY  # the draft is not live yet
    acme_bot.publish()
    second = services.receive(bot=acme_bot, channel="widget", thread_id="fr-2", text="Je veux talk to a human")
    assert Message.objects.get(reply_to=second.message).text == "Un membre de l'équipe va vous répondre ici."
    acme_bot.handoff_message = "  "
    acme_bot.save()
    acme_bot.publish()
    blank = services.receive(bot=acme_bot, channel="widget", thread_id="fr-3", text="talk to a human")
    assert Message.objects.get(reply_to=blank.message).text == services.HANDOFF_REPLY  # blank: the default


def test_it_retrieves_knowledge_from_its_own_bot_only(db, acme_bot, globex_bot):
    from bots.prompts import build_messages

    question = "Do you take new patients?"  # answered by Globex's knowledge, not Acme's
    system = build_messages(acme_bot.live_config(), [{"role": "user", "content": question}], question)[0]["content"]
    assert "Globex secret" not in system
    system = build_messages(globex_bot.live_config(), [{"role": "user", "content": question}], question)[0]["content"]
    assert "Globex secret" in system
    hours = "What are your opening hours?"
    system = build_messages(acme_bot.live_config(), [{"role": "user", "content": hours}], hours)[0]["content"]
    assert "Monday to Friday" in system


def test_a_customer_who_writes_while_the_team_has_it_gets_the_agent_emailed_once_a_wait(
        transactional_db, celery_workers, mailbox, alice, bob, acme_bot):
    worker = celery_workers["default"]

    def notices_done():
        return len(re.findall(r"notify_team_of_message\[[^\]]+\] succeeded", worker.output()))

    def customer(text, **kwargs):
        before = notices_done()
        received = services.receive(bot=acme_bot, channel="widget", thread_id="v-wait", text=text, **kwargs)
        wait_for(lambda: notices_done() > before, what="the notice task")
        return received

    handoff = services.receive(bot=acme_bot, channel="widget", thread_id="v-wait", text="Can I talk to a human?")
    wait_for(lambda: len(mailbox.messages) == 1, what="the handoff email")
    customer("Hello? Anyone there?")  # the team was just told: no second email for the same wait
    assert len(mailbox.messages) == 1

    conversation = Conversation.objects.get(id=handoff.conversation.id)
    services.agent_reply(conversation, bob, "Hi, Bob here. How can I help?")  # Bob has it now
    customer("How much is a tune-up? " + "x" * 600)
    mail = wait_for(lambda: mailbox.messages[1:], what="the email to the assignee")[0]
    body = mail["message"].get_content()
    assert mail["to"] == ["bob@example.com"] and "Website visitor" in mail["message"]["Subject"]
    assert "How much is a tune-up?" in body and "x" * 600 not in body  # an excerpt
    assert f"/inbox/{conversation.id}/" in body and "assigned to you" in body
    customer("Also, do you fix e-bikes?")  # still unanswered since the last email
    assert len(mailbox.messages) == 2

    services.agent_reply(conversation, bob, "Send me a photo of the motor?")
    customer("", answer=False, skip_reason="image only: answered with a canned text reply",
             files=[("motor.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(16))])  # a photo alone: still a person
    mail = wait_for(lambda: mailbox.messages[2:], what="the email about the photo")[0]
    assert "1 file(s) attached." in mail["message"].get_content()
    services.agent_reply(conversation, bob, "Got it, thanks.")
    services.receive(bot=acme_bot, channel="widget", thread_id="v-wait", text="Out of office until Monday",
                     answer=False, skip_reason="automatic reply", automated=True)  # a machine: nobody is told
    customer("One more thing.")  # a person again: the notice task runs, and it is the fourth email
    assert len(mailbox.messages) == 4 and "One more thing." in mailbox.messages[3]["message"].get_content()

    services.agent_reply(conversation, bob, "Yes, we do.")
    services.set_bot_paused(Conversation.objects.get(id=conversation.id), False)  # given back to the bot
    later = services.receive(bot=acme_bot, channel="widget", thread_id="v-wait", text="Great, thanks")
    assert later.message.reply_state == "pending"  # the bot answers it: nobody is emailed
    wait_for(lambda: Message.objects.get(id=later.message.id).reply_state == "done", what="the bot's reply")
    assert len(mailbox.messages) == 4


def test_members_who_turned_email_notices_off_get_none(db, smtp_settings, client, alice, bob, acme, globex, acme_bot):
    from bots.models import Membership
    from bots.tasks import notify_agents_of_handoff, notify_team_of_message

    client.force_login(bob)
    assert 'name="notify_%d" checked' % acme.id in client.get("/accounts/").content.decode()
    client.post("/accounts/notifications/", {})  # nothing ticked: off for every organisation of his
    assert not Membership.objects.get(user=bob, organization=acme).notify_by_email
    assert Membership.objects.get(user=alice, organization=acme).notify_by_email  # others' untouched

    handoff = services.receive(bot=acme_bot, channel="widget", thread_id="quiet", text="Can I talk to a human?")
    notify_agents_of_handoff(handoff.conversation.id)  # run here, as the worker would
    assert [m["to"] for m in smtp_settings.messages] == [["alice@example.com"]]

    conversation = Conversation.objects.get(id=handoff.conversation.id)
    services.agent_reply(conversation, bob, "Bob here.")  # assigned to Bob, who wants no emails
    later = services.receive(bot=acme_bot, channel="widget", thread_id="quiet", text="Thanks, and the price?")
    notify_team_of_message(later.message.id)
    assert [m["to"] for m in smtp_settings.messages[1:]] == [["alice@example.com"]]  # the team's in his place
    client.post("/accounts/notifications/", {f"notify_{acme.id}": "on"})
    assert Membership.objects.get(user=bob, organization=acme).notify_by_email


def test_a_customers_name_with_a_line_break_still_reaches_the_team(db, smtp_settings, alice, acme_bot):
    """Django refuses line breaks in mail headers: a subject built from the name failed every retry."""
    from bots.tasks import notify_team_of_message

    first = services.receive(bot=acme_bot, channel="api", thread_id="u\n1", text="Hello",
                             contact={"name": "Ann\nLee"})
    services.agent_reply(Conversation.objects.get(id=first.conversation.id), alice, "Hi Ann.")
    later = services.receive(bot=acme_bot, channel="api", thread_id="u\n1", text="And the price?",
                             contact={"name": "Ann\nLee"})
    notify_team_of_message(later.message.id)
    [sent] = smtp_settings.messages
    assert sent["message"]["Subject"] == f"[{acme_bot.name}] Ann Lee wrote"


def test_a_reply_that_fails_hands_the_customer_to_the_team_with_the_handoff_message(db, settings, alice, acme_bot,
                                                                                    tmp_path):
    """A model that cannot answer (here its file is missing) must not leave the customer waiting in
    silence: they get the bot's handoff message, and the team gets the conversation."""
    from inference.tasks import generate_reply

    settings.CHATNEXUS_TARGET = str(tmp_path / "gone.gguf")
    received = services.receive(bot=acme_bot, channel="widget", thread_id="v-fail", text="Do you fix e-bikes?")
    Message.objects.filter(id=received.message.id).update(reply_state="pending")
    generate_reply(received.message.id)  # run here, as the worker would
    inbound = Message.objects.get(id=received.message.id)
    assert inbound.reply_state == "failed" and "gone.gguf" in inbound.meta["error"]
    notice = Message.objects.get(reply_to=inbound)
    assert notice.sender == "system" and notice.text == services.HANDOFF_REPLY
    assert notice.delivery_status == "pending"  # on its way to the customer through the widget
    conversation = Conversation.objects.get(id=received.conversation.id)
    assert conversation.needs_human and conversation.bot_paused and conversation.team_notified_at
    generate_reply(received.message.id)  # run twice: still one notice
    assert Message.objects.filter(reply_to=inbound).count() == 1


def test_the_history_holds_the_bots_reply_to_an_earlier_message_stored_after_the_next_one(db, acme_bot):
    """Two messages sent close together: when the second is answered, the reply to the first (stored
    after the second arrived, so with a higher id) is in the history, right after what it answers —
    without it the model sees two questions in a row and answers the first again."""
    from inference.tasks import _history

    first = services.receive(bot=acme_bot, channel="whatsapp", thread_id="+15550001", text="When are you open?")
    second = services.receive(bot=acme_bot, channel="whatsapp", thread_id="+15550001", text="And on Sundays?")
    services.record_reply(first.message, "Nine to six, Monday to Saturday.", {"new_tokens": 9})
    assert _history(second.message) == [
        {"role": "user", "content": "When are you open?"},
        {"role": "assistant", "content": "Nine to six, Monday to Saturday."},
        {"role": "user", "content": "And on Sundays?"},
    ]
    later = services.receive(bot=acme_bot, channel="whatsapp", thread_id="+15550001", text="Thanks!")
    services.record_reply(later.message, "You're welcome.", {"new_tokens": 3})
    assert "You're welcome." not in str(_history(second.message))  # nothing after the message answered


def test_a_message_longer_than_the_models_context_is_shortened_not_failed(db, settings, tiny_target_dir, acme_bot):
    """A pasted document (or a bot's long instructions) used to make the prompt too long for the
    model: every reply failed. The question keeps its beginning and end; the reply is the model's."""
    from inference import runtime
    from inference.tasks import _generate, generate_reply

    settings.CHATNEXUS_TARGET, settings.CHATNEXUS_DTYPE = tiny_target_dir, "fp32"
    settings.CHATNEXUS_DRAFTER, settings.CHATNEXUS_DEVICE = "none", "cpu"
    assert runtime.engine_for().context_length == 512  # bytes: far less than the message below
    pasted = "Order 4411 arrived broken. " + "The frame is scratched all over. " * 120 + "Can I get a refund?"
    received = services.receive(bot=acme_bot, channel="widget", thread_id="v-long", text=pasted)
    Message.objects.filter(id=received.message.id).update(reply_state="pending")
    generate_reply(received.message.id)
    inbound = Message.objects.get(id=received.message.id)
    assert inbound.reply_state == "done", inbound.meta.get("error")
    assert Message.objects.get(reply_to=inbound).sender == "bot"

    acme_bot.instructions = "Always be kind. " * 400  # the bot's own text alone past the context
    acme_bot.save()
    acme_bot.publish()
    again = services.receive(bot=acme_bot, channel="widget", thread_id="v-long-2", text="Can I get a refund?")
    reply, _ = _generate(Message.objects.get(id=again.message.id), Bot.objects.get(id=acme_bot.id).live_config())
    assert reply.sender == "bot" and reply.stats["new_tokens"] > 0


def test_a_shortened_question_keeps_its_beginning_and_end(db, acme_bot):
    from bots.prompts import build_messages

    def words(messages):
        return sum(len(m["content"].split()) + 3 for m in messages)

    question = "Order 4411 arrived broken. " + "filler " * 500 + "Can I get a refund?"
    messages = build_messages(acme_bot.live_config(), [{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "Hello!"},
                                                       {"role": "user", "content": question}],
                              question, count_tokens=words, max_prompt_tokens=200)
    assert words(messages) <= 200 and len(messages) == 2  # the earlier turns went first
    assert messages[1]["content"].startswith("Order 4411 arrived broken.")
    assert messages[1]["content"].endswith("Can I get a refund?") and "[…]" in messages[1]["content"]


def test_asking_for_a_human_again_while_the_team_has_the_conversation_is_no_second_handoff(db, acme_bot):
    """The widget's "Human" button, pressed again (or after an agent took over), used to send the
    handoff message again, email the whole team again and flag the conversation again."""
    first = services.receive(bot=acme_bot, channel="widget", thread_id="v-h", text="I'd like a human", answer=False,
                             skip_reason="handoff")
    notified = Conversation.objects.get(id=first.conversation.id).team_notified_at
    again = services.receive(bot=acme_bot, channel="widget", thread_id="v-h", text="I'd like a human", answer=False,
                             skip_reason="handoff")
    assert again.message.meta["skip_reason"] == "agent has the conversation"
    assert Message.objects.filter(conversation=first.conversation, sender="system").count() == 1
    assert Conversation.objects.get(id=first.conversation.id).team_notified_at == notified


def test_two_customer_messages_in_a_row_are_one_turn_for_the_model(db, acme_bot):
    from inference.tasks import _history

    first = services.receive(bot=acme_bot, channel="whatsapp", thread_id="+15550002", text="Hello?", answer=False)
    second = services.receive(bot=acme_bot, channel="whatsapp", thread_id="+15550002", text="Do you fix e-bikes?")
    assert first.message.reply_state == "skipped"
    assert _history(second.message) == [{"role": "user", "content": "Hello?\n\nDo you fix e-bikes?"}]


def test_the_handoff_email_outlasts_a_mail_server_down_for_a_while(db, settings, alice, acme_bot):
    """Six refusals in a row (a mail server restarting) used to drop the email for good — and with it
    the team's only word that a customer waits, since later messages are not emailed meanwhile."""
    from aiosmtpd.controller import Controller

    from bots.tasks import notify_agents_of_handoff
    from tests.conftest import SMTPSink, free_port

    class Restarting(SMTPSink):
        refusals = 6

        async def handle_DATA(self, server, session, envelope):
            if self.refusals:
                self.refusals -= 1
                return "451 Try again later"
            return await super().handle_DATA(server, session, envelope)

    sink = Restarting()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
        received = services.receive(bot=acme_bot, channel="widget", thread_id="v-smtp", text="Can I talk to a human?")
        notify_agents_of_handoff.apply(args=[received.conversation.id])  # here, retries run at once
    finally:
        controller.stop()
    assert [m["to"] for m in sink.messages] == [["alice@example.com"]]


def test_a_bots_very_long_instructions_give_way_before_the_question_and_the_rules(db, acme_bot):
    from bots.prompts import build_messages

    def words(messages):
        return sum(len(m["content"].split()) + 3 for m in messages)

    config = {**acme_bot.live_config(), "instructions": "Always be kind. " * 300, "topics_to_avoid": "politics"}
    question = "Order 4411 arrived broken. " + "filler " * 60 + "Can I get a refund?"
    history = [{"role": "assistant", "content": "Hello! How can I help?"},  # a window that starts with the bot
               {"role": "user", "content": question}]
    system, turn = build_messages(config, history, question, count_tokens=words, max_prompt_tokens=200)
    assert words([system, turn]) <= 200
    assert turn["role"] == "user" and turn["content"].startswith("Order 4411") and turn["content"].endswith("refund?")
    assert system["content"].startswith("You are Ava") and "Never discuss: politics" in system["content"]
    assert "[…]" in system["content"]  # the instructions' middle went


def test_a_question_that_fits_is_left_whole(db, acme_bot):
    from bots.prompts import build_messages

    def words(messages):
        return sum(len(m["content"].split()) + 3 for m in messages)

    question = "Order 4411 arrived broken. " + "filler " * 240 + "Can I get a refund?"
    messages = build_messages(acme_bot.live_config(), [{"role": "user", "content": question}], question,
                              count_tokens=words, max_prompt_tokens=400)
    assert messages[1]["content"] == question  # over half the room, but the prompt fits

"""CHATNEXUS_TASK_TIME_LIMIT holds wherever a reply is generated: the embedded `manage.py serve`
(worker threads, where Celery enforces no time limit) and a separate worker process alike.

The margin kept for storing the reply (CHATNEXUS_TASK_TIME_MARGIN_S) leaves a millisecond of the
limit, so the deadline has passed when the engine starts (building the prompt alone takes longer),
whatever the machine's speed: nothing was said by then, so the customer gets the bot's handoff message (delivered) and the team the conversation, as
when the model fails. A reply cut after it said something is stored as said and marked "stopped at
the time limit" (tests/engine/test_deadline.py, the inbox's stop notes).
"""
import json
import sys

from bots import services
from bots.models import Message
from tests.conftest import Service, embedded_env, free_port, manage, service_env, start_worker, wait_for

LIMIT = {"CHATNEXUS_TASK_TIME_LIMIT": "5", "CHATNEXUS_TASK_TIME_MARGIN_S": "4.999",  # the deadline 1 ms in
         "CHATNEXUS_MAX_REPLY_TOKENS": "512",  # long enough that the bundled model would run on
         "CHATNEXUS_DTYPE": "fp32"}  # no precision probe (a minute) before the worker takes work
QUESTION = "Write a long, detailed story about a bicycle trip across Portugal, at least ten paragraphs."


def assert_handed_over(reply, handoff_message):
    """Nothing said in time: the handoff message (not a model reply), the question marked failed with why."""
    assert reply["sender"] == "system" and reply["text"] == handoff_message, reply
    assert reply["asked"] == "failed" and "time limit" in reply["error"], reply
    assert reply["needs_human"] and reply["paused"]


ASK_BEFORE_SERVE = f"""
from bots.models import Bot, Conversation, Message
bot = Bot.objects.get(organization__slug="demo-bikes")
conversation = Conversation.objects.create(organization=bot.organization, bot=bot, channel="preview",
                                           external_id="late")
message = Message.objects.create(organization=bot.organization, bot=bot, conversation=conversation, channel="preview",
                                 direction="in", sender="customer", text={QUESTION!r}, reply_state="pending")
print(message.id)
"""

REPLY = """
import json
from bots.models import Message
reply = Message.objects.filter(reply_to_id={id}).first()
print(json.dumps(reply and dict(text=reply.text, sender=reply.sender, delivery=reply.delivery_status,
                                handoff=reply.bot.handoff_message, asked=reply.reply_to.reply_state,
                                error=reply.reply_to.meta.get("error", ""),
                                needs_human=reply.conversation.needs_human, paused=reply.conversation.bot_paused)))
"""


def test_the_embedded_serve_stops_a_reply_at_the_time_limit(tmp_path):
    """`serve` queues again at start what was left waiting: the message is answered by its worker
    threads. Before, nothing stopped a generation there: the model ran on until it ended the reply."""
    env = embedded_env(tmp_path, PYTHONUNBUFFERED="1", **LIMIT)
    manage(env, "migrate", "--noinput")
    manage(env, "demo")
    message_id = int(manage(env, "shell", "-c", ASK_BEFORE_SERVE).strip().splitlines()[-1])
    server = Service("serve", [sys.executable, "manage.py", "serve", "--port", str(free_port())], env,
                     "ChatNexus is up", tmp_path)
    try:
        server.wait_ready(timeout=240)
        server.wait_model("Model ready in")

        def delivered_reply():
            reply = json.loads(manage(env, "shell", "-c", REPLY.format(id=message_id)).strip().splitlines()[-1])
            return reply if reply and reply["delivery"] == "sent" else None

        reply = wait_for(delivered_reply, timeout=300, interval=2, what="the delivered reply")
        assert_handed_over(reply, reply["handoff"])
        assert "no reply within the time limit" in server.output()
    finally:
        server.stop()


QUEUE = "inference-time-limit-test"


def test_a_worker_process_ends_a_reply_at_the_time_limit_the_same_way(transactional_db, smtp_server, _redis_clean,
                                                                      tmp_path, acme_bot):
    """The worker's own setting holds. Celery's limits come with the task from the process that
    queued it (its `timelimit` header: here this test's 300 s), so before, the worker's 5 s were
    not applied at all: the reply ran on (117 s on a busy 2-core machine) to its length."""
    from inference.tasks import generate_reply

    env = service_env(smtp_server, CHATNEXUS_PRELOAD_MODEL="1", **LIMIT)
    worker = start_worker("timelimit", f"{QUEUE},default", tmp_path, env)  # default: the delivery
    try:
        worker.wait_ready(timeout=240)
        worker.wait_model()
        asked = services.receive(bot=acme_bot, channel="preview", thread_id="late", text=QUESTION, answer=False).message
        Message.objects.filter(id=asked.id).update(reply_state="pending")
        generate_reply.apply_async(args=[asked.id], queue=QUEUE)
        reply = wait_for(lambda: Message.objects.filter(reply_to=asked).first(), timeout=300, what="the reply")
        assert_handed_over(stored_reply(asked), acme_bot.handoff_message)
        wait_for(lambda: Message.objects.get(id=reply.id).delivery_status == "sent", what="delivery")
    finally:
        worker.stop()


def stored_reply(asked):
    """What REPLY tells of the reply to ``asked``, read here."""
    asked.refresh_from_db()
    reply = Message.objects.get(reply_to=asked)
    return {"sender": reply.sender, "text": reply.text, "asked": asked.reply_state,
            "error": asked.meta.get("error", ""), "needs_human": reply.conversation.needs_human,
            "paused": reply.conversation.bot_paused}


def test_a_soft_limit_before_the_model_said_anything_hands_the_customer_over_too(transactional_db, _redis_clean,
                                                                                 tmp_path, acme_bot):
    """A worker process's soft limit can come before the stream: the first message paying for the
    model's load, or here a customer's file still being fetched from Twilio. Before, the task ended
    there and the message waited on: no handoff message, nothing for the team."""
    import socket

    from channels_app.models import ChannelConfig
    from inference.tasks import generate_reply

    twilio = socket.create_server(("127.0.0.1", 0))  # takes the file's request and never answers
    base_url, account = f"http://127.0.0.1:{twilio.getsockname()[1]}", "AC" + "0" * 32
    ChannelConfig.objects.create(organization=acme_bot.organization, bot=acme_bot, kind="whatsapp",
                                 settings={"account_sid": account, "phone_number": "whatsapp:+14155238886"},
                                 secrets={"auth_token": "twilio-auth-token"})
    queue = "inference-soft-limit-test"
    # the worker's own limit and margin as they come: were the fetch not stopped, the model would answer
    env = service_env(None, TWILIO_API_BASE_URL=base_url, CHATNEXUS_PRELOAD_MODEL="0", CHATNEXUS_DTYPE="fp32")
    worker = start_worker("softlimit", queue, tmp_path, env)
    try:
        worker.wait_ready(timeout=240)
        invoice = {"url": f"{base_url}/2010-04-01/Accounts/{account}/Messages/MM1/Media/ME1",
                   "content_type": "application/pdf"}
        asked = services.receive(bot=acme_bot, channel="whatsapp", thread_id="whatsapp:+15551234567",
                                 text="Is this invoice right?", meta={"media": [invoice]}, answer=False).message
        Message.objects.filter(id=asked.id).update(reply_state="pending")
        # Celery's limits as the queueing process sends them: the soft one long before the fetch's timeout
        task = generate_reply.apply_async(args=[asked.id], queue=queue, soft_time_limit=2, time_limit=60)
        wait_for(lambda: any(f"generate_reply[{task.id}] {end}" in worker.output() for end in ("succeeded", "raised")),
                 timeout=120, what="the task's end")
        assert "Soft time limit (2s) exceeded" in worker.output()
        assert_handed_over(stored_reply(asked), acme_bot.handoff_message)
    finally:
        worker.stop()
        twilio.close()

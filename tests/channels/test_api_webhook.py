"""The API channel's reply webhook (bots/api/webhook.py): set on the Channels page, every message
sent on an API conversation is POSTed signed to the customer's backend (a receiver on loopback)
by the real workers; retried while the backend has trouble, failed in words when it refuses,
never sent into the server's own network unless allowed."""
import json
import time

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bots import services
from bots.api import webhook
from bots.api.channel import ApiAdapter
from bots.models import ApiToken, Message
from channels_app.base import DeliveryError
from channels_app.models import ChannelConfig
from channels_app.tasks import deliver
from tests.conftest import wait_for
from tests.platform.conftest import make_conversation

from .loopback import Trickler, rebinding_dns
from .webhook_receiver import WebhookReceiver

SECRET = "webhook-signing-secret-for-tests"


@pytest.fixture
def receiver():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def api_channel(acme, acme_bot, receiver):
    return ChannelConfig.objects.create(organization=acme, bot=acme_bot, kind="api",
                                        settings={"webhook_url": receiver.url}, secrets={"webhook_secret": SECRET})


def posts(receiver, n, timeout=60):
    return wait_for(lambda: receiver.requests if len(receiver.requests) >= n else None, timeout=timeout,
                    what=f"{n} webhook POST(s)")


def delivered(message_id, timeout=60):
    done = lambda: Message.objects.filter(id=message_id).exclude(delivery_status__in=["pending", "sending"]).first()  # noqa: E731
    return wait_for(done, timeout=timeout, what=f"message {message_id} to be delivered or failed")


def save(client, bot, **fields):
    data = {"channel": "api", "api-enabled": "on", **{f"api-{name}": value for name, value in fields.items()}}
    return client.post(reverse("channels:bot", args=[bot.id]), data)


# ---------------------------------------------------------------------------
# The Channels page


@pytest.mark.django_db
def test_a_manager_sets_the_webhook_and_the_secret_is_never_shown(client, alice, acme_bot, receiver, settings):
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = True
    client.force_login(alice)
    page = client.get(reverse("channels:bot", args=[acme_bot.id])).content.decode()
    assert 'id="api-state">not set up' in page and f'"bot": {acme_bot.id}' in page  # the curl line names this bot
    assert 'id="api-check"' not in page  # nothing to test before a save
    assert save(client, acme_bot, webhook_url=receiver.url).context["forms"]["api"].errors == {"webhook_secret": ["Required."]}
    short = save(client, acme_bot, webhook_url=receiver.url, webhook_secret="short")
    assert "at least 16 characters" in str(short.context["forms"]["api"].errors["webhook_secret"])
    assert not ChannelConfig.objects.filter(bot=acme_bot, kind="api").exists()

    response = save(client, acme_bot, webhook_url=receiver.url, webhook_secret=SECRET)
    assert response.status_code == 302 and response["Location"].endswith("#api")
    config = ChannelConfig.objects.get(bot=acme_bot, kind="api")
    assert config.enabled and config.settings["webhook_url"] == receiver.url and config.secrets["webhook_secret"] == SECRET
    page = client.get(reverse("channels:bot", args=[acme_bot.id])).content.decode()
    assert "API settings saved." in page and 'id="api-state">on' in page and 'id="api-check"' in page
    assert SECRET not in page and "Signing secret: <strong class=\"secret-set\">set" in page
    assert save(client, acme_bot, webhook_url=receiver.url + "?v=2").status_code == 302  # blank keeps the secret
    assert ChannelConfig.objects.get(id=config.id).secrets["webhook_secret"] == SECRET


@pytest.mark.django_db
def test_addresses_of_the_servers_own_network_are_refused_unless_allowed(client, alice, acme_bot, settings):
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = False
    client.force_login(alice)
    for url, words in [
        ("http://127.0.0.1:8000/hook", "Not allowed: 127.0.0.1 is an address of this server's own network "
                                       "(set CHATNEXUS_WEBHOOK_ALLOW_PRIVATE=1 to allow it)."),
        ("http://10.1.2.3/hook", "Not allowed: 10.1.2.3 is an address of"),
        ("http://169.254.169.254/latest/meta-data/", "Not allowed: 169.254.169.254 is an address of"),  # cloud metadata
        ("http://[::1]:8000/hook", "Not allowed: ::1 is an address of"),
        ("http://localhost:8000/hook", "Not allowed: localhost ("),
        ("ftp://files.example/hook", "Not allowed: the webhook URL must start with http:// or https://"),
        ("https://backend.chatnexus-test.invalid/hook", "This host name does not resolve."),
        ("https://example.com:99999/hook", "Not allowed: the webhook URL has a port that is not a number from 1 to 65535"),
        (f"https://{'ü' * 60}.example/hook", "This host name does not resolve."),  # too long for IDNA: was a 500
    ]:
        errors = save(client, acme_bot, webhook_url=url, webhook_secret=SECRET).context["forms"]["api"].errors
        assert words in errors["webhook_url"][0], (url, errors)
    assert not ChannelConfig.objects.filter(bot=acme_bot, kind="api").exists()


@pytest.mark.django_db
def test_a_webhook_saved_while_allowed_is_refused_at_send_time_once_not(api_channel, alice, acme_bot, receiver, settings):
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = False
    conversation, _ = make_conversation(acme_bot, channel="api", thread="user-1")
    reply = services.agent_reply(conversation, alice, "Hello from the team")
    with pytest.raises(DeliveryError) as refused:
        ApiAdapter().send(reply)
    assert not refused.value.transient and "an address of this server's own network" in str(refused.value)
    assert receiver.requests == []


@pytest.mark.django_db
def test_a_webhook_name_that_rebinds_to_the_servers_network_reaches_nothing(api_channel, alice, acme_bot, receiver,
                                                                            settings, monkeypatch):
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = False
    api_channel.settings = {"webhook_url": f"http://rebind.example:{receiver.port}/hooks/chatnexus"}
    api_channel.save()
    rebinding_dns(monkeypatch, "rebind.example")  # public when checked, loopback when connected to
    conversation, _ = make_conversation(acme_bot, channel="api", thread="user-1")
    reply = services.agent_reply(conversation, alice, "Hello from the team")
    with pytest.raises(DeliveryError) as refused:
        ApiAdapter().send(reply)
    assert not refused.value.transient
    assert str(refused.value) == ("rebind.example (127.0.0.1) is an address of this server's own network "
                                  "(set CHATNEXUS_WEBHOOK_ALLOW_PRIVATE=1 to allow it)")
    assert receiver.requests == []


def notes_after_a_test_event(client, bot):
    """"Send a test event" on the Channels page: the notes the page then shows for the API channel."""
    response = client.post(reverse("channels:check-api", args=[bot.id]))
    assert response.status_code == 302 and response["Location"].endswith("#api")
    page = client.get(response["Location"].split("#")[0])
    assert 'id="api-notes"' in page.content.decode()
    return page.context["notes"]["api"]


@pytest.mark.django_db
def test_send_a_test_event(client, alice, acme_bot, api_channel, receiver, settings):
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = True
    client.force_login(alice)

    def check():
        return notes_after_a_test_event(client, acme_bot)

    assert check() == [[True, f"{receiver.url} answered 200 to a signed test event."]]
    [ping] = receiver.requests
    assert ping["headers"]["X-ChatNexus-Event"] == "ping" and ping["json"]["event"] == "ping"
    assert webhook.verify(SECRET, ping["body"], ping["headers"]["X-ChatNexus-Signature"])
    receiver.answer(401)
    assert check() == [[False, f"The test event to {receiver.url} failed: webhook answered 401: backend says no."]]
    receiver.stop()
    [(ok, sentence)] = check()
    assert not ok and sentence.startswith(f"The test event to {receiver.url} failed: webhook not reached: ")
    api_channel.delete()
    assert check() == [[False, "Save the API settings first."]]


# ---------------------------------------------------------------------------
# A backend that answers a byte at a time, or at great length


def retried(message) -> Message:
    """``message`` after the deliver task's code failed it for now, to be tried again (called
    directly, the task re-raises the transient error it would retry), as stored then."""
    with pytest.raises(DeliveryError) as failed:
        deliver(message.id)
    assert failed.value.transient
    message.refresh_from_db()
    assert message.delivery_status == Message.Delivery.PENDING  # not sent
    return message


@pytest.fixture
def backend(api_channel, settings):
    """``backend(head, slow, rest)``: a ``Trickler`` on loopback becomes the API channel's webhook."""
    settings.CHATNEXUS_WEBHOOK_ALLOW_PRIVATE = True
    servers = []

    def start(head: bytes, slow: bytes = b"", rest: bytes = b"") -> Trickler:
        servers.append(Trickler(head, slow, rest).start())
        api_channel.settings = {"webhook_url": f"http://127.0.0.1:{servers[-1].port}/hooks/chatnexus"}
        api_channel.save()
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


TRICKLES = pytest.mark.parametrize("head, slow, rest", [  # the slow part a byte every 0.2 s: 10 s
    (b"", b"HTTP/1.1 200 " + b"O" * 49 + b"K", b"\r\nContent-Length: 2\r\n\r\n{}"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 52\r\n\r\n{", b" " * 50, b"}"),
], ids=["the-status-line", "the-body"])


@pytest.mark.django_db
@TRICKLES
def test_a_backend_answering_a_byte_at_a_time_is_cut_off_at_the_deadline_and_tried_again(
        alice, acme_bot, backend, settings, head, slow, rest):
    """requests' read timeout holds for each read: a backend sending its answer a byte now and then
    held the worker that delivers every organisation's replies for as long as it liked (and the
    sweep handed the delivery to the next worker). CHATNEXUS_WEBHOOK_TIMEOUT_S ends the whole call."""
    settings.CHATNEXUS_WEBHOOK_TIMEOUT_S = 1
    server = backend(head, slow, rest)
    conversation, _ = make_conversation(acme_bot, channel="api", thread="user-5")
    reply = services.agent_reply(conversation, alice, "Hello from the team")
    assert retried(reply).delivery_error == "webhook webhook took longer than 1 s to answer"
    assert server.was_cut_off()


@pytest.mark.django_db
@TRICKLES
def test_a_test_event_to_a_backend_answering_a_byte_at_a_time_fails_in_words(client, alice, acme_bot, backend,
                                                                              settings, head, slow, rest):
    settings.CHATNEXUS_WEBHOOK_TIMEOUT_S = 1
    server = backend(head, slow, rest)
    client.force_login(alice)
    url = f"http://127.0.0.1:{server.port}/hooks/chatnexus"
    assert notes_after_a_test_event(client, acme_bot) == [
        [False, f"The test event to {url} failed: webhook took longer than 1 s to answer."]]
    assert server.was_cut_off()


@pytest.mark.django_db
@pytest.mark.parametrize("status, delivery", [("200 OK", "sent"), ("302 Found", "failed")])
def test_a_long_answer_is_read_only_as_far_as_it_is_needed(alice, acme_bot, backend, status, delivery):
    """The status is what counts, and the first words of a refusal: 64 KiB of the body, not all of
    it into the worker's memory — nor a redirect's, which requests reads whole, even unfollowed."""
    size = 32 * 1024 * 1024
    server = backend(f"HTTP/1.1 {status}\r\nLocation: http://127.0.0.1:9/elsewhere\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode(), rest=b"x" * size)
    conversation, _ = make_conversation(acme_bot, channel="api", thread="user-6")
    reply = services.agent_reply(conversation, alice, "Hello from the team")
    deliver(reply.id)
    reply.refresh_from_db()
    assert reply.delivery_status == delivery
    if delivery == "failed":
        assert reply.delivery_error == ("http-302 webhook answered 302: " + "x" * 200 + " (redirects are not "
                                        "followed: set the URL it redirects to)")
    assert server.was_cut_off()


def test_a_signature_checks_the_body_the_secret_and_the_time():
    body, now = b'{"event":"message"}', 1_800_000_000
    header = webhook.signature(SECRET, body, now)
    assert webhook.verify(SECRET, body, header, now=now + 60)
    assert not webhook.verify(SECRET, body + b" ", header, now=now)  # body changed
    assert not webhook.verify("another-secret-entirely", body, header, now=now)
    assert not webhook.verify(SECRET, body, header, now=now + 301)  # replayed later
    assert not webhook.verify(SECRET, body, header.replace(f"t={now}", f"t={now + 1}"), now=now)  # time changed
    assert not webhook.verify(SECRET, body, "v1=abc", now=now) and not webhook.verify(SECRET, body, "", now=now)


# ---------------------------------------------------------------------------
# Real workers


def test_the_bots_reply_and_an_agents_are_posted_signed(transactional_db, celery_workers, alice, acme_bot, api_channel,
                                                         receiver):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    posted = client.post("/api/conversations/inbound/", {"bot": acme_bot.id, "thread": "user-9", "text": "Open today?"},
                         format="json").json()
    [hook] = posts(receiver, 1, timeout=180)
    reply = Message.objects.get(reply_to_id=posted["id"])
    assert hook["path"] == "/hooks/chatnexus" and hook["headers"]["Content-Type"] == "application/json"
    assert hook["headers"]["X-ChatNexus-Event"] == "message" and hook["headers"]["X-ChatNexus-Delivery"] == str(reply.id)
    assert webhook.verify(SECRET, hook["body"], hook["headers"]["X-ChatNexus-Signature"])
    body = hook["json"]
    assert body["event"] == "message" and body["bot"] == acme_bot.id
    assert body["conversation"] == {"id": posted["conversation"], "thread": "user-9"}
    assert body["message"]["id"] == reply.id and body["message"]["reply_to"] == posted["id"]
    assert body["message"]["sender"] == "bot" and body["message"]["text"] == reply.text and reply.text.strip()
    assert delivered(reply.id).delivery_status == "sent"

    answer = client.post(f"/api/conversations/{posted['conversation']}/reply/", {"text": "A person here: yes, 9 to 6."},
                         format="json").json()
    agent = posts(receiver, 2)[1]
    assert agent["json"]["message"]["sender"] == "agent" and agent["json"]["message"]["text"] == "A person here: yes, 9 to 6."
    assert agent["headers"]["X-ChatNexus-Delivery"] == str(answer["id"])
    assert webhook.verify(SECRET, agent["body"], agent["headers"]["X-ChatNexus-Signature"])
    assert delivered(answer["id"]).delivery_status == "sent"
    client.post(f"/api/conversations/{posted['conversation']}/reply/", {"text": "internal", "note": True}, format="json")
    time.sleep(1)
    assert len(receiver.requests) == 2  # notes are never sent


def test_a_backend_in_trouble_gets_it_again_and_one_that_refuses_fails_it_in_words(
        transactional_db, celery_workers, alice, acme_bot, api_channel, receiver):
    conversation, _ = make_conversation(acme_bot, channel="api", thread="user-2")
    receiver.answer(503, 429)
    first = services.agent_reply(conversation, alice, "First answer")
    assert delivered(first.id, timeout=90).delivery_status == "sent"
    assert [r["status"] for r in receiver.requests] == [503, 429, 200]
    assert {r["headers"]["X-ChatNexus-Delivery"] for r in receiver.requests} == {str(first.id)}  # one message, three tries

    receiver.requests.clear()
    receiver.answer(400)
    second = services.agent_reply(conversation, alice, "Second answer")
    failed = delivered(second.id)
    assert failed.delivery_status == "failed" and failed.delivery_error == "http-400 webhook answered 400: backend says no"
    receiver.answer(302)
    third = services.agent_reply(conversation, alice, "Third answer")
    failed = delivered(third.id)
    assert failed.delivery_status == "failed" and "redirects are not followed" in failed.delivery_error
    assert [r["status"] for r in receiver.requests] == [400, 302]  # refused for good: not tried again


@pytest.mark.django_db
def test_without_an_enabled_webhook_replies_wait_to_be_polled(api_channel, alice, acme_bot, receiver):
    conversation, _ = make_conversation(acme_bot, channel="api", thread="user-3")
    api_channel.enabled = False
    api_channel.save()
    assert ApiAdapter().send(services.agent_reply(conversation, alice, "polled")) == ""
    api_channel.delete()
    assert ApiAdapter().send(services.agent_reply(conversation, alice, "polled too")) == ""
    assert receiver.requests == []
    assert json.loads(json.dumps(webhook.message_payload(Message.objects.filter(text="polled").get())))["conversation"] == {
        "id": conversation.id, "thread": "user-3"}


def test_the_readmes_receiver_accepts_our_signature_and_nothing_else():
    """The check the README tells backends to run, run: it must agree with what we send."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("def from_chatnexus")
    block = readme[readme.rindex("```python", 0, start) + len("```python"):readme.index("```", start)]
    namespace = {}
    exec(compile("\n".join(line[3:] for line in block.splitlines()), "README.md", "exec"), namespace)
    body = b'{"event":"message","message":{"text":"Yes, 9 to 6."}}'
    header = webhook.signature(SECRET, body, int(time.time()))
    assert namespace["from_chatnexus"](SECRET, body, header)
    assert not namespace["from_chatnexus"](SECRET, body.replace(b"9", b"8"), header)
    assert not namespace["from_chatnexus"](SECRET, body, webhook.signature(SECRET, body, int(time.time()) - 3600))

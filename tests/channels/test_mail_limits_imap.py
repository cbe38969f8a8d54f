"""An IMAP server says how long a fetched mail is (a literal: ``{N}`` then N bytes), and imaplib
read, and allocated, whatever it was told: a hostile or broken tenant server announcing a
terabyte made the worker ask for a terabyte of memory. The poll asks for at most
CHATNEXUS_EMAIL_MAX_BYTES of a mail and keeps no more of a longer literal, the rest read in pieces
and dropped (channels_app/email/pinned.py): a server ignoring ``<0.N>`` still has its mail stored
cut and the mailbox moves past it. A literal announced past what is read of one at all is
refused unread, and one trickling its rest is cut by the IMAP deadline: the poll says so in the
log, and the mail stays on the server for a later poll."""
import logging
import re

import pytest

from bots.models import Message
from channels_app.email.imap import poll_mailbox

from .imap_stub import IMAPStub
from .mails import mail
from .test_email_imap import imap_channel  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


class MeasuredIMAP(IMAPStub):
    """The IMAP stub, answering ``BODY.PEEK[]<0.N>`` with at most N bytes, as servers do (unless
    ``partial`` is False: the whole mail, as some do anyway); a UID in ``announce`` is answered with
    a literal of that many bytes announced and a few sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.announce = {}  # uid -> the length its FETCH announces
        self.partial = True

    def _uid(self, conn, tag, args):
        sub, _, rest = args.partition(" ")
        if sub.upper() != "FETCH" or "INTERNALDATE" in rest.upper():
            return super()._uid(conn, tag, args)
        uid = int(rest.split()[0])
        partial = self.partial and re.search(r"BODY\.PEEK\[\]<0\.(\d+)>", rest)
        raw = self.messages[uid][: int(partial.group(1))] if partial else self.messages[uid]
        section = "BODY[]<0>" if partial else "BODY[]"
        seq = sorted(self.messages).index(uid) + 1
        length = self.announce.get(uid, len(raw))
        conn.wfile.write(f"* {seq} FETCH (UID {uid} {section} {{{length}}}\r\n".encode() + raw)
        if uid not in self.announce:
            conn.wfile.write(b")\r\n")
            conn.send(f"{tag} OK FETCH completed".encode())


@pytest.fixture
def imap_server():
    server = MeasuredIMAP(user="help@acme-bikes.example", password="imap-pw").start()
    yield server
    server.stop()


@pytest.mark.parametrize("announced, why", [
    (10**12, "announced 1,000,000,000,000 bytes in one piece, more than this server reads of one (1,073,741,824): "
             "not read, the mail left on the server"),  # a terabyte: not even read to be dropped
    (50_000_000, "took longer than 1 s in all"),  # read to be dropped, but a few bytes sent, then nothing
], ids=["announced-a-terabyte", "trickled-past-the-deadline"])
def test_a_longer_literal_not_read_whole_leaves_the_mail_on_the_server(
        imap_channel, imap_server, settings, caplog, announced, why):
    settings.CHATNEXUS_EMAIL_MAX_BYTES = 10_000
    settings.CHATNEXUS_IMAP_DEADLINE_S = 1
    imap_server.add(mail(message_id="<m1@example.com>"))
    huge = imap_server.add(mail(message_id="<m2@example.com>", body="And a second question."))
    imap_server.announce[huge] = announced
    with caplog.at_level(logging.WARNING, logger="channels_app.email.imap"):
        assert poll_mailbox(imap_channel.id) == 0
    assert f"imap: mailbox of channel {imap_channel.id}: 127.0.0.1 {why}" in caplog.messages
    assert list(Message.objects.values_list("external_id", flat=True)) == ["m1@example.com"]  # the mail before it

    del imap_server.announce[huge]  # the server mended: the next poll reads the mail it skipped
    assert poll_mailbox(imap_channel.id) == 1
    assert Message.objects.get(external_id="m2@example.com").text == "And a second question."


def test_a_server_sending_the_whole_of_a_longer_mail_has_it_stored_cut_and_the_mail_after_it_read(
        imap_channel, imap_server, settings):
    """A server ignoring ``<0.N>``: the mail's rest (several pieces of it) is read and dropped, the
    mail kept cut as one fetched as asked, and the poll goes on; no later poll fetches it again."""
    settings.CHATNEXUS_EMAIL_MAX_BYTES = 10_000
    imap_server.partial = False
    big = imap_server.add(mail(message_id="<big@example.com>", body="Where is my order? " + "x" * 300_000))
    small = imap_server.add(mail(message_id="<small@example.com>", body="A second, small question."))
    assert [poll_mailbox(imap_channel.id) for _ in range(3)] == [2, 0, 0]
    assert Message.objects.get(external_id="big@example.com").text.startswith("Where is my order? xxx")
    assert len(Message.objects.get(external_id="big@example.com").text) < 10_000
    assert Message.objects.get(external_id="small@example.com").text == "A second, small question."
    fetched = [command for command in imap_server.commands if command.startswith("UID FETCH ") and "BODY" in command]
    assert fetched == [f"UID FETCH {big} (BODY.PEEK[]<0.10000>)", f"UID FETCH {small} (BODY.PEEK[]<0.10000>)"]


def test_a_long_mail_is_fetched_only_as_far_as_it_is_kept(imap_channel, imap_server, settings):
    """The mail is cut at CHATNEXUS_EMAIL_MAX_BYTES, as before; the server now sends no more than that."""
    settings.CHATNEXUS_EMAIL_MAX_BYTES = 10_000
    uid = imap_server.add(mail(body="Where is my order? " + "x" * 30_000))
    assert poll_mailbox(imap_channel.id) == 1
    assert f"UID FETCH {uid} (BODY.PEEK[]<0.10000>)" in imap_server.commands
    assert Message.objects.get().text.startswith("Where is my order? xxx")

"""An IMAP server says how long a fetched mail is (a literal: ``{N}`` then N bytes), and imaplib
read, and allocated, whatever it was told: a hostile or broken tenant server announcing a
terabyte made the worker ask for a terabyte of memory. The poll asks for at most
CHATNEXUS_EMAIL_MAX_BYTES of a mail and reads no literal longer (channels_app/email/pinned.py):
the mailbox's poll says so in the log, and the mail stays on the server for a later poll."""
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
    """The IMAP stub, answering ``BODY.PEEK[]<0.N>`` with at most N bytes, as servers do; a UID in
    ``announce`` is answered with a literal of that many bytes announced and a few sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.announce = {}  # uid -> the length its FETCH announces

    def _uid(self, conn, tag, args):
        sub, _, rest = args.partition(" ")
        if sub.upper() != "FETCH" or "INTERNALDATE" in rest.upper():
            return super()._uid(conn, tag, args)
        uid = int(rest.split()[0])
        partial = re.search(r"BODY\.PEEK\[\]<0\.(\d+)>", rest)
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


def test_a_mail_announced_longer_than_a_mail_may_be_is_not_read_and_stays_on_the_server(
        imap_channel, imap_server, settings, caplog):
    settings.CHATNEXUS_EMAIL_MAX_BYTES = 10_000
    imap_server.add(mail(message_id="<m1@example.com>"))
    huge = imap_server.add(mail(message_id="<m2@example.com>", body="And a second question."))
    imap_server.announce[huge] = 10**12  # a terabyte
    with caplog.at_level(logging.WARNING, logger="channels_app.email.imap"):
        assert poll_mailbox(imap_channel.id) == 0
    assert (f"imap: mailbox of channel {imap_channel.id}: 127.0.0.1 announced 1,000,000,000,000 bytes in one piece, "
            "more than a mail may have (CHATNEXUS_EMAIL_MAX_BYTES, 10,000): not read, the mail left on the server"
            ) in caplog.messages
    assert list(Message.objects.values_list("external_id", flat=True)) == ["m1@example.com"]  # the mail before it

    del imap_server.announce[huge]  # the server mended: the next poll reads the mail it skipped
    assert poll_mailbox(imap_channel.id) == 1
    assert Message.objects.get(external_id="m2@example.com").text == "And a second question."


def test_a_long_mail_is_fetched_only_as_far_as_it_is_kept(imap_channel, imap_server, settings):
    """The mail is cut at CHATNEXUS_EMAIL_MAX_BYTES, as before; the server now sends no more than that."""
    settings.CHATNEXUS_EMAIL_MAX_BYTES = 10_000
    uid = imap_server.add(mail(body="Where is my order? " + "x" * 30_000))
    assert poll_mailbox(imap_channel.id) == 1
    assert f"UID FETCH {uid} (BODY.PEEK[]<0.10000>)" in imap_server.commands
    assert Message.objects.get().text.startswith("Where is my order? xxx")

"""Raw test mails, built as bytes the way mail clients and servers write them."""


def mail(
    body="Hello, what are your opening hours?",
    sender="Carla Ruiz <carla@example.com>",
    to="help@acme-bikes.example",
    subject="Opening hours",
    message_id="<q1@example.com>",
    extra="",
):
    head = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
    if message_id:
        head += f"Message-ID: {message_id}\r\n"
    head += "Date: Mon, 3 Jun 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    head += extra
    return (head + "\r\n" + body + "\r\n").encode("utf-8")


# A question with a photo attached (<att@example.com>, frame.jpg)
MAIL_WITH_ATTACHMENT = (
    b"From: carla@example.com\r\nTo: help@acme-bikes.example\r\nSubject: Photo\r\nMessage-ID: <att@example.com>\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\n'
    b"Is this frame cracked?\r\n--m\r\nContent-Type: image/jpeg\r\nContent-Disposition: attachment; filename=frame.jpg\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n--m--\r\n"
)

BOUNCE_REPORT = (
    b"From: Mail Delivery System <mailer@mx.example.net>\r\nTo: help@acme-bikes.example\r\nSubject: Undelivered Mail\r\n"
    b"Message-ID: <bounce1@mx.example.net>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
    b"--r\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
    b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n--r--\r\n"
)

# (name, raw mail, words expected in the stored skip reason)
NEVER_ANSWER = [
    ("auto-submitted", mail(message_id="<n1@example.com>", extra="Auto-Submitted: auto-replied\r\n"), "Auto-Submitted"),
    ("auto-generated", mail(message_id="<n2@example.com>", extra="Auto-Submitted: auto-generated\r\n"), "Auto-Submitted"),
    ("precedence-bulk", mail(message_id="<n3@example.com>", extra="Precedence: bulk\r\n"), "Precedence"),
    ("precedence-list", mail(message_id="<n4@example.com>", extra="Precedence: list\r\n"), "Precedence"),
    ("precedence-junk", mail(message_id="<n5@example.com>", extra="Precedence: junk\r\n"), "Precedence"),
    ("list-id", mail(message_id="<n6@example.com>", extra="List-Id: <riders.lists.example.com>\r\n"), "List-Id"),
    ("list-unsubscribe", mail(message_id="<n7@example.com>", extra="List-Unsubscribe: <mailto:u@example.com>\r\n"), "List-Id"),
    ("empty-return-path", mail(message_id="<n8@example.com>", extra="Return-Path: <>\r\n"), "bounce"),
    ("mailer-daemon", mail(message_id="<n9@example.com>", sender="MAILER-DAEMON@mx.example.net"), "bounce"),
    ("delivery-status-report", BOUNCE_REPORT, "report"),
    ("no-reply", mail(message_id="<n10@example.com>", sender="Shop <no-reply@shop.example>"), "no-reply"),
    ("noreply", mail(message_id="<n11@example.com>", sender="noreply@shop.example"), "no-reply"),
    ("our-own-address", mail(message_id="<n12@example.com>", sender="Acme <help@acme-bikes.example>"), "own address"),
    ("x-autoreply", mail(message_id="<n13@example.com>", extra="X-Autoreply: yes\r\n"), "X-Autoreply"),
]


def raw_fields(raw: bytes) -> dict:
    """A sent mail's header fields as the bytes that came, unfolded: ``{b"In-Reply-To": b"<...>"}``."""
    head = raw.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    return dict(line.split(b": ", 1) for line in head.split(b"\r\n"))

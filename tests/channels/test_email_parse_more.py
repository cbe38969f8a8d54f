"""More real-world mail shapes: quoted history in every language of the widget (and the customer's
own words that only look like it), charsets beyond Python's labels, and bodies in several parts."""
import base64
from email import message_from_bytes, policy

import pytest

from bots.models import Attachment, Message
from channels_app.email.parse import parse, strip_reply

HEAD = (b"From: Ana Gil <ana@example.com>\r\nTo: soporte@acme.example\r\nSubject: Pedido 4411\r\n"
        b"Message-ID: <p1@example.com>\r\n")


@pytest.mark.parametrize(
    "body",
    [
        "¿Y el envío?\n\nDe: Acme <soporte@acme.example>\nEnviado: martes, 3 de marzo de 2026 10:12\n"
        "Para: Ana <ana@example.com>\nAsunto: RE: Pedido 4411\n\nHola Ana, lo pasamos a un agente.",
        "¿Y el envío?\n\nDe: Acme <soporte@acme.example>\nEnviado: terça-feira, 3 de março de 2026 10:12\n"
        "Para: Ana <ana@example.com>\nAssunto: RE: Pedido 4411\n\nOlá Ana",
        "¿Y el envío?\n\nDa: Acme <soporte@acme.example>\nInviato: martedì 3 marzo 2026 10:12\n"
        "A: Ana <ana@example.com>\nOggetto: R: Pedido 4411\n\nCiao Ana",
        "¿Y el envío?\n\nVan: Acme <soporte@acme.example>\nVerzonden: dinsdag 3 maart 2026 10:12\n"
        "Aan: Ana <ana@example.com>\nOnderwerp: RE: Pedido 4411\n\nHallo Ana",
        "¿Y el envío?\n\n-----Mensaje original-----\nDe: Acme\nHola Ana",
        "¿Y el envío?\n\n-----Message d'origine-----\nDe : Acme\nBonjour Ana",
        "¿Y el envío?\n\n-----Messaggio originale-----\nDa: Acme\nCiao Ana",
        "¿Y el envío?\n\n-----Oorspronkelijk bericht-----\nVan: Acme\nHallo Ana",
        "¿Y el envío?\n\n-----Mensagem original-----\nDe: Acme\nOlá Ana",
        "¿Y el envío?\n\nEm ter., 3 de mar. de 2026 às 10:12, Acme <soporte@acme.example> escreveu:\n> Olá Ana",
        "¿Y el envío?\n\nOp 3 mrt. 2026 om 10:12 heeft Acme <soporte@acme.example> het volgende geschreven:\n\n> Hallo",
        # Outlook names a sender in the address book without the address: the Sent line's time says it
        "¿Y el envío?\n\nFrom: Acme Support\nSent: Monday, June 3, 2024 10:00 AM\nTo: Jane\nSubject: RE: order\n\nHi",
        "¿Y el envío?\n\nDe : Acme Support\nEnvoyé : lundi 3 juin 2024 10:00\nÀ : Jane\nObjet : RE: commande\n\nBonjour",
        "¿Y el envío?\n\n*From:* Acme Support\n*Sent:* Monday, June 3, 2024\n*To:* Jane\n\nHi",
        "¿Y el envío?\n\nVon: Acme Support\nGesendet: 03.06.2024\nAn: Jane\n\nHallo",
    ],
    ids=["outlook-es", "outlook-pt", "outlook-it", "outlook-nl", "separator-es", "separator-fr", "separator-it",
         "separator-nl", "separator-pt", "gmail-pt", "apple-nl", "outlook-en-by-name", "outlook-fr-by-name",
         "outlook-named-date", "outlook-numeric-date"],
)
def test_it_cuts_quoted_history_in_each_language_of_the_widget(body):
    assert strip_reply(body) == "¿Y el envío?"


@pytest.mark.django_db
def test_the_model_does_not_read_its_own_quoted_answer_in_a_spanish_outlook_reply(email_channel, post_mail):
    """The quoted answer said "agente": read as the customer's words it was the customer asking for one."""
    body = ("¿Y el envío?\r\n\r\nDe: Acme <soporte@acme.example>\r\nEnviado: martes, 3 de marzo de 2026 10:12\r\n"
            "Para: Ana <ana@example.com>\r\nAsunto: RE: Pedido 4411\r\n\r\nHola Ana, lo pasamos a un agente.\r\n")
    post_mail(email_channel.key, HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode())
    message = Message.objects.get()
    assert message.text == "¿Y el envío?"
    assert "lo pasamos a un agente" in message.meta["full_text"]


@pytest.mark.parametrize(
    "body",
    [
        "Hi, I need a quote for a pallet shipment.\nFrom: Hamburg\nTo: Lisbon\nDate: 12 March\nWeight: 400 kg",
        "Hi,\nFrom: our warehouse\nSent: last Friday\nTo: your depot in 2024\nWhere is it now?",
        "Hello,\n\nOn Friday I wrote to you about these problems:\n1. order 4411 never arrived\n2. I was charged twice",
        "Bonjour,\nLe technicien m'a écrit :\n« la pièce arrive lundi »\nEst-ce vrai ?",
        "Hallo,\nAm Montag schrieb mir der Techniker:\nDas Teil kommt bald.\nStimmt das?",
        "Hola,\nEl técnico me escribió:\nla pieza llega el lunes.\n¿Es verdad?",
    ],
    ids=["from-to-date", "from-sent-to", "on-friday-i-wrote", "le-technicien", "am-montag", "el-tecnico"],
)
def test_it_keeps_the_customers_own_words_that_look_like_quote_headers(body):
    assert strip_reply(body) == body


def _mail(charset, payload, subject=b"Pedido 4411"):
    return (b"From: Ana Gil <ana@example.com>\r\nTo: soporte@acme.example\r\nSubject: " + subject
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=" + charset.encode()
            + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(payload) + b"\r\n")


# ISO-2022-JP with NEC's row 13 as Windows writes it: ① Ⅱ ㈱ are JIS 0x2D21, 0x2D36, 0x2D6A
NEC_ISO2022JP = "注文番号".encode("iso2022_jp")[:-3] + b"-!-6-j\x1b(B"

ODD_CHARSETS = [
    ("iso-8859-8-i", "שלום, איפה ההזמנה?".encode("iso-8859-8"), "שלום, איפה ההזמנה?"),
    ("windows-874", "สวัสดีครับ".encode("cp874"), "สวัสดีครับ"),
    ("x-sjis", "こんにちは".encode("cp932"), "こんにちは"),
    ("gb2312", "我是王堃".encode("gbk"), "我是王堃"),  # 堃 is GBK's, not GB2312's
    ("shift_jis", "注文①".encode("cp932"), "注文①"),  # ① is cp932's (NEC), not Shift_JIS's
    ("iso-2022-jp", NEC_ISO2022JP, "注文番号①Ⅱ㈱"),
]


@pytest.mark.parametrize("charset, payload, expected", ODD_CHARSETS, ids=[case[0] for case in ODD_CHARSETS])
def test_it_reads_charsets_python_lacks_or_reads_narrower_than_mail_writes_them(charset, payload, expected):
    assert parse(_mail(charset, payload)).text == expected


@pytest.mark.parametrize("charset, payload, expected", ODD_CHARSETS, ids=[case[0] for case in ODD_CHARSETS])
def test_subjects_senders_and_file_names_in_those_charsets_are_read_too(charset, payload, expected):
    word = f"=?{charset}?b?{base64.b64encode(payload).decode()}?=".encode()
    raw = (b"From: " + word + b" <ana@example.com>\r\nTo: soporte@acme.example\r\nSubject: Re: " + word
           + b'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n'
           + b"--m\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n"
           + b'--m\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="' + word
           + b'"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n')
    mail = parse(raw)
    assert (mail.subject, mail.from_name, mail.from_address) == (f"Re: {expected}", expected, "ana@example.com")
    assert mail.attachments[0]["filename"] == expected


def test_a_few_bad_bytes_in_the_declared_charset_are_replaced_not_the_whole_text_misread():
    greek = "Καλημέρα, πού είναι η παραγγελία μου;".encode("iso-8859-7")
    assert parse(_mail("iso-8859-7", greek + b" \xff")).text == "Καλημέρα, πού είναι η παραγγελία μου; \ufffd"
    utf8 = "Grüße aus Köln".encode()
    assert parse(_mail("utf-8", utf8 + b" \xff")).text == "Grüße aus Köln \ufffd"
    assert parse(_mail("utf-8", b"caf\xe9 \xff")).text == "café ÿ"  # Latin-1 labelled UTF-8: still cp1252


UTF8_MISLABELLED = "订单4411 café résumé"


@pytest.mark.parametrize("charset", ["gb2312", "euc-kr", "iso-8859-8-i"])
def test_utf8_text_under_a_wrong_label_is_read_as_utf8(charset):
    """gb2312's and euc-kr's wider charsets read these bytes too, as "璁㈠崟4411 caf茅 r茅sum茅": UTF-8
    is tried before them, as before them the parser did."""
    payload = UTF8_MISLABELLED.encode()
    assert parse(_mail(charset, payload)).text == UTF8_MISLABELLED
    word = f"=?{charset}?b?{base64.b64encode(payload).decode()}?=".encode()
    assert parse(_mail(charset, payload, subject=b"Re: " + word)).subject == f"Re: {UTF8_MISLABELLED}"


APPLE_MAIL = HEAD + (
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="apple"\r\n\r\n'
    b"--apple\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThe parcel came with a torn corner:\r\n"
    b'--apple\r\nContent-Type: image/jpeg; name="IMG.jpg"\r\nContent-Disposition: inline; filename="IMG.jpg"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n"
    b"--apple\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    b"The box was also wet. Can I get a refund for order 4411?\r\n--apple--\r\n"
)


def test_it_reads_the_text_after_an_inline_photo():
    mail = parse(APPLE_MAIL)
    assert mail.reply_text == (
        "The parcel came with a torn corner:\n\nThe box was also wet. Can I get a refund for order 4411?"
    )
    assert [(a["filename"], a["content_type"], a["size"]) for a in mail.attachments] == [("IMG.jpg", "image/jpeg", 6)]


COURIER = (
    b"From: Courier <track@courier.example>\r\nTo: ana@example.com\r\nSubject: Your parcel 4411\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="in"\r\n\r\n'
    b"--in\r\nContent-Type: text/plain\r\n\r\nWe could not deliver parcel 4411.\r\n"
    b'--in\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="label.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--in--\r\n"
)


def forwarding(forwarded=COURIER, encoding=b""):
    return HEAD + (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="fw"\r\n\r\n'
        b"--fw\r\nContent-Type: text/plain\r\n\r\nSee the courier's mail: what do I do?\r\n"
        b"--fw\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n" + encoding + b"\r\n"
        + forwarded + b"\r\n--fw--\r\n"
    )


@pytest.mark.parametrize(
    "raw",
    [forwarding(), forwarding(base64.encodebytes(COURIER), b"Content-Transfer-Encoding: base64\r\n")],
    ids=["as-is", "base64"],  # base64 is not allowed there (RFC 2046), but some clients send it
)
def test_a_forwarded_mail_is_kept_as_an_eml_and_its_attachments_as_the_mails_files(raw):
    """The forwarded mail's own attachment (the courier's label.pdf) was one file of the mail before
    the .eml came, and hidden inside it after: not in the inbox, its text not read by the model."""
    mail = parse(raw)
    assert mail.text == "See the courier's mail: what do I do?"
    assert [(a["filename"], a["content_type"]) for a in mail.attachments] == [
        ("Your parcel 4411.eml", "message/rfc822"), ("label.pdf", "application/pdf")
    ]
    [(_, _, content), label] = mail.files
    assert mail.attachments[0]["size"] == len(content)
    assert label == ("label.pdf", "application/pdf", b"%PDF-1.4\n")
    forwarded = message_from_bytes(content, policy=policy.default)
    assert forwarded["Subject"] == "Your parcel 4411" and forwarded["From"] == "Courier <track@courier.example>"
    assert forwarded.get_body(("plain",)).get_content().strip() == "We could not deliver parcel 4411."
    assert [part.get_filename() for part in forwarded.iter_attachments()] == ["label.pdf"]


def test_a_mail_forwarded_twice_keeps_each_mail_and_the_attachment_inside():
    outer = (b"From: Bo <bo@example.com>\r\nTo: ana@example.com\r\nSubject: Fwd: Your parcel 4411\r\n"
             b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
             b"--b\r\nContent-Type: text/plain\r\n\r\nFrom the courier.\r\n"
             b"--b\r\nContent-Type: message/global\r\n\r\n" + COURIER + b"\r\n--b--\r\n")
    mail = parse(forwarding(outer))
    assert [(a["filename"], a["content_type"]) for a in mail.attachments] == [
        ("Fwd: Your parcel 4411.eml", "message/rfc822"), ("Your parcel 4411.eml", "message/global"),
        ("label.pdf", "application/pdf"),
    ]


@pytest.mark.django_db
def test_a_forwarded_mail_is_kept_with_the_message(email_channel, post_mail):
    post_mail(email_channel.key, forwarding())
    message = Message.objects.get()
    [kept, label] = Attachment.objects.order_by("index")
    assert (kept.message_id, kept.filename, kept.content_type) == (message.id, "Your parcel 4411.eml", "message/rfc822")
    with kept.file.open("rb") as stored:
        assert parse(stored.read()).text.startswith("We could not deliver parcel 4411.")
    assert (label.message_id, label.filename, label.content_type) == (message.id, "label.pdf", "application/pdf")
    with label.file.open("rb") as stored:
        assert stored.read() == b"%PDF-1.4\n"

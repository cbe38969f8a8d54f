"""What the model reads of a customer's files: the text of text, HTML and PDF attachments
after the message (bounded), a note naming any other file, never an exception."""
import pytest

from bots import services
from bots.files import MAX_FILE_PROMPT_CHARS
from tests.builder.test_knowledge_forms import pdf

pytestmark = pytest.mark.django_db

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF a customer's photo"


def receive(bot, text, *files, thread="t1"):
    return services.receive(bot=bot, channel="widget", thread_id=thread, text=text, files=list(files),
                            answer=bool(text)).message


def test_the_model_reads_the_customers_text_and_pdf_files(acme_bot):
    from inference.tasks import _history

    message = receive(acme_bot, "Is this invoice right?", ("notes.txt", "text/plain", b"Order 4411, blue frame"),
                      ("invoice.pdf", "application/pdf", pdf("Total due EUR 129.00")),
                      ("photo.jpg", "image/jpeg", JPEG), ("page.html", "text/html", b"<p>Ship to <b>Leeds</b></p>"))
    turn = _history(message)[-1]
    assert turn["role"] == "user"
    assert turn["content"] == (
        "Is this invoice right?\n\n"
        "[Attached file notes.txt:]\nOrder 4411, blue frame\n\n"
        "[Attached file invoice.pdf:]\nTotal due EUR 129.00\n\n"
        "[The customer attached photo.jpg (image/jpeg); you cannot see it.]\n\n"
        "[Attached file page.html:]\nShip to Leeds"
    )


def test_a_file_alone_stays_in_the_conversation_and_long_files_are_cut(acme_bot):
    from inference.tasks import _history

    long_text = "".join(f"line {i}\n" for i in range(2000)).encode()  # ~16,000 characters
    receive(acme_bot, "", ("terms.txt", "text/plain", long_text), ("more.txt", "text/plain", b"never shown"))
    question = receive(acme_bot, "What do my terms say about returns?")
    [turn] = _history(question)  # two customer messages in a row: one turn
    first, second = turn["content"].rsplit("\n\n", 1)
    assert first.startswith("[Attached file terms.txt, beginning:]\nline 0\nline 1\n")
    shown = first.split(":]\n", 1)[1].split("\n\n[", 1)[0]
    assert len(shown) == MAX_FILE_PROMPT_CHARS  # the files' text together is bounded
    assert first.endswith("[The customer attached more.txt; its text is left out (too long).]")
    assert second == "What do my terms say about returns?"


ORDER_FORM = b"""<html><body><h1>Order form</h1>
<form><label>Model <select name="model"><option>City 26</option><option selected>Trekking 28</option></select></label>
<label>Notes <textarea name="notes">Deliver after 5pm, please</textarea></label><button>Send order</button></form>
<aside><p>Frame size 56 cm, colour petrol blue</p>
<footer>Order no. 4411-B</footer></body></html>"""


def test_an_html_file_keeps_its_form_values_footer_and_what_follows_an_unclosed_aside(acme_bot):
    """A customer's HTML file is read whole, as the email channel reads a mail: knowledge documents
    and fetched pages leave out form controls, footers and asides (documents.page_text), but here
    they are the customer's order (the model read neither the bike chosen nor the order number)."""
    from bots.files import has_text_to_read
    from inference.tasks import _history

    message = receive(acme_bot, "Where is my order?", ("order.html", "text/html", ORDER_FORM))
    assert _history(message)[-1]["content"] == (
        "Where is my order?\n\n"
        "[Attached file order.html:]\nOrder form\n"
        "Model City 26Trekking 28 Notes Deliver after 5pm, pleaseSend order\n"
        "Frame size 56 cm, colour petrol blue\nOrder no. 4411-B"
    )
    alone = receive(acme_bot, "", ("note.html", "text/html", b"<aside>Please change order 4411-B to size L"),
                    thread="t-aside")
    assert has_text_to_read(alone)  # not the canned "no text" reply: its only words are in the <aside>


def test_an_unreadable_file_is_named_never_raised(acme_bot):
    from bots.models import Attachment
    from inference.tasks import _history

    message = receive(acme_bot, "See attached", ("scan.pdf", "application/pdf", b"%PDF-1.4 garbage"),
                      ("gone.txt", "text/plain", b"deleted from storage"), ("empty.txt", "text/plain", b"  \n"))
    gone = Attachment.objects.get(filename="gone.txt")
    gone.file.storage.delete(gone.file.name)
    assert _history(message)[-1]["content"] == (
        "See attached\n\n"
        "[The customer attached scan.pdf; its text could not be read.]\n\n"
        "[The customer attached gone.txt; its text could not be read.]\n\n"
        "[The customer attached empty.txt; it has no text.]"
    )


def test_files_alone_with_nothing_to_read_get_a_canned_reply_without_the_model(acme_bot):
    from bots.files import has_text_to_read
    from bots.models.bots import NO_TEXT_MESSAGE
    from bots.models import Message
    from inference.tasks import generate_reply

    scanned = receive(acme_bot, "", ("scan.pdf", "application/pdf", pdf()), ("photo.jpg", "image/jpeg", JPEG),
                      thread="t-scan")  # a PDF of images only: no text in it
    Message.objects.filter(id=scanned.id).update(reply_state=Message.ReplyState.PENDING)
    generate_reply(scanned.id)  # run here, in this process: answered before any model is asked
    reply = Message.objects.get(reply_to=scanned)
    assert reply.text == NO_TEXT_MESSAGE and reply.stats == {"canned": True, "bot_version": acme_bot.published_version}

    acme_bot.no_text_message = "¡Gracias por el archivo! No encuentro texto que pueda leer: ¿me lo escribes?"
    acme_bot.save()
    acme_bot.publish()  # the bot's own words, in its customers' language, once published
    photo = receive(acme_bot, "", ("photo.jpg", "image/jpeg", JPEG), thread="t-photo")
    Message.objects.filter(id=photo.id).update(reply_state=Message.ReplyState.PENDING)
    generate_reply(photo.id)
    assert Message.objects.get(reply_to=photo).text == acme_bot.no_text_message

    readable = receive(acme_bot, "", ("terms.txt", "text/plain", b"Returns within 30 days"), thread="t-text")
    assert has_text_to_read(readable)  # a file with words goes to the model (the widget tests queue it)


def test_a_file_sent_alone_finds_the_bots_knowledge_by_what_it_says(acme_bot):
    from bots.prompts import build_messages
    from inference.tasks import _history, retrieval_query

    message = receive(acme_bot, "", ("question.txt", "text/plain", b"What are your opening hours on weekdays?"))
    config = acme_bot.live_config()
    [system, *_] = build_messages(config, _history(message), retrieval_query(message))
    assert "Monday to Friday, 9am to 6pm" in system["content"]  # the FAQ that answers the file


FORWARDED = (b"From: Courier <track@courier.example>\r\nDate: Tue, 3 Mar 2026 10:12:00 +0100\r\n"
             b"Subject: Your parcel 4411\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
             b"We could not deliver parcel 4411. Collect it at the depot by Friday.\r\n")


def test_the_model_reads_a_forwarded_mail(acme_bot):
    """A mail forwarded as an attachment (.eml, message/rfc822): its sender, date, subject and text,
    not only its name; one that is no mail is said to be unreadable."""
    from inference.tasks import _history

    message = receive(acme_bot, "See the courier's mail: what do I do?",
                      ("Your parcel 4411.eml", "message/rfc822", FORWARDED), ("broken.eml", "message/rfc822", b"  "))
    assert _history(message)[-1]["content"] == (
        "See the courier's mail: what do I do?\n\n"
        "[Attached file Your parcel 4411.eml:]\nFrom: Courier <track@courier.example>\n"
        "Date: Tue, 03 Mar 2026 10:12:00 +0100\nSubject: Your parcel 4411\n\n"
        "We could not deliver parcel 4411. Collect it at the depot by Friday.\n\n"
        "[The customer attached broken.eml; its text could not be read.]"
    )


def test_the_model_reads_a_mail_with_utf8_headers_and_the_names_of_a_forwarded_mails_files(acme_bot):
    """message/global (RFC 6532) is a forwarded mail as message/rfc822 is: it was named as a file the
    model 'cannot see'. A forwarded mail's attachments are named after its subject (the email
    channel keeps them as files of the message too)."""
    from inference.tasks import _history

    courier = (b"From: Courier <track@courier.example>\r\nSubject: Your parcel 4411\r\n"
               b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="in"\r\n\r\n'
               b"--in\r\nContent-Type: text/plain\r\n\r\nWe could not deliver parcel 4411.\r\n"
               b'--in\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="label.pdf"\r\n'
               b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--in--\r\n")
    global_mail = ("From: José <josé@correo.example>\r\nSubject: Envío 4411\r\nContent-Type: text/plain; "
                   "charset=utf-8\r\n\r\n¿Dónde está mi pedido?\r\n").encode()
    message = receive(acme_bot, "Two mails:", ("Your parcel 4411.eml", "message/rfc822", courier),
                      ("Envío 4411.eml", "message/global", global_mail))
    assert _history(message)[-1]["content"] == (
        "Two mails:\n\n"
        "[Attached file Your parcel 4411.eml:]\nFrom: Courier <track@courier.example>\n"
        "Subject: Your parcel 4411\nAttachments: label.pdf\n\nWe could not deliver parcel 4411.\n\n"
        "[Attached file Envío 4411.eml:]\nFrom: José <josé@correo.example>\nSubject: Envío 4411\n\n"
        "¿Dónde está mi pedido?"
    )

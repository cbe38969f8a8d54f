"""Importing FAQ pairs from a spreadsheet saved as CSV, as spreadsheets write it (Excel on
Windows, Excel in Europe, LibreOffice, Google Sheets): added or updated in the draft, all or
nothing, every refusal said in words on the builder page."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from bots.models import KnowledgeItem

pytestmark = pytest.mark.django_db


def upload(client, bot, raw: bytes, name="faq.csv"):
    return client.post(reverse("bots:faq_import", args=[bot.id]),
                       {"import-file": SimpleUploadedFile(name, raw, content_type="text/csv")})


def faqs(bot):
    return {item.title: item.body for item in KnowledgeItem.objects.filter(bot=bot, kind="faq")}


def test_a_sheet_with_a_header_adds_new_questions_and_updates_known_ones(as_alice, acme_bot):
    before = faqs(acme_bot)
    assert before == {"What are your opening hours?": "We are open Monday to Friday, 9am to 6pm."}
    sheet = ('Answer,Question\r\n'
             '"We are open every day, 8am to 8pm.",what are your  OPENING hours?\r\n'
             '"Yes — within 30 days, with the receipt.","Can I return a bike?"\r\n'
             '\r\n'
             '"Free over €500; otherwise €25.",Is delivery free?\r\n').encode()
    response = upload(as_alice, acme_bot, sheet)
    assert response.status_code == 302 and response["Location"].endswith("#knowledge")
    page = as_alice.get(response["Location"].split("#")[0]).content.decode()
    assert "FAQ pairs imported into the draft: 2 added, 1 updated." in page
    assert faqs(acme_bot) == {
        "What are your opening hours?": "We are open every day, 8am to 8pm.",  # same question: its answer updated
        "Can I return a bike?": "Yes — within 30 days, with the receipt.",
        "Is delivery free?": "Free over €500; otherwise €25.",
    }
    assert acme_bot.published_config["knowledge"][0]["body"] == "We are open Monday to Friday, 9am to 6pm."  # draft only
    again = upload(as_alice, acme_bot, sheet)
    assert "0 added, 0 updated, 3 already there" in as_alice.get(again["Location"].split("#")[0]).content.decode()
    assert len(faqs(acme_bot)) == 3


@pytest.mark.parametrize("raw", [
    "Question;Answer\nDo you rent bikes?;Yes, from 15 € a day.\n".encode("utf-8-sig"),  # Excel, European, UTF-8
    "Do you rent bikes?;Yes, from 15 € a day.\n".encode("cp1252"),  # Excel on Windows, no header
    b"Do you rent bikes?\tYes, from 15 \xe2\x82\xac a day.\n",  # tab-separated
    b'"Do you rent bikes?","Yes, from 15 \xe2\x82\xac a day."',  # one line, no newline at the end
], ids=["semicolons-bom", "cp1252-no-header", "tabs", "quoted-one-line"])
def test_spreadsheets_own_ways_of_writing_csv(as_alice, acme_bot, raw):
    assert upload(as_alice, acme_bot, raw).status_code == 302
    assert faqs(acme_bot)["Do you rent bikes?"] == "Yes, from 15 € a day."


@pytest.mark.parametrize("separator", [";", "\t"], ids=["semicolons", "tabs"])
def test_numbers_with_a_decimal_comma_do_not_make_a_comma_file(as_alice, acme_bot, separator):
    """Where the comma is the decimal mark Excel separates with semicolons; every row then also splits
    cleanly at its comma ("9,99"), and the tie must not go to the comma."""
    raw = f"Price of the basic plan?{separator}9,99 € per month\nPrice of the pro plan?{separator}19,50 € per month\n"
    assert upload(as_alice, acme_bot, raw.encode()).status_code == 302
    imported = faqs(acme_bot)
    assert imported["Price of the basic plan?"] == "9,99 € per month"
    assert imported["Price of the pro plan?"] == "19,50 € per month"


@pytest.mark.parametrize("raw", [
    b'Do you deliver on Sundays?,"No; we deliver Monday to Saturday."\nCan I return an item?,"Yes; within 30 days, unused."',
    b"Do you deliver on Sundays?,No; we deliver Monday to Saturday.\nCan I return an item?,Yes; within 30 days.\n",
], ids=["quoted", "unquoted"])
def test_a_comma_file_whose_answers_hold_semicolons_is_split_at_its_commas(as_alice, acme_bot, raw):
    """The first separator splitting every row won: ";", giving the question 'Do you deliver on Sundays?,"No'."""
    assert upload(as_alice, acme_bot, raw).status_code == 302
    got = faqs(acme_bot)
    assert got["Do you deliver on Sundays?"] == "No; we deliver Monday to Saturday."
    assert got["Can I return an item?"].startswith("Yes; within 30 days") and len(got) == 3


@pytest.mark.parametrize("raw, says", [
    (b"Question,Answer\nDo you rent bikes?,\n,Only on Sundays\nOk?,Yes\n",
     "Rows without both a question and an answer: 2, 3."),
    (b"", "The submitted file is empty."),
    (b"\n\n", "That file has no rows."),
    (b"question,answer\n", "That file has a header but no FAQ rows."),
    (b"%PDF-1.4\x00\x01binary", "That is not a CSV file"),
    (("q,a\n" + "".join(f"Q{i}?,A{i}\n" for i in range(501))).encode(), "That file has 501 rows: at most 500"),
    (("q,a\n" + "x" * 201 + ",fine\n").encode(), "Rows too long (a question at most 200 characters"),
    (b"x" * (1024 * 1024 + 1), "That file is too large: the limit is 1024 KB."),
    (b"Question,Answer\nDo you rent bikes?,Yes\ndo you RENT  bikes?,No\n", "Rows 2 and 3 ask the same question"),
    (b"Q1?,A\nQ2?,B\nq1?,C\nQ2?,D\nQ1?,E\n", "Rows 1, 3 and 5 ask the same question; so do rows 2 and 4"),
])
def test_a_file_that_does_not_read_saves_nothing_and_says_why(as_alice, acme_bot, raw, says):
    before = faqs(acme_bot)
    response = upload(as_alice, acme_bot, raw)
    assert response.status_code == 400
    assert says in str(response.context["import_form"].errors["file"])
    assert response.context["active_tab"] == "knowledge"
    assert faqs(acme_bot) == before


def test_only_the_bots_managers_may_import(client, bob, charlie, acme_bot):
    for user in (bob, charlie):  # Acme's agent, Globex's owner
        client.force_login(user)
        assert upload(client, acme_bot, b"Q?,A\n").status_code == 404
    assert "Q?" not in faqs(acme_bot)


def test_a_nul_past_the_first_4_kb_is_kept_as_replacement_text_not_a_500(as_alice, acme_bot):
    sheet = b"Question,Answer\n" + b"".join(b"Q%d?,A%d\n" % (i, i) for i in range(400)) + b"Late one?,Yes\x00indeed\n"
    assert len(sheet) > 4096
    assert upload(as_alice, acme_bot, sheet).status_code == 302
    assert faqs(acme_bot)["Late one?"] == "Yes\ufffdindeed"


def test_adding_a_question_the_bot_has_updates_its_answer_as_an_import_does(as_alice, acme_bot):
    """"Add as FAQ" from the dashboard's questions to answer: a question already there, whatever
    its case and spacing, gets the new answer instead of a second pair."""
    add = reverse("bots:faq_add", args=[acme_bot.id])
    prefilled = as_alice.get(reverse("bots:builder", args=[acme_bot.id]), {"faq": "what are your  OPENING hours?"})
    assert 'value="what are your  OPENING hours?"' in prefilled.content.decode()
    response = as_alice.post(add, {"title": "what are your  OPENING hours?", "body": "Every day, 8am to 8pm."},
                             follow=True)
    assert faqs(acme_bot) == {"What are your opening hours?": "Every day, 8am to 8pm."}
    assert ("The bot already had “What are your opening hours?”: its answer is updated in the draft."
            in response.content.decode())
    again = as_alice.post(add, {"title": "What are your opening hours?", "body": "Every day, 8am to 8pm."}, follow=True)
    assert "with this answer: nothing changed." in again.content.decode() and len(faqs(acme_bot)) == 1
    as_alice.post(add, {"title": "Do you rent bikes?", "body": "Yes."})
    assert faqs(acme_bot)["Do you rent bikes?"] == "Yes." and len(faqs(acme_bot)) == 2

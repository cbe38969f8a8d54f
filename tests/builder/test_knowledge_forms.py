"""Knowledge in the builder: FAQ pairs and documents (pasted or uploaded), with bad input refused."""
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from bots.forms import MAX_DOC_BYTES
from bots.models import KnowledgeItem


def test_it_adds_edits_and_deletes_a_faq(as_alice, acme_bot):
    add = reverse("bots:faq_add", args=[acme_bot.id])
    response = as_alice.post(add, {"title": "Do you deliver?", "body": "Yes, within 10 km."})
    assert response.status_code == 302
    item = acme_bot.knowledge.get(title="Do you deliver?")
    assert item.kind == "faq"

    edit = reverse("bots:knowledge_edit", args=[acme_bot.id, item.id])
    assert as_alice.get(edit).status_code == 200
    assert as_alice.post(edit, {"title": "Do you deliver?", "body": "Yes, within 20 km."}).status_code == 302
    item.refresh_from_db()
    assert item.body == "Yes, within 20 km."

    assert as_alice.post(reverse("bots:knowledge_delete", args=[acme_bot.id, item.id])).status_code == 302
    assert not KnowledgeItem.objects.filter(id=item.id).exists()


def test_it_refuses_a_faq_without_question_or_answer(as_alice, acme_bot):
    response = as_alice.post(reverse("bots:faq_add", args=[acme_bot.id]), {"title": "", "body": ""})
    assert response.status_code == 400
    assert response.content.decode().count("This field is required") >= 2
    assert acme_bot.knowledge.count() == 1


def test_it_adds_a_pasted_document(as_alice, acme_bot):
    response = as_alice.post(
        reverse("bots:document_add", args=[acme_bot.id]), {"title": "Returns", "text": "# Returns\n\n30 days."}
    )
    assert response.status_code == 302
    doc = acme_bot.knowledge.get(kind="doc")
    assert (doc.title, doc.body) == ("Returns", "# Returns\n\n30 days.")


def test_it_adds_an_uploaded_markdown_file(as_alice, acme_bot):
    upload = SimpleUploadedFile("shipping-policy.md", "# Shipping\n\nFree over 50 €.".encode(), "text/markdown")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 302
    doc = acme_bot.knowledge.get(kind="doc")
    assert doc.title == "shipping-policy"
    assert "Free over 50 €." in doc.body


def test_it_refuses_other_file_types(as_alice, acme_bot):
    upload = SimpleUploadedFile("policy.pdf", b"%PDF-1.4 ...", "application/pdf")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 400
    assert "Only .txt and .md" in response.content.decode()
    assert not acme_bot.knowledge.filter(kind="doc").exists()


def test_it_refuses_an_oversize_file(as_alice, acme_bot):
    upload = SimpleUploadedFile("big.txt", b"a" * (MAX_DOC_BYTES + 1), "text/plain")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 400
    assert "too large" in response.content.decode()
    assert not acme_bot.knowledge.filter(kind="doc").exists()


def test_it_refuses_a_file_that_is_not_utf8_text(as_alice, acme_bot):
    upload = SimpleUploadedFile("notes.txt", b"\xff\xfe\x00binary", "text/plain")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 400
    assert "not UTF-8 text" in response.content.decode()


def test_it_refuses_an_empty_document(as_alice, acme_bot):
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"title": "Empty", "text": "  "})
    assert response.status_code == 400
    assert "Paste some text" in response.content.decode()


def test_it_keeps_knowledge_edits_in_the_draft(as_alice, acme_bot):
    as_alice.post(reverse("bots:faq_add", args=[acme_bot.id]), {"title": "Parking?", "body": "Behind the shop."})
    acme_bot.refresh_from_db()
    assert acme_bot.has_unpublished_changes
    assert len(acme_bot.published_config["knowledge"]) == 1
    acme_bot.publish()
    assert len(acme_bot.published_config["knowledge"]) == 2

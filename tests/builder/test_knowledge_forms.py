"""Knowledge in the builder: FAQ pairs and documents (pasted or uploaded), with bad input refused."""
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from bots.forms import MAX_DOC_BYTES
from bots.knowledge import retrieve
from bots.models import Bot, KnowledgeItem


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
    upload = SimpleUploadedFile("policy.docx", b"PK\x03\x04...", "application/octet-stream")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 400
    assert "Only .txt, .md, .html and .pdf" in response.content.decode()
    assert not acme_bot.knowledge.filter(kind="doc").exists()


def pdf(*pages: str) -> bytes:
    """A minimal PDF with one line of Helvetica text per page, offsets computed (no PDF library)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objects)} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    return written([body.encode() for body in objects])


def written(objects: list[bytes]) -> bytes:
    """A PDF file of ``objects`` (numbered from 1, the first the catalog), its offsets computed."""
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_it_reads_the_text_of_an_uploaded_pdf(as_alice, acme_bot):
    upload = SimpleUploadedFile("Opening Hours.pdf", pdf("Open Monday to Friday, 9 to 17.", "Closed on Sundays."),
                                "application/pdf")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 302
    doc = acme_bot.knowledge.get(kind="doc")
    assert doc.title == "Opening Hours"
    assert doc.body == "Open Monday to Friday, 9 to 17.\n\nClosed on Sundays."


def test_it_refuses_a_damaged_or_textless_pdf_clearly(as_alice, acme_bot):
    for content, says in ((b"%PDF-1.4 ...", "could not be read"), (pdf(""), "has no text to read")):
        upload = SimpleUploadedFile("policy.pdf", content, "application/pdf")
        response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
        assert response.status_code == 400 and says in response.content.decode(), says
    assert not acme_bot.knowledge.filter(kind="doc").exists()


def test_a_pdf_too_costly_to_read_an_unsupported_encryption_or_a_nul_is_handled_in_words(as_alice, acme_bot):
    """A 300-page PDF sharing one 70 MB content stream took hours of pypdf; a certificate-encrypted
    PDF raised NotImplementedError (a 500); a NUL in page text reached PostgreSQL (a 500)."""
    import zlib

    from bots.documents import MAX_PDF_CONTENT_BYTES

    def post(content):
        upload = SimpleUploadedFile("policy.pdf", content, "application/pdf")
        return as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})

    heavy = b"BT /F1 12 Tf 72 720 Td (x) Tj ET\n" * (MAX_PDF_CONTENT_BYTES // 30)
    packed = zlib.compress(heavy, 9)
    small = b"BT /F1 12 Tf 72 720 Td (placeholder) Tj ET"
    old = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(small), small)
    bomb = pdf("placeholder")
    assert old in bomb
    bomb = bomb.replace(old, b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream")
    response = post(fix_xref(bomb))
    assert response.status_code == 400 and "more page content than can be read here" in response.content.decode()

    encrypted = pdf("Secret").replace(b"/Root 1 0 R >>", b"/Root 1 0 R /Encrypt << /Filter /Adobe.PubSec /V 0 >> >>")
    response = post(encrypted)
    assert response.status_code == 400 and "could not be read" in response.content.decode()

    response = post(pdf("a\\000b"))  # a NUL drawn as text
    assert response.status_code == 302
    assert acme_bot.knowledge.get(kind="doc").body == "a\ufffdb"


def fix_xref(raw: bytes) -> bytes:
    """The PDF with its cross-reference table recomputed (objects found by their headers)."""
    import re as _re

    body = raw[:raw.index(b"xref\n")]
    offsets = [m.start() for m in _re.finditer(rb"\d+ 0 obj\n", body)]
    xref = len(body)
    out = body + f"xref\n0 {len(offsets) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    trailer = raw[raw.index(b"trailer"):raw.index(b"startxref")]
    return out + trailer + f"startxref\n{xref}\n%%EOF\n".encode()


def test_it_reads_the_text_of_an_uploaded_web_page(as_alice, acme_bot):
    page = b"<html><head><style>p{color:red}</style></head><body><h1>Returns</h1><p>Within <b>30</b> days.</p></body></html>"
    upload = SimpleUploadedFile("returns.html", page, "text/html")
    assert as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload}).status_code == 302
    body = acme_bot.knowledge.get(kind="doc").body
    assert "Returns" in body and "Within 30 days." in body and "color" not in body and "<" not in body


def test_it_reads_an_uploaded_web_page_that_leaves_out_its_optional_end_of_head(as_alice, acme_bot):
    """Everything after <head> was skipped until a </head> (optional in HTML5): no text, refused."""
    page = b"<!doctype html><html><head><meta charset=utf-8><title>Delivery</title><body><p>We deliver in 2 days.</p>"
    upload = SimpleUploadedFile("delivery.html", page, "text/html")
    assert as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload}).status_code == 302
    assert acme_bot.knowledge.get(kind="doc").body == "We deliver in 2 days."


COUNTRIES = ("Afghanistan Albania Algeria Andorra Angola Argentina Armenia Australia Austria Azerbaijan "
             "Bahamas Bahrain Bangladesh Barbados Belarus Belgium Belize Benin Bhutan Bolivia Botswana "
             "Brazil Brunei Bulgaria Burundi Cambodia Cameroon Canada Chad Chile China Colombia Comoros "
             "Croatia Cuba Cyprus Czechia Denmark Djibouti Dominica Ecuador Egypt Eritrea Estonia Eswatini "
             "Ethiopia Fiji Finland France Gabon Gambia Georgia Germany Ghana Greece Grenada Guatemala "
             "Guinea Guyana Haiti Honduras Hungary Iceland India Indonesia Iran Iraq Ireland Israel Italy "
             "Jamaica Japan Jordan Kazakhstan Kenya Kiribati Kuwait Kyrgyzstan Laos Latvia Lebanon Lesotho "
             "Liberia Libya Liechtenstein Lithuania Luxembourg Madagascar Malawi Malaysia Maldives Mali "
             "Malta Mauritania Mauritius Mexico Micronesia Moldova Monaco Mongolia Montenegro Morocco "
             "Mozambique Myanmar Namibia Nauru Nepal Netherlands Nicaragua Niger Nigeria Norway Oman "
             "Pakistan Palau Panama Paraguay Peru Philippines Poland Portugal Qatar Romania Russia Rwanda "
             "Samoa Senegal Serbia Seychelles Singapore Slovakia Slovenia Somalia Spain Sudan Suriname "
             "Sweden Switzerland Syria Tajikistan Tanzania Thailand Togo Tonga Tunisia Turkey "
             "Turkmenistan Tuvalu Uganda Ukraine Uruguay Uzbekistan Vanuatu Venezuela Vietnam Yemen "
             "Zambia Zimbabwe").split()
COUNTRIES += [f"{name} (overseas)" for name in COUNTRIES[:200 - len(COUNTRIES)]]
SHIPPING_PAGE = f"""<!doctype html><html><head><meta charset="utf-8"><title>Shipping - Acme Bikes</title>
<style>.menu {{ color: red }}</style><script>trackPageView("shipping"); var lang = "en";</script></head>
<body><form method="post" action="./shipping.aspx" id="form1">
<input type="hidden" name="__VIEWSTATE" value="dDwtMTA4">
<nav><ul class="menu"><li><a href="/">Home</a></li><li><a href="/shop">Shop bikes</a></li>
<li><a href="/contact">Contact us</a></li></ul></nav>
<main><h1>Shipping</h1><p>We ship to every country in the European Union within 5 working days.</p>
<p>Orders over 50 euros ship free; heavier e-bikes go by freight.</p>
<label>Delivery times to <select name="country">{"".join(f"<option>{c}</option>" for c in COUNTRIES)}</select></label>
<button>Show delivery times</button></main>
<footer>Acme Bikes, all rights reserved. Privacy</footer></form></body></html>""".encode()


def test_an_uploaded_web_page_is_read_without_its_menu_scripts_and_form_controls(as_alice, acme_bot):
    """Uploaded .html was read with the email channel's reader: the 200 countries of a <select>,
    the menu, the buttons and the footer were most of the document's words, and its piece was
    retrieved for any question naming a country. A fetched page was already read without them;
    both now go through documents.page_text (a <form> around the whole page read all the same)."""
    assert len(COUNTRIES) == 200
    upload = SimpleUploadedFile("shipping.html", SHIPPING_PAGE, "text/html")
    assert as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload}).status_code == 302
    body = acme_bot.knowledge.get(kind="doc").body
    assert "We ship to every country in the European Union within 5 working days." in body
    assert "Orders over 50 euros ship free; heavier e-bikes go by freight." in body
    assert body.startswith("Shipping\n") and "Delivery times to" in body
    for chrome in ("Portugal", "Zimbabwe", "overseas", "trackPageView", "color", "Home", "Shop bikes", "Contact us",
                   "Show delivery times", "Privacy", "dDwtMTA4", "<"):
        assert chrome not in body, chrome
    hits = retrieve(Bot.objects.get(id=acme_bot.id).live_config(draft=True), "Do you ship to Portugal?")
    assert "within 5 working days" in hits[0]["text"] and not any("Portugal" in hit["text"] for hit in hits)


RETURNS_PAGE = b"""<html><body><nav><a href="/">Home</a> <a href="/shop">Shop bikes</a>
<main><h1>Returns</h1><p>Unused bikes can be returned within 30 days.</p>
<aside>Related: <select><option>Warranty</aside>
<p>Refunds reach your account within 5 working days.</p></main></body></html>"""


def test_a_left_out_element_never_closed_leaves_out_nothing(as_alice, acme_bot):
    """A <nav> (an <aside>, a <footer>...) whose end tag never comes swallowed the rest of the page:
    here all of it, refused as a document with no text. What such an element holds is kept, as if it
    were not there (its menu with it); one closed as written is left out, and so is what was left open
    inside it (the <select> its </aside> ends)."""
    upload = SimpleUploadedFile("returns.html", RETURNS_PAGE, "text/html")
    assert as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload}).status_code == 302
    body = acme_bot.knowledge.get(kind="doc").body
    assert body == ("Home Shop bikes\nReturns\n\nUnused bikes can be returned within 30 days.\n\n"
                    "Refunds reach your account within 5 working days."), body


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


def test_an_uploaded_web_page_in_the_charset_it_declares_is_read(as_alice, acme_bot):
    """A shop's page saved from the browser in windows-1252 was refused as "not UTF-8 text", when
    the same bytes fetched were read in the charset its <meta> declares. One that declares none
    is still refused."""
    page = ('<html><head><meta charset="windows-1252"><title>Livraison</title></head>'
            "<body><p>Livraison gratuite dès 50 € — délai 2–3 jours.</p></body></html>").encode("cp1252")

    def post(content):
        upload = SimpleUploadedFile("livraison.html", content, "text/html")
        return as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})

    assert post(page).status_code == 302
    assert acme_bot.knowledge.get(kind="doc").body == "Livraison gratuite dès 50 € — délai 2–3 jours."
    response = post(page.replace(b' charset="windows-1252"', b""))
    assert response.status_code == 400 and "not UTF-8 text" in response.content.decode()


def test_a_file_with_windows_line_breaks_saved_unchanged_is_no_change(as_alice, acme_bot):
    """A .txt written on Windows kept its CRLF: the Edit page, saved untouched, sent LF back (as a
    browser's textarea is kept) and the bot showed unpublished changes nobody made."""
    upload = SimpleUploadedFile("returns.txt", b"Returns\r\n\r\nWithin 30 days.\r\nRefunds in 5 days.\r\n", "text/plain")
    assert as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload}).status_code == 302
    doc = acme_bot.knowledge.get(kind="doc")
    assert doc.body == "Returns\n\nWithin 30 days.\nRefunds in 5 days."
    acme_bot.publish()
    edit = reverse("bots:knowledge_edit", args=[acme_bot.id, doc.id])
    assert as_alice.post(edit, {"title": doc.title, "body": doc.body.replace("\n", "\r\n")}).status_code == 302
    assert not Bot.objects.get(id=acme_bot.id).has_unpublished_changes


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

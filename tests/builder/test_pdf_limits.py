"""PDFs of a few KB that keep pypdf busy for hours or write gigabytes of text: a knowledge upload
and a customer's attachment (bots/files.py) are read by bots/documents.py, now in a process of its
own (bots/pdftext.py) that is stopped, and whose text stops at what a document may hold."""
import signal
import zlib

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from bots.documents import MAX_DOC_CHARS, text_of
from tests.builder.test_knowledge_forms import written


def packed(data: bytes, entries: bytes = b"") -> bytes:
    """A Flate-compressed stream object."""
    data = zlib.compress(data, 9)
    return b"<< %s /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (entries, len(data), data)


def with_pages(objects: list[bytes], page: bytes, count: int) -> bytes:
    """``objects`` (from number 3 on) and ``count`` copies of the page dictionary ``page``."""
    kids = b" ".join(b"%d 0 R" % number for number in range(len(objects) + 3, len(objects) + 3 + count))
    return written([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count),
                    *objects] + [page] * count)


def form_drawn_over_and_over(lines: int, times: int, pages: int, line: bytes = b"Hello world text") -> bytes:
    """Every page draws one form XObject of ``lines`` lines of text ``times`` times: a few KB of
    file, ``lines * times * pages`` lines of text."""
    form = packed(b"BT /F1 12 Tf 10 10 Td " + b"(%s) Tj 0 -1 Td " % line * lines + b"ET",
                  b"/Type /XObject /Subtype /Form /BBox [0 0 600 800] /Resources << /Font << /F1 3 0 R >> >>")
    return with_pages([b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>", form,
                       packed(b"q /X1 Do Q\n" * times)],
                      b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 600 800] /Contents 5 0 R "
                      b"/Resources << /Font << /F1 3 0 R >> /XObject << /X1 4 0 R >> >> >>", pages)


def one_cmap_under_many_names(entries: int, pages: int) -> bytes:
    """Ten font names a page, one font with a ToUnicode CMap of ``entries`` entries: pypdf reads
    the CMap again for every name of every page (20,000 entries on 10 pages: 14 s in the worker)."""
    chunk = b"100 beginbfchar\n" + b"".join(b"<%02X> <%04X>\n" % (i, 0x41 + i % 26) for i in range(100)) + b"endbfchar\n"
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /X def "
            b"1 begincodespacerange <00> <FF> endcodespacerange\n" + chunk * (entries // 100)
            + b"endcmap CMapName currentdict /CMap defineresource pop end end")
    names = b" ".join(b"/F%d 4 0 R" % n for n in range(1, 11))
    return with_pages([packed(cmap), b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 3 0 R >>",
                       packed(b"BT /F1 12 Tf 10 10 Td (abc) Tj ET")],
                      b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 600 800] /Contents 5 0 R "
                      b"/Resources << /Font << %s >> >> >>" % names, pages)


def test_a_pdf_that_draws_one_form_over_and_over_gives_no_more_than_a_document_holds(as_alice, acme_bot):
    """pypdf wrote all of it (gigabytes, given the time): the reading now stops at the first page
    past MAX_DOC_CHARS, one character over, so that the form says the document is too long."""
    bomb = form_drawn_over_and_over(lines=20, times=100, pages=20)  # 640,000 characters of text
    assert len(bomb) < 5000
    text = text_of("catalogue.pdf", bomb)
    assert len(text) == MAX_DOC_CHARS + 1 and text.startswith("Hello world text")

    upload = SimpleUploadedFile("catalogue.pdf", bomb, "application/pdf")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 400 and "That document is too long" in response.content.decode()


def test_a_pdf_that_takes_too_long_to_read_is_refused_in_words(as_alice, acme_bot, monkeypatch):
    monkeypatch.setattr("bots.pdftext.TIMEOUT_S", 1)  # stopped at its time limit, however long the PDF needs
    upload = SimpleUploadedFile("fonts.pdf", one_cmap_under_many_names(entries=20000, pages=10), "application/pdf")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 400
    assert "That PDF takes too long to read; paste its text instead." in response.content.decode()
    assert not acme_bot.knowledge.filter(kind="doc").exists()


def test_the_workers_time_limit_stops_a_pdf_being_read():
    """Celery's soft time limit is an exception raised wherever the task is: inside pypdf, which
    catches every Exception, it was swallowed and the reply worker read on. Raised now while the
    worker waits for the reader's process, it reaches the task (and the process is killed)."""
    def soft_time_limit(*_):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_time_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(SoftTimeLimitExceeded):
            text_of("order.pdf", form_drawn_over_and_over(lines=200, times=1000, pages=1))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)



def test_a_long_pdf_written_with_windows_line_breaks_is_still_too_long(as_alice, acme_bot):
    """Its text was cut at the cap, then its CRLFs made single LFs: under the cap, a document cut
    mid-line was taken as whole. Counted in the line breaks it is stored with, it is too long."""
    crlf = form_drawn_over_and_over(lines=20, times=100, pages=20, line=b"Hello\\r\\nworld text")
    text = text_of("catalogue.pdf", crlf)
    assert "\r" not in text and len(text) == MAX_DOC_CHARS + 1
    upload = SimpleUploadedFile("catalogue.pdf", crlf, "application/pdf")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"file": upload})
    assert response.status_code == 400 and not acme_bot.knowledge.filter(kind="doc").exists()


def test_a_pdf_is_read_where_the_memory_limit_cannot_be_raised_to_the_childs(tmp_path):
    """A container or a shell with a hard address-space limit under the child's 1 GiB (or macOS, which
    refuses the limit): setting it failed and every PDF, a one-line one too, was refused."""
    import json
    import resource
    import subprocess
    import sys
    from pathlib import Path

    from tests.builder.test_knowledge_forms import pdf

    def lower_hard_limit():
        resource.setrlimit(resource.RLIMIT_AS, (900 * 1024 * 1024, 900 * 1024 * 1024))

    done = subprocess.run([sys.executable, "-m", "bots.pdftext", "1000"], input=pdf("Opening hours 9 to 5"),
                          capture_output=True, preexec_fn=lower_hard_limit, cwd=Path(__file__).resolve().parents[2],
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout) == {"text": "Opening hours 9 to 5"}

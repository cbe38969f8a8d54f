"""documents.page_text on hostile markup: a web page's reader (an uploaded .html file, up to
512 KiB, or a fetched page, up to 2 MB, read inside a web request) must do work in proportion
to the page, not its square — every stray end tag used to scan all the elements still open
(116 s for 46,000 <nav>s and as many </svg>s, a 506 KB upload).

Counted, not timed: the Python lines the reader runs (sys.settrace's line events, one per
iteration of a loop or comprehension too) for a page and for one twice its size — about twice
as many for a linear reader, four times for the old one. Deterministic on any machine."""
import sys

import pytest

from bots import documents
from bots.documents import page_text


def lines_run(html: str) -> int:
    """Line events in bots/documents.py while page_text reads ``html``."""
    count = 0
    here = documents.__file__

    def trace(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != here:
            return None
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        page_text(html)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("make, text", [
    pytest.param(lambda n: "<nav>" * n + "</svg>" * n, lambda n: "", id="stray-end-tags"),
    pytest.param(lambda n: "<nav>x" * n, lambda n: "x" * n, id="never-closed"),
    pytest.param(lambda n: "<aside>" * n + "y" + "</aside>" * n + "<p>z</p>", lambda n: "z", id="closed-nesting"),
])
def test_the_reader_works_in_proportion_to_the_page(make, text):
    assert page_text(make(2000)) == text(2000)  # the output itself: what the old reader gave too
    small, large = lines_run(make(500)), lines_run(make(1000))
    assert large < 2.5 * small, (small, large)  # linear: ~2x; the old reader's stray end tags: ~4x


def test_deeply_nested_quotes_give_text_in_proportion_to_the_page():
    """Every line in a quote was marked with "> " once per level: "<blockquote>x" nested 12,000 deep
    (a 160 KB mail) wrote 144 million characters. Three levels are marked now; the page's reader
    and the email channel's (a customer's mail, its HTML part) alike."""
    from email.message import EmailMessage

    from channels_app.email.parse import parse

    html = "<blockquote>x" * 3000
    text = page_text(html)
    assert len(text) < 2 * len(html) and text.splitlines()[-1] == "> > > x"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"], mail["Message-ID"] = "eve@example.net", "help@acme.test", "Hi", "<a@b>"
    mail.set_content(f"<html><body><p>Where is my order?</p>{html}</body></html>", subtype="html")
    raw = mail.as_bytes()
    parsed = parse(raw)
    assert len(parsed.text) < 2 * len(raw) and parsed.text.startswith("Where is my order?")

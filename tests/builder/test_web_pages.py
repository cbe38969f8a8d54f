"""Knowledge fetched from a web page (bots/webpages.py): a real HTTP server on loopback plays the
business's website; the builder's form and "Fetch again" go to it over the network."""
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from bots import webpages
from bots.models import KnowledgeItem
from tests.channels.loopback import LoopbackServer, Trickler, rebinding_dns

DELIVERY = """<!doctype html><html><head><meta charset="utf-8"><title>Delivery &amp; returns — Acme Bikes</title>
<style>body { color: red }</style><script>var tracking = "do not read me";</script></head>
<body><nav><a href="/">Home</a> <a href="/shop">Shop</a></nav>
<main><h1>Delivery</h1><p>We deliver in 2&ndash;3 working days, free over €50.</p>
<ul><li>Returns within 30 days</li><li>Refunds in 5 days</li></ul></main>
<form><button>Subscribe</button></form><footer>© Acme Bikes · Privacy</footer></body></html>"""


class Website(LoopbackServer):
    """Pages by path: (status, content type, body bytes, extra headers); every request recorded."""

    def __init__(self):
        self.pages, self.requests = {}, []
        website = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                website.requests.append(self.path)
                status, content_type, body, headers = website.pages.get(self.path, (404, "text/html", b"gone", {}))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.base = f"http://127.0.0.1:{self.port}"

    def page(self, path, body, content_type="text/html; charset=utf-8", status=200, **headers):
        self.pages[path] = (status, content_type, body.encode() if isinstance(body, str) else body, headers)
        return self.base + path


@pytest.fixture
def website(settings):
    settings.CHATNEXUS_FETCH_ALLOW_PRIVATE = True  # the "website" is on loopback
    server = Website().start()
    yield server
    server.stop()


def test_a_page_becomes_a_document_with_its_title_and_readable_text(as_alice, acme_bot, website):
    url = website.page("/delivery", DELIVERY)
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": url})
    assert response.status_code == 302
    item = KnowledgeItem.objects.get(bot=acme_bot, source_url=url)
    assert item.kind == "doc" and item.title == "Delivery & returns — Acme Bikes"
    assert "We deliver in 2–3 working days, free over €50." in item.body and "- Returns within 30 days" in item.body
    for noise in ("tracking", "color: red", "Home", "Subscribe", "Privacy", "Acme Bikes"):
        assert noise not in item.body, noise
    page = as_alice.get(reverse("bots:builder", args=[acme_bot.id])).content.decode()
    assert url in page and reverse("bots:knowledge_refetch", args=[acme_bot.id, item.id]) in page


@pytest.mark.parametrize("page", [
    "<!doctype html><html><head><meta charset=utf-8><title>Delivery</title><body><p>We deliver in 2 days.</p>",
    '<html><head><title>Delivery</title></head><body><form method="post" action="./delivery.aspx" id="form1">'
    '<input type="hidden" name="__VIEWSTATE" value="dDwtMTA4"><select name="lang"><option>English</option></select>'
    "<p>We deliver in 2 days.</p><textarea>Your message</textarea><button>Send</button></form></body></html>",
], ids=["no-end-of-head", "aspnet-form"])
def test_a_page_without_its_optional_end_of_head_or_inside_one_form_is_read(website, page):
    """Everything after <head> was skipped until a </head> that HTML5 leaves optional, and everything
    in a <form>, which an ASP.NET page wraps around all of its content: both read as ''."""
    assert webpages.fetch(website.page("/delivery", page)) == ("Delivery", "We deliver in 2 days.")


def test_the_title_is_the_pages_not_its_icons(website):
    """Inline SVG icons have titles of their own: the page's was "Delivery | Acme BikesCartSearch"."""
    url = website.page("/delivery", '<html><head><title>Delivery | Acme Bikes</title></head><body><a href="/cart">'
                                    '<svg><title>Cart</title></svg></a><button><svg><title>Search</title></svg></button>'
                                    "<p>We deliver.</p><title>Second</title></body></html>")
    assert webpages.fetch(url) == ("Delivery | Acme Bikes", "We deliver.")


def test_fetch_again_reads_the_page_as_it_is_now(as_alice, acme_bot, website):
    url = website.page("/hours", "<title>Hours</title><p>Open 9 to 5.</p>")
    as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": url, "title": "Opening hours"})
    item = KnowledgeItem.objects.get(bot=acme_bot, source_url=url)
    assert item.title == "Opening hours" and item.body == "Open 9 to 5."
    refetch = reverse("bots:knowledge_refetch", args=[acme_bot.id, item.id])

    first_read = item.fetched_at
    as_alice.post(refetch)
    assert "the page has not changed" in as_alice.get(reverse("bots:builder", args=[acme_bot.id])).content.decode()
    assert KnowledgeItem.objects.get(id=item.id).fetched_at > first_read
    website.page("/hours", "<title>Hours</title><p>Open 8 to 6, Saturdays too.</p>")
    as_alice.post(refetch)
    item.refresh_from_db()
    assert item.body == "Open 8 to 6, Saturdays too." and item.title == "Opening hours"
    assert acme_bot.__class__.objects.get(id=acme_bot.id).has_unpublished_changes  # in the draft, not live

    website.page("/hours", "down for maintenance", status=503)
    as_alice.post(refetch)
    item.refresh_from_db()
    assert item.body == "Open 8 to 6, Saturdays too."  # a failed fetch changes nothing
    assert "not fetched again: The page answered 503" in as_alice.get(
        reverse("bots:builder", args=[acme_bot.id])).content.decode()


def test_redirects_text_and_pdf_are_followed_and_read(as_alice, acme_bot, website):
    from tests.builder.test_knowledge_forms import pdf

    website.page("/old", "", status=301, Location="/new")
    website.page("/new", "Plain words about brakes.", content_type="text/plain")
    assert webpages.fetch(website.base + "/old") == ("127.0.0.1/new", "Plain words about brakes.")
    website.page("/terms.pdf", pdf("Warranty: two years on frames."), content_type="application/pdf")
    assert "Warranty: two years on frames." in webpages.fetch(website.base + "/terms.pdf")[1]
    website.page("/latin1", "<p>Caf\xe9 cr\xe8me</p>".encode("latin-1"), content_type="text/html; charset=iso-8859-1")
    assert webpages.fetch(website.base + "/latin1")[1] == "Café crème"
    import gzip
    website.page("/zipped", gzip.compress("<p>Packed words about wheels.</p>".encode()), **{"Content-Encoding": "gzip"})
    assert webpages.fetch(website.base + "/zipped")[1] == "Packed words about wheels."  # as most servers send pages
    for charset in ("undefined", "idna"):  # codecs that refuse every text or the "replace" handler: were a 500
        website.page(f"/{charset}", b"<p>Odd charset, plain words.</p>", content_type=f"text/html; charset={charset}")
        assert webpages.fetch(website.base + f"/{charset}")[1] == "Odd charset, plain words."
    website.page("/utf7", b"<title>A+2AA-B</title><p>C+2AA-D</p>", content_type="text/html; charset=utf-7")
    assert webpages.fetch(website.base + "/utf7") == ("A\ufffdB", "C\ufffdD")  # a lone surrogate: PostgreSQL refuses it
    website.page("/loop", "", status=302, Location="/loop")
    with pytest.raises(webpages.DocumentError, match="redirected more than 5 times"):
        webpages.fetch(website.base + "/loop")


@pytest.mark.parametrize("path, page, says", [
    ("/missing", None, "The page answered 404 Not Found."),
    ("/photo.png", (b"\x89PNG\r\n\x1a\n", "image/png"), "That address gives image/png, not a web page"),
    ("/huge", ("x" * (webpages.MAX_PAGE_BYTES + 10), "text/plain"), "That page is larger than 2 MB."),
    ("/empty", ("<html><script>only()</script></html>", "text/html"), "The page has no text to read."),
])
def test_a_page_that_cannot_be_read_is_refused_with_a_reason(as_alice, acme_bot, website, path, page, says):
    if page is not None:
        website.page(path, page[0], content_type=page[1])
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": website.base + path})
    assert response.status_code == 400 and says in response.content.decode()
    assert not KnowledgeItem.objects.filter(bot=acme_bot, kind="doc").exists()


def test_the_servers_own_network_is_refused_unless_allowed(as_alice, acme_bot, website, settings):
    settings.CHATNEXUS_FETCH_ALLOW_PRIVATE = False
    url = website.page("/delivery", DELIVERY)
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": url})
    assert response.status_code == 400
    assert ("127.0.0.1 is an address of this server&#x27;s own network "
            "(set CHATNEXUS_FETCH_ALLOW_PRIVATE=1 to allow it)") in response.content.decode()
    for address in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.8/", "http://[::1]/", "ftp://example.com/"):
        with pytest.raises(webpages.DocumentError):
            webpages.fetch(address)
    assert website.requests == []  # nothing reached the server
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]),
                             {"url": url, "text": "and pasted words too"})
    assert "Paste text, upload a file or give a web page: one of them." in response.content.decode()


def test_a_name_that_rebinds_to_the_servers_network_reaches_nothing(website, settings, monkeypatch):
    """The name looks public when checked and points at loopback when connected to: the connection
    goes to the address that was checked, or nowhere."""
    settings.CHATNEXUS_FETCH_ALLOW_PRIVATE = False
    website.page("/admin", "<p>internal only</p>")
    rebinding_dns(monkeypatch, "rebind.example")
    with pytest.raises(webpages.DocumentError) as refused:
        webpages.fetch(f"http://rebind.example:{website.port}/admin")
    assert str(refused.value) == ("That page cannot be fetched: rebind.example (127.0.0.1) is an address of this "
                                  "server's own network (set CHATNEXUS_FETCH_ALLOW_PRIVATE=1 to allow it).")
    assert website.requests == []


def test_another_organisation_cannot_fetch_a_bots_pages_again(as_charlie, acme_bot, website):
    url = website.page("/hours", "<p>Open 9 to 5.</p>")
    item = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Hours", body="old", source_url=url)
    assert as_charlie.post(reverse("bots:knowledge_refetch", args=[acme_bot.id, item.id])).status_code == 404
    assert website.requests == [] and KnowledgeItem.objects.get(id=item.id).body == "old"


def test_the_api_reads_a_page_into_a_document_and_again(alice, acme_bot, charlie, website):
    from rest_framework.test import APIClient

    from bots.models import ApiToken

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    url = website.page("/delivery", DELIVERY)
    created = api.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "doc", "source_url": url}, format="json")
    assert created.status_code == 201, created.content
    item = created.json()
    assert item["title"] == "Delivery & returns — Acme Bikes" and "free over €50" in item["body"] and item["fetched_at"]

    website.page("/delivery", "<title>Delivery</title><p>Free delivery over €40 now.</p>")
    again = api.post(f"/api/knowledge/{item['id']}/fetch/")
    assert again.status_code == 200 and again.json()["body"] == "Free delivery over €40 now."
    website.page("/delivery", "gone", status=410)
    failed = api.post(f"/api/knowledge/{item['id']}/fetch/")
    assert failed.status_code == 400 and "The page answered 410" in failed.json()["source_url"][0]
    assert KnowledgeItem.objects.get(id=item["id"]).body == "Free delivery over €40 now."

    for bad, field in (({"bot": acme_bot.id, "kind": "faq", "source_url": url}, "source_url"),
                       ({"bot": acme_bot.id, "kind": "doc"}, "body"),
                       ({"bot": acme_bot.id, "kind": "doc", "source_url": website.base + "/nope"}, "source_url")):
        response = api.post("/api/knowledge/", bad, format="json")
        assert response.status_code == 400 and field in response.json(), (bad, response.content)
    faq = api.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "faq", "title": "Q?", "body": "A."}, format="json")
    assert faq.status_code == 201 and api.post(f"/api/knowledge/{faq.json()['id']}/fetch/").status_code == 400

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(charlie)}")
    assert other.post(f"/api/knowledge/{item['id']}/fetch/").status_code == 404


def test_fetch_again_of_a_document_deleted_while_its_page_was_read_says_so(alice, as_alice, acme_bot, website,
                                                                          monkeypatch):
    """The document was saved with update_fields after the fetch: deleted meanwhile (a colleague, a
    version restore), Django raised DatabaseError — a 500 on the page and in the API."""
    from rest_framework.test import APIClient

    from bots.models import ApiToken

    url = website.page("/hours", "<p>Open 9 to 5.</p>")
    fetch = webpages.fetch

    def slow_fetch(address):  # the page takes its time; someone deletes the document meanwhile
        KnowledgeItem.objects.filter(source_url=url).delete()
        return fetch(address)

    monkeypatch.setattr(webpages, "fetch", slow_fetch)
    item = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Hours", body="old", source_url=url)
    response = as_alice.post(reverse("bots:knowledge_refetch", args=[acme_bot.id, item.id]))
    assert response.status_code == 302
    page = as_alice.get(response["Location"].split("#")[0]).content.decode()
    assert "“Hours” not fetched again: This document was deleted meanwhile." in page
    assert not KnowledgeItem.objects.filter(source_url=url).exists()

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(alice)}")
    item = KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Hours", body="old", source_url=url)
    failed = api.post(f"/api/knowledge/{item.id}/fetch/")
    assert failed.status_code == 400 and failed.json()["source_url"] == ["This document was deleted meanwhile."]


@pytest.mark.parametrize("head, slow, rest", [  # the slow part a byte every 0.2 s: 10 s or more
    (b"", b"HTTP/1.1 200 " + b"O" * 40 + b"K", b"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Slow: ", b"a" * 50, b"\r\nContent-Length: 2\r\n\r\nhi"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1;x=",
     b"a" * 50, b"\r\n!\r\n0\r\n\r\n"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 51\r\n\r\n", b"x" * 50, b"!"),
], ids=["the-status-line", "a-header", "a-chunk-size-line", "the-body"])
def test_a_page_that_trickles_in_is_given_up_at_the_deadline(settings, head, slow, rest):
    """requests' read timeout holds for each read: a byte now and then kept a fetch going past
    CHATNEXUS_FETCH_TIMEOUT_S for as long as the server liked (the builder's request waiting on it).
    At the deadline the connection is shut now, long before this server would have finished."""
    settings.CHATNEXUS_FETCH_ALLOW_PRIVATE = True
    settings.CHATNEXUS_FETCH_TIMEOUT_S = 1
    server = Trickler(head, slow, rest).start()
    try:
        with pytest.raises(webpages.DocumentError, match="The page took too long to answer."):
            webpages.fetch(f"http://127.0.0.1:{server.port}/")
        assert server.was_cut_off()
    finally:
        server.stop()


def test_a_text_page_or_pdf_with_windows_line_breaks_is_kept_with_unix_ones(as_alice, acme_bot, website):
    """Kept with CRLF, the document differed from the Edit page's text (kept as LF) saved unchanged,
    and "Fetch again" of the same page would have differed from the document."""
    from tests.builder.test_knowledge_forms import pdf

    url = website.page("/hours.txt", "Opening hours\r\n\r\nMonday to Friday 9 to 5.\r\n", content_type="text/plain")
    assert as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": url}).status_code == 302
    item = KnowledgeItem.objects.get(bot=acme_bot, source_url=url)
    assert item.body == "Opening hours\n\nMonday to Friday 9 to 5."
    assert webpages.read_again(item) is False
    website.page("/hours.pdf", pdf("Opening hours\\rMonday to Friday"), content_type="application/pdf")
    assert webpages.fetch(website.base + "/hours.pdf")[1] == "Opening hours\nMonday to Friday"


def test_a_redirect_to_an_address_that_is_not_one_is_refused_with_a_reason(as_alice, acme_bot, website):
    url = website.page("/moved", "", status=302, Location="http://[x/")
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"url": url})
    assert response.status_code == 400
    assert "The page redirected to something that is not a web address." in response.content.decode()
    assert not KnowledgeItem.objects.filter(bot=acme_bot, kind="doc").exists()

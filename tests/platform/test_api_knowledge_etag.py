"""A knowledge entry read through the API comes with its ETag, and a write that sends it back in
``If-Match`` is refused, 412 and nothing changed, when the entry was changed since (another
client, an admin in the builder, a version restore): a client that read an entry used to overwrite
someone else's change silently. The check holds the entry's row lock, so a change committing while
the write waits cannot slip past it; a document's web page, read when its source_url changes, is
read before that lock is taken. Without ``If-Match`` a write goes through as it always did. Real
PostgreSQL transactions and row locks, a real web page on loopback."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import OperationalError, connection, transaction
from django.urls import reverse
from rest_framework.test import APIClient

from bots.models import ApiToken, Bot, KnowledgeItem
from tests.channels.loopback import LoopbackServer
from tests.conftest import wait_for
from tests.platform.test_bot_locks import lock_waiters

pytestmark = pytest.mark.django_db

STALE = "This was changed since you read it"


def api(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(user)}")
    return client


def url(item):
    return f"/api/knowledge/{item.id}/"


def read(client, item):
    """(the entry as GET shows it, its ETag)."""
    response = client.get(url(item))
    assert response.status_code == 200
    return response.json(), response["ETag"]


def write(client, method, item, etag=None):
    """PATCH, PUT or DELETE ``item`` with a new answer (``If-Match: etag`` when given)."""
    headers = {"HTTP_IF_MATCH": etag} if etag is not None else {}
    body = {"body": "Open every day, 8 to 8 (the client's write)."}
    if method == "put":
        body.update(bot=item.bot_id, kind=item.kind, title=item.title)
    return getattr(client, method)(url(item), body if method != "delete" else None, format="json", **headers)


def _another_client_patches(alice, item):
    other = APIClient()
    other.force_login(alice)  # the same user from a browser session (a token is one per user)
    assert other.patch(url(item), {"body": "Closed on Mondays (another client)."}, format="json").status_code == 200


def _an_admin_edits_it_in_the_builder(alice, item):
    from django.test import Client

    browser = Client()
    browser.force_login(alice)
    edit = reverse("bots:knowledge_edit", args=[item.bot_id, item.id])
    assert browser.post(edit, {"title": item.title, "body": "Closed on Mondays (the builder)."}).status_code == 302


def _a_version_is_restored(alice, item):
    other = APIClient()
    other.force_login(alice)
    assert other.post(f"/api/bots/{item.bot_id}/restore/", {"version": 1}, format="json").status_code == 200


def test_an_entry_comes_with_an_etag_that_changes_when_it_does(alice, acme_bot):
    client = api(alice)
    faq = acme_bot.knowledge.get()
    _, etag = read(client, faq)
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10  # a strong ETag
    assert read(client, faq)[1] == etag  # unchanged: the same

    written = client.patch(url(faq), {"body": "Open late on Thursdays."}, format="json")  # no If-Match: as before
    assert written.status_code == 200 and written.json()["body"] == "Open late on Thursdays."
    assert written["ETag"] != etag and written["ETag"] == read(client, faq)[1]  # the write's is GET's next

    created = client.post("/api/knowledge/", {"bot": acme_bot.id, "kind": "faq", "title": "Parking?",
                                              "body": "Behind the shop."}, format="json")
    assert created.status_code == 201
    assert created["ETag"] == read(client, KnowledgeItem.objects.get(id=created.json()["id"]))[1]


@pytest.mark.parametrize("method", ["patch", "put", "delete"])
@pytest.mark.parametrize("change", [_another_client_patches, _an_admin_edits_it_in_the_builder, _a_version_is_restored],
                         ids=["another client", "the builder", "a restore"])
def test_a_write_with_the_etag_of_an_earlier_read_is_refused_and_changes_nothing(alice, acme_bot, method, change):
    faq = acme_bot.knowledge.get()
    faq.body = "Mon–Fri 9–6, Sat 10–4."
    faq.save()
    acme_bot.publish()  # version 2: restoring version 1 changes the answer
    client = api(alice)
    _, etag = read(client, faq)

    change(alice, faq)
    now = KnowledgeItem.objects.get(id=faq.id).body
    assert now != faq.body

    refused = write(client, method, faq, etag)
    assert refused.status_code == 412, refused.content
    assert refused["Content-Type"] == "application/json"
    assert STALE in refused.json()["detail"] and "Nothing was changed" in refused.json()["detail"]
    assert KnowledgeItem.objects.get(id=faq.id).body == now  # the other change stands

    shown, fresh = read(client, faq)  # read again, the client writes again: it goes through
    assert shown["body"] == now and fresh != etag
    assert write(client, method, faq, fresh).status_code == (204 if method == "delete" else 200)
    if method == "delete":
        assert not KnowledgeItem.objects.filter(id=faq.id).exists()
    else:
        assert KnowledgeItem.objects.get(id=faq.id).body == "Open every day, 8 to 8 (the client's write)."


@pytest.mark.parametrize("method", ["patch", "put", "delete"])
def test_the_current_etag_or_a_star_goes_through_a_weak_one_does_not(alice, acme_bot, method):
    client = api(alice)
    faq = acme_bot.knowledge.get()
    etag = read(client, faq)[1]
    assert write(client, method, faq, f"W/{etag}").status_code == 412  # If-Match compares strongly
    assert write(client, method, faq, f'"other", {etag}').status_code in (200, 204)  # one of a list
    if method != "delete":
        assert write(client, method, faq, "*").status_code == 200  # "*": whatever it is now


def test_an_if_match_that_names_no_etag_is_a_400_saying_how_and_changes_nothing(alice, acme_bot):
    """An ETag sent without its quotes is no ETag to Django's ``parse_etags``: Django would drop the
    condition and write; the API says what it wants instead."""
    client = api(alice)
    faq = acme_bot.knowledge.get()
    etag = read(client, faq)[1]
    response = write(client, "patch", faq, etag.strip('"'))
    assert response.status_code == 400 and "quotes included" in response.json()["If-Match"][0]
    assert KnowledgeItem.objects.get(id=faq.id).body == faq.body
    assert client.patch("/api/knowledge/abc/", {"body": "x"}, format="json", HTTP_IF_MATCH=etag).status_code == 404


def test_another_organisations_entry_is_a_404_with_if_match_too(alice, charlie, acme_bot):
    faq = acme_bot.knowledge.get()
    etag = read(api(alice), faq)[1]
    stranger = api(charlie)
    assert write(stranger, "patch", faq, etag).status_code == 404
    assert write(stranger, "delete", faq, etag).status_code == 404
    assert KnowledgeItem.objects.get(id=faq.id).body == faq.body


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_a_write_waits_for_a_change_in_progress_and_is_refused_after_it(transactional_db, alice, acme_bot, method):
    """Another save has written the entry and not committed yet: the write with If-Match waits for it
    (the row lock, taken before the check) and is refused once it commits, instead of checking the
    entry as it was and overwriting the other save."""
    faq = acme_bot.knowledge.get()
    client = api(alice)
    etag = read(client, faq)[1]
    answers = []

    def client_writes():
        try:
            answers.append(write(client, method, faq, etag))
        finally:
            connection.close()

    writer = threading.Thread(target=client_writes)
    with transaction.atomic():
        KnowledgeItem.objects.filter(id=faq.id).update(body="Open late on Thursdays (the other save).")
        writer.start()
        wait_for(lambda: lock_waiters() == 1, timeout=10, what="the API's write to wait for the other save")
    writer.join(30)
    assert [answer.status_code for answer in answers] == [412]
    assert KnowledgeItem.objects.get(id=faq.id).body == "Open late on Thursdays (the other save)."
    assert Bot.objects.get(id=acme_bot.id).published_config["knowledge"][0]["id"] == faq.id  # not deleted either


def test_a_deletion_with_if_match_and_a_version_restore_at_once_never_deadlock(transactional_db, alice, acme_bot):
    """A restore locks the bot, then writes the entry; a deletion with If-Match takes the bots first
    too (as ``Bot.delete_knowledge`` does), then the entry. Taking the entry first, it would hold it
    waiting for the bot the restore holds while the restore waits for the entry: PostgreSQL cancels
    one of them (deadlock detected). The deletion waits, then finds the entry changed: 412."""
    faq = acme_bot.knowledge.get()
    faq.body = "Mon–Fri 9–6, Sat 10–4."
    faq.save()
    acme_bot.publish()  # version 2: restoring version 1 changes the answer
    client = api(alice)
    etag = read(client, faq)[1]
    answers = []

    def client_deletes():
        try:
            answers.append(write(client, "delete", faq, etag))
        finally:
            connection.close()

    deleter = threading.Thread(target=client_deletes)
    with transaction.atomic():
        bot = Bot.objects.select_for_update(no_key=True).get(id=acme_bot.id)  # the restore's lock, taken early
        deleter.start()
        wait_for(lambda: lock_waiters() == 1, timeout=10, what="the deletion to wait for the bot")
        bot.restore(bot.versions.get(number=1))  # writes the entry
    deleter.join(30)
    assert [answer.status_code for answer in answers] == [412]
    assert KnowledgeItem.objects.get(id=faq.id).body == "We are open Monday to Friday, 9am to 6pm."


def test_the_schema_documents_if_match_and_the_etag_on_knowledge(client):
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]
    for method in ("put", "patch", "delete"):
        operation = paths["/api/knowledge/{id}/"][method]
        if_match = [p for p in operation["parameters"] if p["name"] == "If-Match"]
        assert if_match and if_match[0]["in"] == "header" and "412" in if_match[0]["description"]
        assert "412" in operation["responses"]
    assert "ETag" in paths["/api/knowledge/{id}/"]["get"]["responses"]["200"]["headers"]
    assert "ETag" in paths["/api/knowledge/{id}/"]["patch"]["responses"]["200"]["headers"]


class PageServer(LoopbackServer):
    """A business's web page on loopback that, before it answers, runs ``meanwhile()`` (in its own thread
    and database connection): what happens while the API's write waits for the page. ``fetched`` holds
    what ``meanwhile()`` returned (or raised) at each request."""

    PAGE = b"<title>Hours</title><p>Open every day, 8 to 8 (the page).</p>"

    def __init__(self, meanwhile):
        self.fetched = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    server.fetched.append(meanwhile())
                except Exception as error:  # noqa: BLE001 - the test asserts what it was
                    server.fetched.append(error)
                finally:
                    connection.close()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(server.PAGE)))
                self.end_headers()
                self.wfile.write(server.PAGE)

            def log_message(self, *args):
                pass

        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.port}/hours"


@pytest.fixture
def page_server(settings):
    """``page_server(meanwhile)``: a started PageServer, stopped after the test."""
    settings.CHATNEXUS_FETCH_ALLOW_PRIVATE = True  # the "website" is on loopback
    servers = []
    yield lambda meanwhile: servers.append(PageServer(meanwhile).start()) or servers[-1]
    for server in servers:
        server.stop()


@pytest.fixture
def document(acme_bot):
    return KnowledgeItem.objects.create(bot=acme_bot, kind="doc", title="Hours", body="Mon–Fri 9–6.",
                                        source_url="https://acme.example/old-hours")


def test_a_write_with_if_match_locks_nothing_while_its_page_is_fetched(transactional_db, alice, document,
                                                                       page_server):
    """A document given a new source_url (and no body) is read from that page, for up to
    CHATNEXUS_FETCH_TIMEOUT_S. The write with If-Match held the entry's row lock all that time (on SQLite,
    the embedded default, the whole database's write lock: a reply stored meanwhile failed with "database
    is locked"). The page is read first now; then the row is locked, checked and written."""
    def row_is_free():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SELECT id FROM {KnowledgeItem._meta.db_table} WHERE id = %s FOR UPDATE NOWAIT",
                               [document.id])
            return "free"
        except OperationalError:  # could not obtain lock on row
            return "locked"

    server = page_server(row_is_free)
    client = api(alice)
    written = client.patch(url(document), {"source_url": server.url}, format="json",
                           HTTP_IF_MATCH=read(client, document)[1])
    assert server.fetched == ["free"]
    assert written.status_code == 200, written.content
    assert written.json()["body"] == "Open every day, 8 to 8 (the page)."
    assert written["ETag"] == read(client, document)[1]


def test_a_stale_write_is_refused_before_its_page_is_fetched(alice, document, page_server):
    server = page_server(lambda: "fetched")
    client = api(alice)
    etag = read(client, document)[1]
    KnowledgeItem.objects.filter(id=document.id).update(body="Mon–Sat 9–6 (another save).")
    refused = client.patch(url(document), {"source_url": server.url}, format="json", HTTP_IF_MATCH=etag)
    assert refused.status_code == 412 and STALE in refused.json()["detail"]
    assert server.fetched == []
    assert KnowledgeItem.objects.get(id=document.id).body == "Mon–Sat 9–6 (another save)."


@pytest.mark.parametrize("if_match, refused", [
    ("read", (412, "detail", STALE)),  # the ETag the client read: changed since
    ("*", (400, "source_url", 'Only a document (kind "doc") is read from a web page.')),  # validated again
], ids=["its-etag", "star"])
def test_a_change_saved_while_the_page_is_fetched_is_not_overwritten(transactional_db, alice, document,
                                                                     page_server, if_match, refused):
    """The page is read with nothing locked, so another client may save the entry meanwhile (here it
    makes the document a FAQ pair). The write then finds it changed: refused (412) for the ETag read
    before; with "*" it is validated again on the entry as it is now (a FAQ pair reads no web page)."""
    def another_client_makes_it_a_faq():
        other = APIClient()
        other.force_login(alice)
        return other.patch(url(document), {"kind": "faq", "title": "When are you open?"}, format="json").status_code

    server = page_server(another_client_makes_it_a_faq)
    client = api(alice)
    etag = read(client, document)[1] if if_match == "read" else if_match
    response = client.patch(url(document), {"source_url": server.url}, format="json", HTTP_IF_MATCH=etag)
    assert server.fetched == [200]
    status_code, field, says = refused
    assert response.status_code == status_code, response.content
    assert says in str(response.json()[field])
    now = KnowledgeItem.objects.get(id=document.id)
    assert (now.kind, now.title, now.body, now.source_url) == ("faq", "When are you open?", "Mon–Fri 9–6.",
                                                               "https://acme.example/old-hours")

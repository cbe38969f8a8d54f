"""Bodies over CHATNEXUS_MAX_REQUEST_BYTES (32 MiB) are refused by the real ASGI server before Django
reads them: uvicorn sets no limit and Django spools any body to disk before a view's own size check."""
import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

LIMIT = 32 * 1024 * 1024

pytestmark = pytest.mark.usefixtures("transactional_db")  # the server's test database (its views look things up)


def connection(live_server_url):
    url = urlsplit(live_server_url)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=20)


def test_a_declared_length_over_the_limit_is_refused_without_a_byte_read(live_server_url):
    conn = connection(live_server_url)
    conn.putrequest("POST", "/channels/whatsapp/any-key/")
    conn.putheader("Content-Type", "application/x-www-form-urlencoded")
    conn.putheader("Content-Length", str(LIMIT + 1))
    conn.endheaders()  # no body follows: the answer may not wait for it
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read()) == {"error": f"request body larger than {LIMIT} bytes"}


@pytest.mark.parametrize("length", ["12abc", "-"])
def test_a_content_length_that_is_no_number_is_a_400(live_server_url, length):
    conn = connection(live_server_url)
    conn.putrequest("POST", "/channels/whatsapp/any-key/")
    conn.putheader("Content-Length", length)
    conn.endheaders()
    assert conn.getresponse().status == 400


def test_a_chunked_body_is_cut_off_at_the_limit(live_server_url):
    chunk = b"x" * (1024 * 1024)
    sent = 0

    def body():  # an endless stream, as an attacker would send
        nonlocal sent
        while sent < 4 * LIMIT:
            sent += len(chunk)
            yield chunk

    conn = connection(live_server_url)
    started = time.monotonic()
    try:
        conn.request("POST", "/channels/whatsapp/any-key/", body=body(), encode_chunked=True,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while more was coming: the answer is still there to read
    response = conn.getresponse()
    assert response.status == 413
    assert sent < 2 * LIMIT, sent  # it stopped reading near the limit, not at the end of the stream
    assert time.monotonic() - started < 15


def test_a_body_under_the_limit_reaches_the_view(live_server_url):
    conn = connection(live_server_url)
    conn.request("POST", "/channels/whatsapp/no-such-key/", body=b"From=whatsapp%3A%2B1", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    assert response.status == 404, response.read()[:2000]  # the view's own answer: an unknown channel

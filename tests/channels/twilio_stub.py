"""A stub of Twilio's REST API on loopback, speaking its wire format.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with form fields and HTTP
basic auth (AccountSid:AuthToken) answers with Twilio's JSON message resource (a new
``SM…`` sid, status ``queued``) or, when told to, with Twilio's error JSON and status
(429, 500, 400 with code 63016, ...); a Body over 1,600 UTF-16 code units is refused with
21617, as Twilio does. Every request is recorded.

    stub = TwilioStub(); stub.start()
    stub.fail_next(429, code=20429, message="Too Many Requests")
    stub.fail_request(2, 503, code=20503, message="Service Unavailable")
    stub.delay_next(3)  # the next message is created, but Twilio answers 3 s later (past a client's timeout)
    stub.requests  # [{"path", "account_sid", "auth", "form", "method"}]

The messages created, as Twilio lists them: ``GET /2010-04-01/Accounts/{AccountSid}/Messages.json``
filtered by ``To``, ``From`` and ``DateSent>`` (``>=`` on the wire; a date, or a time in UTC), newest first,
each listed as sent when it was created.

The account, as the Channels page's "Check the Twilio settings" asks for it: ``GET
/2010-04-01/Accounts/{AccountSid}.json`` answers Twilio's account resource (``stub.account_status``,
default ``active``) or 401 with error 20003. ``stub.tokens[AccountSid] = token`` makes every call
of that account check the Auth Token as Twilio does (otherwise any token is taken).

Media, as Twilio serves what customers sent: ``GET /2010-04-01/Accounts/{AccountSid}/Messages/
{MessageSid}/Media/{MediaSid}`` with basic auth answers 307 to a file URL on another host name
(``localhost`` instead of ``127.0.0.1``, as Twilio redirects to its CDN), which serves the bytes.

    url = stub.add_media(ACCOUNT_SID, b"...", "image/jpeg")     # the MediaUrl0 of a webhook
    stub.file_requests  # [{"path", "auth"}] of the file host
"""
import base64
import json
import secrets
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .loopback import LoopbackServer

MAX_BODY = 1600  # what Twilio takes in one message, in UTF-16 code units (an emoji counts 2); more: error 21617


class TwilioStub(LoopbackServer):
    def __init__(self, host="127.0.0.1", port=0):
        self.requests = []
        self.failures = []  # (status, code, message) consumed one per request
        self.cut_files = set()  # media paths whose download stops half-way (the connection drops)
        self.fail_at = {}  # request number (1-based, since reset) -> (status, code, message)
        self.media = {}  # media path -> (content type, bytes)
        self.file_requests = []
        self.tokens = {}  # account sid -> the only auth token Twilio accepts for it (unset: any)
        self.account_status = {}  # account sid -> "active" (default), "suspended", "closed"
        self.on_create = None  # called with a created message's record before Twilio answers (a fast callback)
        self.delays = []  # seconds to wait before answering, consumed one per Messages.json post
        self._lock = threading.Lock()
        self._serve(ThreadingHTTPServer((host, port), self._handler()))
        self.base_url = f"http://{self.host}:{self.port}"

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.failures.clear()
            self.fail_at.clear()
            self.cut_files.clear()
            self.media.clear()
            self.file_requests.clear()
            self.tokens.clear()
            self.account_status.clear()
            self.on_create = None
            self.delays.clear()

    def add_media(self, account_sid, content, content_type):
        """Store a customer's file; returns its Twilio media URL."""
        path = f"/2010-04-01/Accounts/{account_sid}/Messages/MM{secrets.token_hex(16)}/Media/ME{secrets.token_hex(16)}"
        with self._lock:
            self.media[path] = (content_type, content)
        return self.base_url + path

    def fail_next(self, status, code=None, message="error", times=1):
        with self._lock:
            self.failures.extend([(status, code, message)] * times)

    def delay_next(self, seconds):
        """Answer the next Messages.json post ``seconds`` late (what it does, it does at once)."""
        with self._lock:
            self.delays.append(seconds)

    def fail_request(self, number, status, code=None, message="error"):
        """Fail the ``number``-th request after the last reset (1-based)."""
        with self._lock:
            self.fail_at[number] = (status, code, message)

    def messages(self, to=None):
        """Recorded Messages.json form posts (optionally to one recipient)."""
        with self._lock:
            found = [r for r in self.requests if r["method"] == "POST" and r["path"].endswith("/Messages.json")]
        return [r for r in found if to is None or r["form"].get("To") == to]

    def _listed(self, account_sid, path):
        """Twilio's page of the account's messages matching the query's To, From and DateSent> (newest first)."""
        query = {key: values[-1] for key, values in parse_qs(urlsplit(path).query).items()}
        since = query.get("DateSent>", "")
        since = since and datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ" if "T" in since else "%Y-%m-%d")
        with self._lock:
            created = [r["resource"] for r in self.requests if r.get("resource") and r["account_sid"] == account_sid]
        found = [
            {**resource, "status": "sent", "date_sent": resource["date_created"]}  # sent as soon as created
            for resource in reversed(created)
            if query.get("To", resource["to"]) == resource["to"] and query.get("From", resource["from"]) == resource["from"]
            and (not since or parsedate_to_datetime(resource["date_created"]) >= since.replace(tzinfo=timezone.utc))
        ]
        uri = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        return {"messages": found, "end": max(len(found) - 1, 0), "first_page_uri": uri, "next_page_uri": None,
                "page": 0, "page_size": 50, "previous_page_uri": None, "start": 0, "uri": uri}

    def _authenticated(self, auth, account_sid):
        return auth is not None and auth[0] == account_sid and self.tokens.get(account_sid, auth[1]) == auth[1]

    def _handler(stub):  # noqa: N805 - the handler closes over the stub
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8")
                form = {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}
                parts = self.path.split("?")[0].strip("/").split("/")
                auth = self._auth()
                record = {"path": self.path, "account_sid": parts[2] if len(parts) > 2 else "", "auth": auth, "form": form,
                          "method": "POST"}
                with stub._lock:
                    stub.requests.append(record)
                    failure = stub.fail_at.pop(len(stub.requests), None)
                    if failure is None and stub.failures:
                        failure = stub.failures.pop(0)
                    self.delay = stub.delays.pop(0) if stub.delays and parts[-1:] == ["Messages.json"] else 0
                if len(parts) != 4 or parts[0] != "2010-04-01" or parts[1] != "Accounts" or parts[3] != "Messages.json":
                    return self._json(404, _error(20404, "The requested resource was not found", 404))
                if not stub._authenticated(auth, parts[2]):
                    return self._json(401, _error(20003, "Authenticate", 401))
                if failure:
                    status, code, message = failure
                    return self._json(status, _error(code or status, message, status))
                if not form.get("To") or not (form.get("From") or form.get("MessagingServiceSid")):
                    return self._json(400, _error(21604, "A 'To' and 'From' phone number is required.", 400))
                if not form.get("Body") and not form.get("ContentSid") and not form.get("MediaUrl"):
                    return self._json(400, _error(21602, "Message body is required.", 400))
                if len(form.get("Body", "").encode("utf-16-le")) // 2 > MAX_BODY:  # Twilio counts UTF-16 units
                    return self._json(400, _error(21617, "The concatenated message body exceeds the 1600 character limit.", 400))
                resource = _message(parts[2], form)
                record["sid"], record["resource"] = resource["sid"], resource
                if stub.on_create is not None:
                    stub.on_create(record)
                return self._json(201, resource)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path.startswith("/files/"):  # the CDN: no credentials needed, none expected
                    with stub._lock:
                        stub.file_requests.append({"path": path, "auth": self._auth()})
                        found = stub.media.get(path[len("/files"):])
                    if found is None:
                        return self._json(404, _error(20404, "The requested resource was not found", 404))
                    content_type, content = found
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if path[len("/files"):] in stub.cut_files:  # the connection drops mid-file
                        self.wfile.write(content[: len(content) // 2])
                        self.close_connection = True
                        return None
                    return self.wfile.write(content)
                parts = path.strip("/").split("/")
                auth = self._auth()
                with stub._lock:
                    stub.requests.append({"path": self.path, "account_sid": parts[2] if len(parts) > 2 else "",
                                          "auth": auth, "form": {}, "method": "GET"})
                    known = path in stub.media
                if len(parts) == 4 and parts[:2] == ["2010-04-01", "Accounts"] and parts[3] == "Messages.json":
                    if not stub._authenticated(auth, parts[2]):
                        return self._json(401, _error(20003, "Authenticate", 401))
                    return self._json(200, stub._listed(parts[2], self.path))
                if len(parts) == 3 and parts[:2] == ["2010-04-01", "Accounts"] and parts[2].endswith(".json"):
                    sid = parts[2][: -len(".json")]
                    if not stub._authenticated(auth, sid):
                        return self._json(401, _error(20003, "Authenticate", 401))
                    return self._json(200, _account(sid, stub.account_status.get(sid, "active")))
                if len(parts) < 3 or not stub._authenticated(auth, parts[2]):
                    return self._json(401, _error(20003, "Authenticate", 401))
                if not known:
                    return self._json(404, _error(20404, "The requested resource was not found", 404))
                self.send_response(307)
                self.send_header("Location", f"http://localhost:{stub.port}/files{path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _auth(self):
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return None
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return user, password

            def _json(self, status, payload):
                if getattr(self, "delay", 0):  # set by do_POST: this answer comes late
                    time.sleep(self.delay)
                    self.delay = 0
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped waiting (its timeout)
                    self.close_connection = True

        return Handler


def _error(code, message, status):
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


def _account(sid, status):
    return {"sid": sid, "friendly_name": "Acme Bikes", "status": status, "type": "Full", "owner_account_sid": sid,
            "date_created": "Mon, 02 Feb 2026 10:00:00 +0000", "date_updated": "Mon, 02 Feb 2026 10:00:00 +0000",
            "auth_token": "", "uri": f"/2010-04-01/Accounts/{sid}.json", "subresource_uris": {}}


def _message(account_sid, form):
    sid = "SM" + secrets.token_hex(16)
    now = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": form.get("Body", ""),
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"},
        "to": form.get("To"),
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }

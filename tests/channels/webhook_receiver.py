"""A customer's backend on loopback, receiving the API channel's reply webhook (bots/api/webhook.py).

Every POST is recorded with its headers and raw body; it answers 200, or the statuses queued
with ``answer(...)``, one per request.

    receiver = WebhookReceiver().start()
    receiver.answer(503, 200)       # the first POST gets 503, the next 200, then 200 again
    receiver.requests               # [{"path", "headers", "body" (bytes), "json", "status"}]
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .loopback import LoopbackServer


class WebhookReceiver(LoopbackServer):
    def __init__(self, host="127.0.0.1"):
        self.requests = []
        self.statuses = []
        self._lock = threading.Lock()
        self._serve(ThreadingHTTPServer((host, 0), self._handler()))
        self.url = f"http://{self.host}:{self.port}/hooks/chatnexus"

    def answer(self, *statuses):
        with self._lock:
            self.statuses.extend(statuses)

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    try:
                        parsed = json.loads(body)
                    except ValueError:
                        parsed = None
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "json": parsed, "status": status})
                answer = b'{"ok": true}' if status < 300 else b"backend says no"
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        return Handler

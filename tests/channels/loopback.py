"""What every stub server of these tests shares: a threaded server on loopback, served from a
daemon thread between ``start()`` and ``stop()``; and a server that answers slowly (``Trickler``)."""
import socketserver
import threading
import time


class LoopbackServer:
    server = None  # a socketserver server (ThreadingHTTPServer, ThreadingTCPServer), set by ``_serve``

    def _serve(self, server):
        self.server = server
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Trickler(LoopbackServer):
    """Answers any request with ``head``, then ``slow`` a byte every 0.2 s, then ``rest``; tells
    whether it sent everything or was cut off (a send failed: the client shut the connection).
    ``greets``: it speaks first, as a mail server does, not after an HTTP request's head."""

    def __init__(self, head: bytes, slow: bytes, rest: bytes, greets: bool = False):
        self.sent_all, self.cut_off = threading.Event(), threading.Event()
        trickler = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while not greets and self.rfile.readline() not in (b"\r\n", b""):  # the request's head
                    pass
                try:
                    self.wfile.write(head)
                    for byte in slow:
                        time.sleep(0.2)
                        self.wfile.write(bytes([byte]))
                    self.wfile.write(rest)
                    trickler.sent_all.set()
                except OSError:
                    trickler.cut_off.set()

        self._serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler))

    def was_cut_off(self) -> bool:
        """The client shut the connection before all was sent: its next sends fail."""
        return not self.sent_all.is_set() and self.cut_off.wait(10)


def rebinding_dns(monkeypatch, name: str, first: str = "93.184.215.14") -> list:
    """The system resolver, except that ``name`` answers ``first`` (a public address) once and
    127.0.0.1 ever after: a DNS-rebinding attacker's name, whose short-lived record changes
    between the server's check and its connection."""
    return resolving(monkeypatch, name, [first], ["127.0.0.1"])


def resolving(monkeypatch, name: str, *answers: list) -> list:
    """The system resolver, except that ``name`` answers the addresses of ``answers[0]`` to its
    first lookup, ``answers[1]`` to the second, and the last ones ever after. Returns the list of
    the name's lookups so far."""
    import socket

    real, asked = socket.getaddrinfo, []

    def getaddrinfo(host, *args, **kwargs):
        if host != name:
            return real(host, *args, **kwargs)
        asked.append(host)
        return [found for address in answers[min(len(asked), len(answers)) - 1] for found in real(address, *args, **kwargs)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def routed(monkeypatch, routes: dict) -> list:
    """Connections to each (public address, port) of ``routes`` arrive at its (loopback address,
    port) instead: the internet, for tests that cannot reach it. Returns every (address, port)
    this process's sockets connected to since, as they asked for it."""
    import socket

    real, asked = socket.socket.connect, []

    def connect(sock, address):
        asked.append(tuple(address[:2]))
        return real(sock, routes.get(tuple(address[:2]), address))

    monkeypatch.setattr(socket.socket, "connect", connect)
    return asked

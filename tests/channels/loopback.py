"""What every stub server of these tests shares: a threaded server on loopback, served from a
daemon thread between ``start()`` and ``stop()``."""
import threading


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


def rebinding_dns(monkeypatch, name: str, first: str = "93.184.215.14") -> None:
    """The system resolver, except that ``name`` answers ``first`` (a public address) once and
    127.0.0.1 ever after: a DNS-rebinding attacker's name, whose short-lived record changes
    between the server's check and its connection."""
    import socket

    real, asked = socket.getaddrinfo, []

    def getaddrinfo(host, *args, **kwargs):
        if host != name:
            return real(host, *args, **kwargs)
        asked.append(host)
        return real(first if len(asked) == 1 else "127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

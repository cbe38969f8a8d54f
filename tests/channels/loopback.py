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

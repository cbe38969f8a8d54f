"""A small IMAP4rev1 server on loopback, speaking enough of the protocol for imaplib:
CAPABILITY, LOGIN, SELECT/EXAMINE, UID SEARCH, UID FETCH (BODY.PEEK[] / RFC822, or
INTERNALDATE over a range), NOOP and LOGOUT, with UIDs and UIDVALIDITY. Records the commands it
was sent.

    server = IMAPStub(user="bot", password="pw").start()
    server.add(raw_bytes)             # appends a message with the next UID, delivered now
    server.add(raw_bytes, delivered)  # ... delivered at that datetime (its INTERNALDATE)
    server.refuse_fetch.add(uid)      # the next FETCH of it answers NO (a passing server error)
    IMAPStub(user, password, tls=context)  # IMAP over TLS (port 993's kind), with that server context
"""
import datetime
import re
import socketserver

from .loopback import LoopbackServer


class IMAPStub(LoopbackServer):
    def __init__(self, user, password, uidvalidity=7, tls=None):
        self.user, self.password, self.uidvalidity = user, password, uidvalidity
        self.messages = {}  # uid -> raw bytes
        self.delivered = {}  # uid -> datetime (INTERNALDATE)
        self.refuse_fetch = set()
        self.commands = []
        self._next_uid = 1
        stub = self

        class Handler(socketserver.StreamRequestHandler):
            def setup(self):
                if tls is not None:  # the handshake in this connection's thread, not the server's
                    self.request = tls.wrap_socket(self.request, server_side=True)
                super().setup()

            def handle(self):
                self.send(b"* OK [CAPABILITY IMAP4rev1] stub ready")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    tag, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
                    command, _, args = rest.partition(" ")
                    stub.commands.append(f"{command.upper()} {args}".strip())
                    if not stub._dispatch(self, tag, command.upper(), args):
                        return

            def send(self, data):
                self.wfile.write(data + b"\r\n")

        self._serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler))

    def add(self, raw: bytes, delivered: datetime.datetime | None = None) -> int:
        uid = self._next_uid
        self.messages[uid] = raw
        self.delivered[uid] = delivered or datetime.datetime.now(datetime.timezone.utc)
        self._next_uid += 1
        return uid

    def _dispatch(self, conn, tag, command, args):
        ok = lambda text="completed": conn.send(f"{tag} OK {text}".encode())  # noqa: E731
        if command == "CAPABILITY":
            conn.send(b"* CAPABILITY IMAP4rev1")
            ok()
        elif command == "LOGIN":
            user, password = [a.strip('"') for a in re.findall(r'"(?:[^"\\]|\\.)*"|\S+', args)][:2]
            if (user, password) == (self.user, self.password):
                ok("LOGIN completed")
            else:
                conn.send(f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials".encode())
        elif command in ("SELECT", "EXAMINE"):
            conn.send(f"* {len(self.messages)} EXISTS".encode())
            conn.send(f"* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid".encode())
            conn.send(f"* OK [UIDNEXT {self._next_uid}] next".encode())
            ok(("[READ-ONLY] " if command == "EXAMINE" else "[READ-WRITE] ") + command + " completed")
        elif command == "UID":
            self._uid(conn, tag, args)
        elif command == "NOOP":
            ok()
        elif command == "LOGOUT":
            conn.send(b"* BYE logging out")
            ok()
            return False
        else:
            conn.send(f"{tag} BAD unknown command".encode())
        return True

    def _uid(self, conn, tag, args):
        sub, _, rest = args.partition(" ")
        if sub.upper() == "SEARCH":
            match = re.search(r"UID (\d+):\*", rest)
            low = int(match.group(1)) if match else 1
            uids = sorted(self.messages)
            found = [uid for uid in uids if uid >= low]
            if not found and uids:
                found = [uids[-1]]  # RFC 3501: n:* always includes the highest UID
            conn.send(("* SEARCH " + " ".join(map(str, found))).strip().encode())
            conn.send(f"{tag} OK SEARCH completed".encode())
        elif sub.upper() == "FETCH" and "INTERNALDATE" in rest.upper():
            low = int(rest.split()[0].split(":")[0])
            for seq, uid in enumerate(sorted(self.messages), 1):
                if uid >= low:
                    date = self.delivered[uid].strftime("%d-%b-%Y %H:%M:%S %z")
                    conn.send(f'* {seq} FETCH (UID {uid} INTERNALDATE "{date}")'.encode())
            conn.send(f"{tag} OK FETCH completed".encode())
        elif sub.upper() == "FETCH":
            uid = int(rest.split()[0])
            if uid in self.refuse_fetch:
                self.refuse_fetch.discard(uid)
                conn.send(f"{tag} NO [UNAVAILABLE] try again later".encode())
                return
            raw = self.messages.get(uid)
            if raw is not None:
                seq = sorted(self.messages).index(uid) + 1
                conn.wfile.write(f"* {seq} FETCH (UID {uid} BODY[] {{{len(raw)}}}\r\n".encode() + raw + b")\r\n")
            conn.send(f"{tag} OK FETCH completed".encode())
        else:
            conn.send(f"{tag} BAD unknown UID command".encode())

#!/usr/bin/python3
"""https_backend.py: HTTPS/1.1 keep-alive backends for the outbound TLS tests.

Usage: https_backend.py CERT_DIR NAME:CERT:KEY[:FLAG,...] ...

Each NAME listens on 127.0.0.1 on a free port with the certificate CERT.pem
and key KEY.key from CERT_DIR. FLAGs: "client" (a client certificate signed
by CERT_DIR/ca.pem is required), "tls12" (TLS 1.2 at most), "tls11" (TLS 1.0
and 1.1 only), "notickets" (TLS 1.3 without session tickets: no resumption). A plain-HTTP control listener answers
GET /stats/NAME with what that backend saw, as JSON: TCP connections
accepted, TLS handshakes completed, of which resumed (session_reused),
requests served, and the server name sent (SNI; "" when none) and the
client certificate's subject CN ("" when none) of the last handshake.
Once listening it prints "NAME PORT" lines, "control PORT", then "ready",
on stdout. It stops on SIGTERM or when stdin closes.

Paths: /close answers with "Connection: close" and closes; /close-later
answers as a keep-alive response, then after 0.2 s sends close_notify and
closes (an idle connection the backend drops); any other path answers 200
with "tls ok PATH" and keeps the connection open.
Standard library only; run with /usr/bin/python3.
"""
import http.server
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)   # TLS 1.1, on purpose

lock = threading.Lock()
stats = {}


def count(name, field, value=1):
    with lock:
        s = stats[name]
        if isinstance(value, str):
            s[field] = value
        else:
            s[field] += value


class TLSHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        # The handshake runs here, in the connection's thread, so that a
        # client that never finishes one holds up nobody else.
        name = self.server.name
        self.request.settimeout(10)
        self.server.last_sni.pop(threading.get_ident(), None)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.handshake_ok = False
            self.drain()
            return super().setup()
        self.handshake_ok = True
        cert = self.request.getpeercert()
        cn = ""
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        with lock:
            s = stats[name]
            s["handshakes"] += 1
            s["resumed"] += 1 if self.request.session_reused else 0
            s["sni"] = self.server.last_sni.get(threading.get_ident(), "")
            s["client_cn"] = cn
        super().setup()

    def drain(self):
        # A refused handshake (TLS 1.3 refuses a missing client certificate after the
        # client's Finished, when its request may be on the way): read what the client sent
        # before closing, so that the close is a FIN after our alert, not a reset that
        # could discard the alert before the client reads it.
        try:
            self.request.settimeout(0.3)
            while socket.socket.recv(self.request, 65536):
                pass
        except OSError:
            pass

    def handle(self):
        if self.handshake_ok:
            try:
                super().handle()
            except (ssl.SSLError, OSError):
                pass

    def do_GET(self):
        count(self.server.name, "requests")
        close = self.path == "/close"
        body = b"closing" if close else ("tls ok " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path == "/close-later":
            time.sleep(0.2)
            self.close_connection = True
            try:
                self.request.unwrap()   # close_notify; the client answers with its own
            except (ssl.SSLError, OSError):
                pass


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name, ctx):
        self.name = name
        self.ctx = ctx
        self.last_sni = {}
        super().__init__(("127.0.0.1", 0), TLSHandler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # http.server writes a head and its body apart: without this, Nagle and the client's
        # delayed ACK hold each body for 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        count(self.name, "connections")
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        with lock:
            body = json.dumps(stats.get(name, {})).encode()
        self.send_response(200 if name in stats else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def make_context(cert_dir, cert, key, flags, server_ref):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(cert_dir, cert + ".pem"), os.path.join(cert_dir, key + ".key"))
    if "tls12" in flags:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if "tls11" in flags:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    if "notickets" in flags:
        ctx.num_tickets = 0         # TLS 1.3 issues no session: every handshake is a full one
    if "client" in flags:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(os.path.join(cert_dir, "ca.pem"))

    def on_sni(sslobj, server_name, context):
        server_ref[0].last_sni[threading.get_ident()] = server_name or ""

    ctx.sni_callback = on_sni
    return ctx


def main():
    cert_dir = sys.argv[1]
    servers = []
    for spec in sys.argv[2:]:
        parts = spec.split(":")
        name, cert, key = parts[0], parts[1], parts[2]
        flags = parts[3].split(",") if len(parts) > 3 else []
        ref = [None]
        ctx = make_context(cert_dir, cert, key, flags, ref)
        stats[name] = {"connections": 0, "handshakes": 0, "resumed": 0, "requests": 0,
                       "sni": "", "client_cn": ""}
        srv = TLSServer(name, ctx)
        ref[0] = srv
        servers.append(srv)
    control = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ControlHandler)
    control.daemon_threads = True
    for srv in servers + [control]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    for srv in servers:
        print(srv.name, srv.server_address[1])
    print("control", control.server_address[1])
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    sys.stdin.read()                # ends when the test closes our stdin (or dies)
    os._exit(0)


if __name__ == "__main__":
    main()

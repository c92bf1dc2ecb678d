"""A loopback reverse proxy that adds `Authorization: Bearer TOKEN` to every request.

The MCP conformance suite's client cannot send headers, while aiops requires a token on
HTTP; this proxy lets the suite test the real, guarded server without weakening it.

Usage: auth_proxy.py LISTEN_PORT UPSTREAM_URL TOKEN   (prints "ready PORT" when listening)
"""

import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM, TOKEN = sys.argv[2].rstrip("/"), sys.argv[3]
HOP = {"host", "content-length", "connection", "transfer-encoding", "authorization"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def forward(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Authorization"] = f"Bearer {TOKEN}"
        req = urllib.request.Request(UPSTREAM + self.path, data=body, headers=headers, method=self.command)
        try:
            resp = urllib.request.urlopen(req, timeout=120)
        except urllib.error.HTTPError as e:
            resp = e
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        # Stream: Streamable HTTP answers are SSE streams.
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_DELETE = forward


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy)
print(f"ready {server.server_address[1]}", flush=True)
server.serve_forever()

"""Tiny HTTP/1.1 server for tests/unit/test_http.c (not the HubSpot mock)."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        p = self.path
        if p == "/echo":
            self.answer(200, json.dumps({
                "method": self.command, "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "port": self.client_address[1]}),
                [("x-hubspot-ratelimit-remaining", "99"),
                 ("X-HubSpot-RateLimit-Max", "100"),
                 ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
                 ("X-HubSpot-RateLimit-Daily", "250000"),
                 ("X-HubSpot-RateLimit-Daily-Remaining", "249999"),
                 ("X-HubSpot-Correlation-Id", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-tail")])
        elif p == "/429":
            self.answer(429, '{"status":"error","policyName":"SECONDLY"}',
                        [("Retry-After", "2.5")])
        elif p == "/429date":
            self.answer(429, "{}", [("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")])
        elif p == "/redirect":
            self.answer(302, "", [("Location", "/echo")])
        elif p == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(70 * 1024 * 1024))
            self.end_headers()
            chunk = b"x" * (1024 * 1024)
            try:
                for _ in range(70):
                    self.wfile.write(chunk)
            except Exception:
                pass
        elif p == "/trunc":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"results":')
            self.wfile.flush()
            self.close_connection = True
        elif p == "/slow":
            time.sleep(5)
            self.answer(200, "{}")
        else:
            self.answer(404, '{"status":"error","category":"OBJECT_NOT_FOUND"}')

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()

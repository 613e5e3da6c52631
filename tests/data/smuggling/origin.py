"""A second real origin for tests/smuggling_live.rs: Python's http.server as a plain handler
uses it. It frames a request body by Content-Length alone (it knows no Transfer-Encoding),
answers 200 on every path with keep-alive, and logs each request it parsed as one JSON line
(client port, status, request line), like the nginx origin's access log.

Usage: origin.py BIND PORT LOG
"""

import http.server
import json
import sys

BIND, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        # What handlers written on http.server do: int() of the first Content-Length. A value
        # int() refuses raises, and the server drops the connection without an answer.
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_request(self, code="-", size="-"):
        with open(LOG, "a", encoding="utf-8") as log:
            line = {
                "port": self.client_address[1],
                "status": int(code),
                "request": self.requestline,
            }
            log.write(json.dumps(line) + "\n")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((BIND, PORT), Handler).serve_forever()

#!/usr/bin/env python3
"""HTTP/1.1 server for the capture fixtures: the behaviour nginx does not easily give.

Standard library only. Serves on every address of its network namespace (IPv4 and IPv6),
one thread per connection, keep-alive by default.

    GET  /chunked    chunked response in several chunks, with a trailer (X-Checksum)
    GET  /slow       headers at once, then the body in three pieces 300 ms apart
    GET  /empty      204 No Content
    GET  /etag       200 with an ETag; 304 Not Modified when If-None-Match matches
    HEAD /download   the headers of a 4 KiB download, no body
    GET  /download   4 KiB of text
    GET  /gzip       a gzip-encoded JSON body (Content-Encoding: gzip)
    GET  /close      a close-delimited body: no Content-Length, the server closes
    GET  /upgrade    101 Switching Protocols (Upgrade: echo), then non-HTTP bytes: every
                     line the client sends comes back upper-cased, until the client closes
    POST /upload     reads a Content-Length or chunked body (answers 100 Continue first when
                     asked to) and reports its size and SHA-256 as JSON
    anything else    404 with a short text body
"""

import gzip
import hashlib
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ETAG = '"fixture-v1"'
DOWNLOAD = b"".join(b"line %04d of the download\n" % i for i in range(160))[:4096]


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: keep-alive, and BaseHTTPRequestHandler answers "Expect: 100-continue" itself.
    protocol_version = "HTTP/1.1"
    server_version = "fixture-server/1"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass

    def send_body(self, status, body, content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        if self.path == "/download":
            self.send_body(200, DOWNLOAD)
        else:
            self.send_body(404, b"not found\n")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        route = {
            "/chunked": self.chunked,
            "/slow": self.slow,
            "/empty": self.empty,
            "/etag": self.etag,
            "/download": lambda: self.send_body(200, DOWNLOAD),
            "/gzip": self.gzipped,
            "/close": self.close_delimited,
            "/upgrade": self.upgrade,
        }.get(path)
        if route is None:
            self.send_body(404, b"not found\n")
        else:
            route()

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/upload":
            self.read_body()
            self.send_body(404, b"not found\n")
            return
        body = self.read_body()
        answer = {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        self.send_body(201, json.dumps(answer).encode() + b"\n", "application/json")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0], 16)
                if size == 0:
                    # Trailer section, up to the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def chunked(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "X-Checksum")
        self.end_headers()
        digest = hashlib.sha256()
        for i in range(5):
            chunk = b"chunk %d: " % i + b"x" * (100 * (i + 1)) + b"\n"
            digest.update(chunk)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\nX-Checksum: sha256=%s\r\n\r\n" % digest.hexdigest().encode())

    def slow(self):
        pieces = [b"slow piece %d\n" % i for i in range(3)]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(sum(map(len, pieces))))
        self.end_headers()
        self.wfile.flush()
        for piece in pieces:
            time.sleep(0.3)
            self.wfile.write(piece)
            self.wfile.flush()

    def empty(self):
        self.send_response(204)
        self.end_headers()

    def etag(self):
        if self.headers.get("If-None-Match") == ETAG:
            self.send_response(304)
            self.send_header("ETag", ETAG)
            self.end_headers()
        else:
            self.send_body(200, b"versioned content\n", extra=[("ETag", ETAG)])

    def gzipped(self):
        document = {"items": [{"id": i, "name": "item %d" % i} for i in range(50)]}
        # mtime=0: the same bytes on every run.
        body = gzip.compress(json.dumps(document).encode(), mtime=0)
        self.send_body(200, body, "application/json", [("Content-Encoding", "gzip")])

    def close_delimited(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"this body ends when the connection does\n")
        self.close_connection = True

    def upgrade(self):
        if self.headers.get("Upgrade", "").lower() != "echo":
            self.send_body(426, b"upgrade to echo\n", extra=[("Upgrade", "echo")])
            return
        self.send_response(101)
        self.send_header("Upgrade", "echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        # From here on the connection speaks the echo protocol, not HTTP.
        while True:
            line = self.rfile.readline()
            if not line:
                break
            self.wfile.write(line.upper())
            self.wfile.flush()
        self.close_connection = True


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        # One socket for IPv4 and IPv6.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = DualStackServer(("::", port), Handler)
    print("listening on port %d" % port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

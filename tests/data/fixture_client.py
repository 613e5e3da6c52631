#!/usr/bin/env python3
"""Client half of the capture fixtures' scenario (curl does the rest, see make-fixtures.sh).

Standard library only. Every step checks what came back, so a fixture is never recorded
from a run that went wrong.

    fixture_client.py pipeline  HOST PORT   three requests in one write on one socket
    fixture_client.py keepalive HOST PORT   one connection to fixture_server.py: chunked with
                                            trailer, 204, 200 then 304, HEAD, gzip, a small POST
    fixture_client.py upgrade   HOST PORT   101 Switching Protocols, then non-HTTP echo lines
    fixture_client.py slow      HOST PORT   a response that arrives in pieces
    fixture_client.py close     HOST PORT   a close-delimited response
"""

import gzip
import http.client
import json
import re
import socket
import sys


def fail(message):
    print("fixture_client: " + message, file=sys.stderr)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def connect(host, port):
    return socket.create_connection((host, port), timeout=10)


def read_all(sock):
    data = bytearray()
    while True:
        piece = sock.recv(65536)
        if not piece:
            return bytes(data)
        data += piece


def pipeline(host, port):
    requests = [
        "GET /small.txt HTTP/1.1\r\nHost: fixture\r\nUser-Agent: fixture-pipeline\r\n\r\n",
        "GET /data.json HTTP/1.1\r\nHost: fixture\r\nUser-Agent: fixture-pipeline\r\n\r\n",
        "GET /missing HTTP/1.1\r\nHost: fixture\r\nUser-Agent: fixture-pipeline\r\n"
        "Connection: close\r\n\r\n",
    ]
    with connect(host, port) as sock:
        # All three in one write: they leave in one segment, before any response.
        sock.sendall("".join(requests).encode())
        answer = read_all(sock)
    # Bodies need not end in CRLF, so a status line can follow body bytes on the same "line".
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    expect(statuses == [b"200", b"200", b"404"], "pipeline statuses %r" % statuses)


def keepalive(host, port):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"User-Agent": "fixture-keepalive"}

    def request(method, path, body=None, extra=None):
        conn.request(method, path, body=body, headers={**headers, **(extra or {})})
        response = conn.getresponse()
        data = response.read()
        return response, data

    response, data = request("GET", "/chunked?n=5")
    expect(response.status == 200 and data.count(b"chunk") == 5, "chunked")
    response, _ = request("GET", "/empty")
    expect(response.status == 204, "204")
    response, _ = request("GET", "/etag")
    etag = response.getheader("ETag")
    expect(response.status == 200 and etag, "etag")
    response, _ = request("GET", "/etag", extra={"If-None-Match": etag})
    expect(response.status == 304, "304")
    response, data = request("HEAD", "/download")
    expect(response.status == 200 and data == b"" and response.getheader("Content-Length") == "4096", "HEAD")
    response, data = request("GET", "/gzip", extra={"Accept-Encoding": "gzip"})
    expect(response.getheader("Content-Encoding") == "gzip", "gzip header")
    expect(len(json.loads(gzip.decompress(data))["items"]) == 50, "gzip body")
    body = json.dumps({"user": "alice", "action": "login"}).encode()
    response, data = request("POST", "/upload", body=body, extra={"Content-Type": "application/json"})
    expect(response.status == 201 and json.loads(data)["received"] == len(body), "POST")
    response, _ = request("GET", "/nope")
    expect(response.status == 404, "404")
    conn.close()


def upgrade(host, port):
    with connect(host, port) as sock:
        sock.sendall(
            b"GET /upgrade HTTP/1.1\r\nHost: fixture\r\nUser-Agent: fixture-upgrade\r\n"
            b"Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        )
        head = bytearray()
        while b"\r\n\r\n" not in head:
            piece = sock.recv(1)
            expect(piece, "upgrade: connection closed during the head")
            head += piece
        expect(head.startswith(b"HTTP/1.1 101 "), "upgrade status %r" % bytes(head[:40]))
        # Not HTTP any more: lines that look like requests must not be decoded as such.
        for line in [b"hello echo\n", b"GET /not-http HTTP/1.1\n", b"\x00\x01\x02 binary\n"]:
            sock.sendall(line)
            answer = bytearray()
            while not answer.endswith(b"\n"):
                piece = sock.recv(4096)
                expect(piece, "upgrade: no echo")
                answer += piece
            expect(bytes(answer) == line.upper(), "echo %r" % bytes(answer))
        sock.shutdown(socket.SHUT_WR)
        read_all(sock)


def slow(host, port):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/slow", headers={"User-Agent": "fixture-slow"})
    response = conn.getresponse()
    expect(response.read().count(b"slow piece") == 3, "slow")
    conn.close()


def close(host, port):
    with connect(host, port) as sock:
        sock.sendall(b"GET /close HTTP/1.1\r\nHost: fixture\r\nUser-Agent: fixture-close\r\n\r\n")
        answer = read_all(sock)
    expect(answer.startswith(b"HTTP/1.1 200 ") and b"Content-Length" not in answer, "close")


def main():
    if len(sys.argv) != 4:
        fail("usage: fixture_client.py pipeline|keepalive|upgrade|slow|close HOST PORT")
    step = {"pipeline": pipeline, "keepalive": keepalive, "upgrade": upgrade, "slow": slow, "close": close}.get(sys.argv[1])
    if step is None:
        fail("unknown step " + sys.argv[1])
    step(sys.argv[2], int(sys.argv[3]))


if __name__ == "__main__":
    main()

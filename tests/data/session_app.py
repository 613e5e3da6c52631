#!/usr/bin/env python3
"""A small web app with session cookies, for tests/sessions_live.rs (Python 3 standard library).

Usage: session_app.py ADDRESS PORT

Like many real apps it gives every visitor without a session cookie a new one on the first
response, hands out a new cookie and a token at login, and replaces the cookie on request:

    GET  /page/<who>      HTML that loads /asset/<who>/style.css and /asset/<who>/logo.png;
                          sets `sid` (persistent) when the request carries none
    GET  /asset/<who>/..  small static bodies
    GET  /items/<id>      200 JSON
    POST /login           200 JSON {"token": ...}, Set-Cookie: sid=<new value>
    GET  /refresh         Set-Cookie: sid=<new value> (the old one is replaced)
    anything else         404
"""
import json
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = """<!doctype html><html><head><title>{who}</title>
<link rel="stylesheet" href="/asset/{who}/style.css"></head>
<body><h1 id="who">{who}</h1><img src="/asset/{who}/logo.png" alt="logo"></body></html>
"""
# A 1x1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def new_sid():
    return "sid=" + secrets.token_hex(16) + "; Path=/; Max-Age=3600; HttpOnly"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body, ctype, cookie=None):
        self.send_response(code)
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def has_session(self):
        cookies = self.headers.get("Cookie") or ""
        return any(c.strip().startswith("sid=") for c in cookies.split(";"))

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "page" and len(parts) == 2:
            cookie = None if self.has_session() else new_sid()
            return self.reply(200, PAGE.format(who=parts[1]).encode(), "text/html", cookie)
        if parts[0] == "asset" and parts[-1].endswith(".png"):
            return self.reply(200, PNG, "image/png")
        if parts[0] == "asset":
            return self.reply(200, b"body { color: #333 }", "text/css")
        if parts[0] == "items" and len(parts) == 2:
            return self.reply(200, json.dumps({"id": parts[1]}).encode(), "application/json")
        if parts[0] == "refresh":
            return self.reply(200, b'{"refreshed":true}', "application/json", new_sid())
        return self.reply(404, b'{"error":"not found"}', "application/json")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.split("?")[0] == "/login":
            token = json.dumps({"token": "tok" + secrets.token_hex(12)}).encode()
            return self.reply(200, token, "application/json", new_sid())
        return self.reply(404, b'{"error":"not found"}', "application/json")


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()

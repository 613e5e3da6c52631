#!/usr/bin/env python3
"""A JWT-in-a-cookie app, for tests/frameworks_live.rs (Python 3 standard library).

Usage: jwt_cookie_app.py ADDRESS PORT

Like a SPA backend that keeps its HS256 JWT in an HttpOnly cookie, behind a sticky load
balancer and with analytics:

    every response  Set-Cookie: AWSALB=<one value for every client>; and `_ga` when missing
    GET  /login     the login form, Set-Cookie: csrftoken=<new>
    POST /login     username, password (`pw-<name>`): Set-Cookie: access_token=<JWT, sub=name>
    GET  /me        "user: <name>" when the cookie's JWT verifies, else 401
"""
import base64
import hashlib
import hmac
import json
import secrets
import sys
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

KEY = b"test-only-jwt-key"
USERS = {"alice", "bob"}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue(sub):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "iat": int(time.time()), "jti": secrets.token_hex(8)}).encode())
    sig = b64(hmac.new(KEY, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def verify(token):
    try:
        head, body, sig = token.split(".")
        want = b64(hmac.new(KEY, f"{head}.{body}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, sig):
            return None
        return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["sub"]
    except (ValueError, KeyError):
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def cookies(self):
        jar = SimpleCookie()
        jar.load(self.headers.get("Cookie") or "")
        return {k: v.value for k, v in jar.items()}

    def reply(self, code, text, cookies=()):
        body = text.encode()
        self.send_response(code)
        self.send_header("Set-Cookie", "AWSALB=pool-7f3e; Path=/")
        if "_ga" not in self.cookies():
            self.send_header("Set-Cookie", f"_ga=GA1.1.{secrets.randbelow(10**9)}; Path=/")
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/login":
            return self.reply(200, "<form method=post>", [f"csrftoken={secrets.token_hex(16)}; Path=/"])
        if path == "/me":
            user = verify(self.cookies().get("access_token", ""))
            return self.reply(200, f"user: {user}") if user else self.reply(401, "not logged in")
        return self.reply(404, "not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        name = form.get("username", [""])[0]
        if self.path.split("?")[0] == "/login" and name in USERS and form.get("password", [""])[0] == f"pw-{name}":
            return self.reply(200, "welcome", [f"access_token={issue(name)}; Path=/; HttpOnly; SameSite=Lax"])
        return self.reply(403, "bad credentials")


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()

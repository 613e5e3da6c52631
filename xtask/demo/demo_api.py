#!/usr/bin/env python3
"""The demo API that `cargo xtask demo` captures: a small shop over HTTP/1.1 with JSON bodies.

Standard library only. It serves real keep-alive connections (every response has a
Content-Length), hands out an HS256 JWT and a session cookie at login, and protects the order
endpoints, so that the sensor sees what a real API produces: logins, bearer tokens, cookies,
401s, 404s for unknown ids and paths, 400s for malformed input.

    POST /api/login               {"user", "password"} -> {"token": JWT} + Set-Cookie: sessionid
    GET  /api/users/{id}          public profile (ids 1..40 exist)
    GET  /api/users/{id}/orders   the caller's own orders (admins: anyone's)      [auth]
    GET  /api/products?page=N&q=  ten products a page, optional name filter
    GET  /api/products/{id}       one product (ids 1..50 exist)
    POST /api/orders              {"product_id", "quantity"} -> 201 + the order   [auth]
    GET  /health                  {"status": "ok"}

Auth is `Authorization: Bearer <jwt>`, the `sessionid` cookie, or a partner's `X-API-Key`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Signs the JWTs. Fresh at every start: tokens only need to outlive one demo run.
JWT_SECRET = secrets.token_bytes(32)
TOKEN_LIFETIME_S = 3600

FIRST_NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
LAST_NAMES = ["Smith", "Jones", "Brown", "Lopez"]
PRODUCT_KINDS = ["Mug", "T-Shirt", "Sticker", "Hoodie", "Notebook"]
PRODUCT_ADJECTIVES = ["Classic", "Rusty", "Kernel", "Packet", "Async", "Tracing", "Zero-Copy",
                      "Lock-Free", "Ring", "Verifier"]
PAGE_SIZE = 10
# What a product search may contain; anything else is rejected with 400, as a careful API does.
SEARCH_TERM = re.compile(r"[\w .-]{0,40}")


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    user_id: int
    role: str


# Deterministic data: the same users, products and orders at every start.
USERS = {
    i: {
        "id": i,
        "name": f"{FIRST_NAMES[(i - 1) % 10]} {LAST_NAMES[(i - 1) // 10]}",
        "city": ["Lisbon", "Oslo", "Austin", "Osaka", "Lagos"][i % 5],
        "member_since": f"20{18 + i % 7}-0{1 + i % 9}-1{i % 10}",
    }
    for i in range(1, 41)
}
ACCOUNTS = {
    a.user: a
    for a in [
        Account("alice", "correct-horse", 1, "admin"),
        Account("bob", "hunter2", 2, "customer"),
        Account("carol", "tr0ub4dor&3", 3, "customer"),
    ]
}
PRODUCTS = {
    i: {
        "id": i,
        "name": f"{PRODUCT_ADJECTIVES[i % 10]} {PRODUCT_KINDS[i % 5]}",
        "price_cents": 500 + (i * 731) % 4000,
        "stock": (i * 17) % 60,
    }
    for i in range(1, 51)
}
# A partner's inventory integration calls with this key.
API_KEYS = {"pk_live_7f3a9c2e51d84b06": "partner-inventory-sync"}

ORDERS_LOCK = threading.Lock()
ORDERS: dict[int, list[dict]] = {
    uid: [
        {"id": 1000 + uid * 10 + n, "product_id": 1 + (uid * 7 + n * 3) % 50, "quantity": 1 + n}
        for n in range(uid % 4)
    ]
    for uid in USERS
}
NEXT_ORDER_ID = 5000
# Session cookie value -> account, filled at login.
COOKIE_SESSIONS: dict[str, Account] = {}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(account: Account) -> str:
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": account.user, "uid": account.user_id, "role": account.role,
              "iat": now, "exp": now + TOKEN_LIFETIME_S, "iss": "demo-shop"}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(JWT_SECRET, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def verify_jwt(token: str) -> Account | None:
    """The account a token belongs to, if its signature and expiry hold."""
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        expected = hmac.new(JWT_SECRET, f"{header_b64}.{claims_b64}".encode("ascii"),
                            hashlib.sha256).digest()
        if not hmac.compare_digest(expected, b64url_decode(signature_b64)):
            return None
        if json.loads(b64url_decode(header_b64)).get("alg") != "HS256":
            return None
        claims = json.loads(b64url_decode(claims_b64))
    except (ValueError, UnicodeError):
        return None
    if claims.get("exp", 0) < time.time():
        return None
    return ACCOUNTS.get(claims.get("sub", ""))


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Caller:
    """Who made a request: an account, or a partner with an API key."""
    account: Account | None = None
    partner: str | None = None


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections open between requests; every response sets Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "demo-shop/1.0"
    # Buffer each response and flush it whole (the server flushes after every request), with
    # Nagle off: unbuffered, the body would trail the headers by a delayed ACK (~40 ms).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    sys_version = ""

    def version_string(self) -> str:
        # The Server header, without the Python version the default appends.
        return self.server_version

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    # Other methods get a JSON 405 rather than the library's HTML 501 page.
    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        # Read the body whatever happens, so the next request on the connection starts cleanly.
        body = self.read_body()
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        parts = [p for p in url.path.split("/") if p]
        try:
            status, payload, headers = self.route(method, parts, query, body)
        except ApiError as e:
            status, payload, headers = e.status, {"error": e.message}, {}
        self.send_json(status, payload, headers)

    def route(self, method: str, parts: list[str], query: dict[str, list[str]],
              body: bytes) -> tuple[HTTPStatus, object, dict[str, str]]:
        if method not in ("GET", "POST"):
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")
        match method, parts:
            case "GET", ["health"]:
                return HTTPStatus.OK, {"status": "ok"}, {}
            case "POST", ["api", "login"]:
                return self.login(body)
            case "GET", ["api", "users", user_id]:
                user = USERS.get(parse_id(user_id))
                if user is None:
                    raise ApiError(HTTPStatus.NOT_FOUND, "no such user")
                return HTTPStatus.OK, user, {}
            case "GET", ["api", "users", user_id, "orders"]:
                return self.user_orders(parse_id(user_id))
            case "GET", ["api", "products"]:
                return HTTPStatus.OK, list_products(query), {}
            case "GET", ["api", "products", product_id]:
                product = PRODUCTS.get(parse_id(product_id))
                if product is None:
                    raise ApiError(HTTPStatus.NOT_FOUND, "no such product")
                return HTTPStatus.OK, product, {}
            case "POST", ["api", "orders"]:
                return self.place_order(body)
            case _:
                raise ApiError(HTTPStatus.NOT_FOUND, "no such endpoint")

    def login(self, body: bytes) -> tuple[HTTPStatus, object, dict[str, str]]:
        credentials = parse_json_object(body)
        account = ACCOUNTS.get(str(credentials.get("user", "")))
        password = str(credentials.get("password", ""))
        if account is None or not hmac.compare_digest(account.password, password):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "invalid user or password")
        session_id = secrets.token_urlsafe(24)
        COOKIE_SESSIONS[session_id] = account
        cookie = f"sessionid={session_id}; Path=/; HttpOnly; SameSite=Lax"
        return (HTTPStatus.OK,
                {"token": make_jwt(account), "token_type": "Bearer",
                 "expires_in": TOKEN_LIFETIME_S, "user_id": account.user_id},
                {"Set-Cookie": cookie})

    def user_orders(self, user_id: int) -> tuple[HTTPStatus, object, dict[str, str]]:
        caller = self.authenticate()
        if user_id not in USERS:
            raise ApiError(HTTPStatus.NOT_FOUND, "no such user")
        account = caller.account
        if account is None or (account.user_id != user_id and account.role != "admin"):
            raise ApiError(HTTPStatus.FORBIDDEN, "not your orders")
        with ORDERS_LOCK:
            return HTTPStatus.OK, list(ORDERS[user_id]), {}

    def place_order(self, body: bytes) -> tuple[HTTPStatus, object, dict[str, str]]:
        global NEXT_ORDER_ID
        caller = self.authenticate()
        if caller.account is None:
            raise ApiError(HTTPStatus.FORBIDDEN, "only customers place orders")
        order = parse_json_object(body)
        product_id, quantity = order.get("product_id"), order.get("quantity", 1)
        if product_id not in PRODUCTS or not isinstance(quantity, int) or not 0 < quantity <= 10:
            raise ApiError(HTTPStatus.BAD_REQUEST, "product_id must exist, quantity be 1..10")
        with ORDERS_LOCK:
            placed = {"id": NEXT_ORDER_ID, "product_id": product_id, "quantity": quantity,
                      "total_cents": PRODUCTS[product_id]["price_cents"] * quantity}
            NEXT_ORDER_ID += 1
            ORDERS[caller.account.user_id].append(placed)
        return HTTPStatus.CREATED, placed, {"Location": f"/api/orders/{placed['id']}"}

    def authenticate(self) -> Caller:
        """The caller, from a bearer JWT, the session cookie or an API key; else 401."""
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            account = verify_jwt(authorization.removeprefix("Bearer ").strip())
            if account is not None:
                return Caller(account=account)
        try:
            cookies = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookies = SimpleCookie()
        morsel = cookies.get("sessionid")
        if morsel is not None and morsel.value in COOKIE_SESSIONS:
            return Caller(account=COOKIE_SESSIONS[morsel.value])
        partner = API_KEYS.get(self.headers.get("X-API-Key", ""))
        if partner is not None:
            return Caller(partner=partner)
        raise ApiError(HTTPStatus.UNAUTHORIZED, "authentication required")

    def read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, status: HTTPStatus, payload: object, headers: dict[str, str]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="demo-shop"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # One access-log line per request on stderr (the demo keeps it in target/demo/api.log).
        # `headers` is missing when the request line itself was malformed.
        headers = getattr(self, "headers", None)
        agent = headers.get("User-Agent", "-") if headers else "-"
        sys.stderr.write(f"{self.address_string()} [{self.log_date_time_string()}] "
                         f"{format % args} ua={agent!r}\n")


def parse_id(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise ApiError(HTTPStatus.BAD_REQUEST, "id must be a positive integer")
    return int(text)


def parse_json_object(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeError):
        raise ApiError(HTTPStatus.BAD_REQUEST, "body must be JSON") from None
    if not isinstance(value, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
    return value


def list_products(query: dict[str, list[str]]) -> dict:
    unknown = set(query) - {"page", "q"}
    if unknown:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown parameter {sorted(unknown)[0]!r}")
    page_text = query.get("page", ["1"])[0]
    if not page_text.isdigit() or not 1 <= int(page_text) <= 1000:
        raise ApiError(HTTPStatus.BAD_REQUEST, "page must be 1..1000")
    term = query.get("q", [""])[0]
    if not SEARCH_TERM.fullmatch(term):
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid search term")
    matches = [p for p in PRODUCTS.values() if term.lower() in p["name"].lower()]
    page = int(page_text)
    return {"page": page, "total": len(matches),
            "items": matches[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    print(f"demo API listening on http://{args.bind}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

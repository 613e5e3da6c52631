#!/usr/bin/env python3
"""Simulated users of the demo API, for `cargo xtask demo`.

Standard library only. Each actor is one client with its own User-Agent and one keep-alive
connection (http.client), so that the sensor sees what it would see in production: users who
browse and then log in (a bearer JWT or the session cookie from then on), an anonymous browser,
a scraper walking through user ids, a partner with an API key, an attacker probing with
SQL-injection and path-traversal payloads, and a credential stuffer. The actors run concurrently; the whole run takes a
few seconds.

Every request states the status it expects; the script prints a plan, then one line per actor,
and exits with 1 if any response differed from the expectation or a connection failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import quote, urlencode

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:146.0) Gecko/20100101 Firefox/146.0"
CHROME_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36")
SAFARI_IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
MOBILE_APP = "ShopApp/2.3.1 (iPhone; iOS 17.4; Scale/3.00)"
SCRAPER = "python-requests/2.31.0"
PARTNER = "inventory-sync/1.4 (+partner integration)"
ATTACKER = "sqlmap/1.7.2#stable (https://sqlmap.org)"
BRUTE_FORCER = "python-requests/2.32.3"

PARTNER_API_KEY = "pk_live_7f3a9c2e51d84b06"


@dataclass
class Client:
    """One actor: a keep-alive connection, its identity headers and a tally of what it got."""

    name: str
    user_agent: str
    host: str
    port: int
    # Seconds between requests: people pause, bots do not.
    think_time: tuple[float, float] = (0.0, 0.0)
    headers: dict[str, str] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    surprises: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        # Seeded per actor: the same run every time, apart from thread interleaving.
        self.rng = random.Random(self.name)

    def request(self, method: str, path: str, expect: int,
                body: object | None = None) -> tuple[int, object, http.client.HTTPResponse]:
        """Sends one request on the actor's connection; returns the status and the JSON body."""
        headers = {"User-Agent": self.user_agent, "Accept": "application/json", **self.headers}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        response, data = self._send(method, path, payload, headers)
        self.statuses[response.status] += 1
        if response.status != expect:
            self.surprises.append(f"{method} {path} -> {response.status}, expected {expect}")
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        low, high = self.think_time
        if high > 0:
            time.sleep(self.rng.uniform(low, high))
        return response.status, parsed, response

    def _send(self, method: str, path: str, payload: bytes | None,
              headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        try:
            return self._exchange(method, path, payload, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the idle keep-alive connection: reconnect once, as clients do.
            self.conn.close()
            return self._exchange(method, path, payload, headers)

    def _exchange(self, method: str, path: str, payload: bytes | None,
                  headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        # Read the whole body: the connection is reused for the next request.
        return response, response.read()

    def close(self) -> None:
        self.conn.close()


def login(client: Client, user: str, password: str) -> tuple[str, str]:
    """Logs in; returns the JWT and the session cookie the response handed out."""
    status, body, response = client.request("POST", "/api/login", 200,
                                            body={"user": user, "password": password})
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"{client.name}: login failed with {status}")
    cookies = SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    return body["token"], cookies["sessionid"].value


def browse_products(client: Client, pages: range, details: list[int]) -> None:
    for page in pages:
        client.request("GET", f"/api/products?page={page}", 200)
    for product_id in details:
        client.request("GET", f"/api/products/{product_id}", 200)


def customer(client: Client, user: str, password: str, user_id: int, use_cookie: bool,
             typo_first: bool = False) -> None:
    """Browses anonymously, logs in, then shops with the token or the cookie it got."""
    client.request("GET", "/api/products", 200)
    client.request("GET", "/api/products?" + urlencode({"q": "mug"}), 200)
    client.request("GET", f"/api/products/{user_id * 4}", 200)
    if typo_first:
        client.request("POST", "/api/login", 401, body={"user": user, "password": password[:-1]})
    token, cookie = login(client, user, password)
    if use_cookie:
        client.headers["Cookie"] = f"sessionid={cookie}"
    else:
        client.headers["Authorization"] = f"Bearer {token}"
    client.request("GET", f"/api/users/{user_id}", 200)
    client.request("GET", f"/api/users/{user_id}/orders", 200)
    browse_products(client, range(2, 4), [user_id * 4 + 1, 17, 23])
    client.request("GET", "/api/products?" + urlencode({"q": "hoodie", "page": 1}), 200)
    client.request("POST", "/api/orders", 201, body={"product_id": 17, "quantity": user_id})
    client.request("GET", f"/api/users/{user_id}/orders", 200)


def anonymous_browser(client: Client) -> None:
    """Window-shops without an account, then clicks "my orders" and is asked to log in."""
    client.headers["Referer"] = "http://127.0.0.1:8080/shop"
    browse_products(client, range(1, 6), [3, 8, 21, 42])
    client.request("GET", "/api/products?" + urlencode({"q": "sticker"}), 200)
    client.request("GET", "/api/products/99", 404)
    client.request("GET", "/api/users/7/orders", 401)


def scraper(client: Client) -> None:
    """Enumerates user profiles by id, past the last one (ids 1..40 exist)."""
    for user_id in range(1, 61):
        client.request("GET", f"/api/users/{user_id}", 200 if user_id <= 40 else 404)


def partner(client: Client) -> None:
    """A partner's inventory sync: every product page, then stock of a few products."""
    client.headers["X-API-Key"] = PARTNER_API_KEY
    browse_products(client, range(1, 6), [5, 10, 15, 20, 25])


def attacker(client: Client) -> None:
    """Probes the API with SQL-injection and path-traversal payloads, and guesses logins."""
    injections = [
        "' OR 1=1--",
        "' UNION SELECT username, password FROM users--",
        "mug'; DROP TABLE orders;--",
        "1) AND SLEEP(5)--",
    ]
    for term in injections:
        client.request("GET", "/api/products?" + urlencode({"q": term}), 400)
    client.request("GET", "/api/products?" + urlencode({"page": "1 AND 1=1"}), 400)
    client.request("GET", "/api/users/" + quote("1' OR '1'='1", safe=""), 400)
    client.request("GET", "/api/products?" + urlencode({"file": "../../../../etc/passwd"}), 400)
    client.request("GET", "/api/products/" + quote("../../../etc/passwd", safe=""), 400)
    client.request("GET", "/static/../../../../etc/passwd", 404)
    client.request("GET", "/.env", 404)
    client.request("GET", "/api/users/1/orders?" + urlencode({"sort": "id;SELECT pg_sleep(5)"}),
                   401)
    for user, password in [("admin", "admin"), ("admin' --", "x"), ("alice", "' OR ''='")]:
        client.request("POST", "/api/login", 401, body={"user": user, "password": password})


def brute_forcer(client: Client) -> None:
    """Credential stuffing: one common password tried against many user names."""
    first = ["james", "mary", "robert", "linda", "david", "susan", "john", "karen", "paul", "lisa"]
    for n, name in enumerate(f"{f}.{last}" for last in ("smith", "jones", "brown") for f in first):
        client.request("POST", "/api/login", 401,
                       body={"user": name, "password": ["123456", "password", "qwerty"][n % 3]})


@dataclass
class Actor:
    name: str
    identity: str
    plan: str
    user_agent: str
    think_time: tuple[float, float]
    run: Callable[[Client], None]


def actors() -> list[Actor]:
    return [
        Actor("alice", "bearer JWT (admin)", "browses, logs in, shops, places an order",
              FIREFOX, (0.05, 0.25),
              lambda c: customer(c, "alice", "correct-horse", 1, use_cookie=False)),
        Actor("bob", "bearer JWT", "mistypes his password, logs in from the app, shops",
              MOBILE_APP, (0.05, 0.25),
              lambda c: customer(c, "bob", "hunter2", 2, use_cookie=False, typo_first=True)),
        Actor("carol", "session cookie", "browses, logs in, shops with the sessionid cookie",
              CHROME_MAC, (0.05, 0.25),
              lambda c: customer(c, "carol", "tr0ub4dor&3", 3, use_cookie=True)),
        Actor("visitor", "none (browser)", "window-shops, hits a 404 and a 401",
              SAFARI_IPAD, (0.05, 0.2), anonymous_browser),
        Actor("scraper", "none (bot)", "walks /api/users/1..60 as fast as it can",
              SCRAPER, (0.0, 0.0), scraper),
        Actor("partner", "X-API-Key", "syncs the product catalogue",
              PARTNER, (0.02, 0.08), partner),
        Actor("attacker", "none (scanner)", "SQL injection, path traversal, login guessing",
              ATTACKER, (0.02, 0.1), attacker),
        Actor("stuffer", "none (bot)", "30 failed logins with 30 user names",
              BRUTE_FORCER, (0.01, 0.03), brute_forcer),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="Simulated users of the demo API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()

    cast = actors()
    print("   plan:")
    for actor in cast:
        print(f"     {actor.name:<9} {actor.identity:<19} {actor.plan}")
    sys.stdout.flush()

    clients = [Client(a.name, a.user_agent, args.host, args.port, a.think_time) for a in cast]
    failures: dict[str, str] = {}

    def play(actor: Actor, client: Client) -> None:
        try:
            actor.run(client)
        except (OSError, http.client.HTTPException, RuntimeError, KeyError) as e:
            failures[actor.name] = f"{type(e).__name__}: {e}"
        finally:
            client.close()

    started = time.monotonic()
    threads = []
    for actor, client in zip(cast, clients):
        # Daemon threads: Ctrl-C ends the run instead of waiting for every actor to finish.
        thread = threading.Thread(target=play, args=(actor, client), name=actor.name,
                                  daemon=True)
        thread.start()
        threads.append(thread)
        # Staggered starts, as real visitors arrive one after the other.
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    print(f"   done in {elapsed:.1f} s:")
    total = 0
    for actor, client in zip(cast, clients):
        count = sum(client.statuses.values())
        total += count
        tally = " ".join(f"{status}x{n}" for status, n in sorted(client.statuses.items()))
        print(f"     {actor.name:<9} {count:>3} requests  {tally}")
    print(f"     {'total':<9} {total:>3} requests")

    ok = True
    for actor, client in zip(cast, clients):
        for surprise in client.surprises:
            print(f"   unexpected: {actor.name}: {surprise}", file=sys.stderr)
            ok = False
        if actor.name in failures:
            print(f"   failed: {actor.name}: {failures[actor.name]}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

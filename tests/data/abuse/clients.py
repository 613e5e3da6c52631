#!/usr/bin/env python3
"""Real clients for tests/abuse_live.rs against the demo API (xtask/demo/demo_api.py).

Usage: clients.py HOST PORT ROTATE_ADDRESSES
  scraper   GET /api/users/1..80 back to back (ids above 40 are 404)
  stuffer   40 POST /api/login, 40 user names, all 401
  crawler   40 distinct paths, 30 of them unknown (404)
  rotator   logs in as alice, then 8 requests with her token, each from another source address
  bob,carol log in, then 12 varied requests with pauses of 0.3-0.9 s
Each client has its own User-Agent and keep-alive connection. Prints one JSON object:
{client: {"user_agent", "statuses": {code: n}}}.
"""
import collections
import http.client
import json
import random
import sys
import threading
import time

HOST, PORT = sys.argv[1], int(sys.argv[2])
ROTATE = sys.argv[3].split(",")
AGENTS = {
    "scraper": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36",
    "stuffer": "python-requests/2.32.3",
    "crawler": "Go-http-client/1.1",
    "rotator": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/19.1 Safari/605.1.15",
    "bob": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/151.0.0.0 Safari/537.36",
    "carol": "Mozilla/5.0 (X11; Linux x86_64; rv:151.0) Gecko/20100101 Firefox/151.0",
}
PASSWORDS = {"alice": "correct-horse", "bob": "hunter2", "carol": "tr0ub4dor&3"}
results = {name: {"user_agent": agent, "statuses": collections.Counter()} for name, agent in AGENTS.items()}
lock = threading.Lock()


class Client:
    def __init__(self, name, source=None):
        self.name = name
        self.source = source
        self.token = None
        self.conn = self.connect()

    def connect(self):
        source = (self.source, 0) if self.source else None
        return http.client.HTTPConnection(HOST, PORT, timeout=10, source_address=source)

    def call(self, method, path, body=None):
        headers = {"User-Agent": AGENTS[self.name], "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        with lock:
            results[self.name]["statuses"][str(response.status)] += 1
        return response.status, raw

    def login(self, user):
        status, raw = self.call("POST", "/api/login", {"user": user, "password": PASSWORDS[user]})
        assert status == 200, f"{self.name}: login as {user} answered {status}"
        self.token = json.loads(raw)["token"]


def scraper():
    c = Client("scraper")
    for i in range(1, 81):
        c.call("GET", f"/api/users/{i}")


def stuffer():
    c = Client("stuffer")
    for i in range(40):
        c.call("POST", "/api/login", {"user": f"user{i:02}@example.com", "password": "123456"})


def crawler():
    c = Client("crawler")
    known = ["/health", "/api/products", "/api/products?page=2", "/api/products/5", "/api/users/3",
             "/api/products/6", "/api/products?q=mug", "/api/users/4", "/api/products/7", "/api/users/5"]
    for path in known + [f"/api/area{i}" for i in range(30)]:
        c.call("GET", path)


def rotator():
    c = Client("rotator", ROTATE[0])
    c.login("alice")
    for source in ROTATE:
        # A new connection from another address, the same token.
        c.conn.close()
        c.source = source
        c.conn = c.connect()
        c.call("GET", "/api/users/1/orders")


def person(name, seed):
    rng = random.Random(seed)
    c = Client(name)
    c.login(name)
    user_id = {"bob": 2, "carol": 3}[name]
    routes = ["/api/products", "/api/products?page=2", f"/api/products/{user_id * 4}",
              f"/api/users/{user_id}", f"/api/users/{user_id}/orders", "/api/products?q=mug",
              "/api/products/17", "/api/products?page=3", f"/api/users/{user_id}/orders",
              "/api/products/21", "/api/products?q=hoodie", "/health"]
    for path in routes:
        time.sleep(rng.uniform(0.3, 0.9))
        c.call("GET", path)


threads = [threading.Thread(target=f) for f in (scraper, stuffer, crawler, rotator)]
threads += [threading.Thread(target=person, args=(n, s)) for n, s in (("bob", 1), ("carol", 2))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({name: {"user_agent": r["user_agent"], "statuses": dict(r["statuses"])}
                  for name, r in results.items()}))

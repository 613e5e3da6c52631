#!/usr/bin/env python3
"""A deliberately SQL-injectable HTTP endpoint for the attack-detection tests (never deploy).

GET /items?id=N       numeric context:  SELECT id, name FROM items WHERE id = <id>
GET /users?name=S     string context:   SELECT id, name FROM users WHERE name = '<name>'
GET /health           200, for readiness checks

Errors of the database are returned in the page (sqlmap's error-based technique reads them).
Usage: injectable_app.py HOST PORT
"""
import http.server
import sqlite3
import sys
import urllib.parse

DB = sqlite3.connect(":memory:", check_same_thread=False)
DB.executescript(
    """
    CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
    CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, password TEXT);
    INSERT INTO items VALUES (1, 'widget'), (2, 'gadget'), (3, 'doohickey');
    INSERT INTO users VALUES (1, 'alice', 'secret1'), (2, 'bob', 'secret2');
    """
)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if url.path == "/health":
            return self.reply(200, "ok")
        if url.path == "/items":
            query = "SELECT id, name FROM items WHERE id = " + params.get("id", ["1"])[0]
        elif url.path == "/users":
            query = "SELECT id, name FROM users WHERE name = '" + params.get("name", [""])[0] + "'"
        else:
            return self.reply(404, "not found")
        try:
            rows = DB.execute(query).fetchall()
        except Exception as error:  # the point of the app: show the database's error
            return self.reply(500, "error: %s" % error)
        return self.reply(200, "".join("<li>%s %s</li>" % row for row in rows))

    def reply(self, status, text):
        body = ("<html><body><ul>%s</ul></body></html>" % text).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # sqlmap drops connections it has read enough of: not worth a traceback.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


Server((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()

#!/usr/bin/env python3
"""A Flask app with Flask-Login, for tests/frameworks_live.rs (Flask and Flask-Login from PyPI).

Usage: flask_app.py ADDRESS PORT

    GET  /login   the login form
    POST /login   username, password (`pw-<name>`): login_user(remember=True), which sets the
                  signed `session` cookie and Flask-Login's `remember_token`
    GET  /me      "user: <name>" when logged in, else 401
"""
import sys

from flask import Flask, request
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user

app = Flask(__name__)
app.secret_key = "test-only-" + "y" * 40
login_manager = LoginManager(app)


class User(UserMixin):
    def __init__(self, name):
        self.id = name


USERS = {"alice", "bob"}


@login_manager.user_loader
def load_user(user_id):
    return User(user_id) if user_id in USERS else None


@login_manager.unauthorized_handler
def unauthorized():
    return "not logged in", 401


@app.get("/login")
def login_form():
    return '<form method="post"><input name="username"><input name="password"></form>'


@app.post("/login")
def login():
    name = request.form.get("username", "")
    if name in USERS and request.form.get("password") == f"pw-{name}":
        login_user(User(name), remember=True)
        return "welcome"
    return "bad credentials", 403


@app.get("/me")
@login_required
def me():
    return f"user: {current_user.id}"


if __name__ == "__main__":
    app.run(host=sys.argv[1], port=int(sys.argv[2]), threaded=True)

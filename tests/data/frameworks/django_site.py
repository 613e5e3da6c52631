#!/usr/bin/env python3
"""A Django site with the admin, for tests/frameworks_live.rs (Django from PyPI).

Usage: django_site.py ADDRESS PORT WORKDIR

Creates its SQLite database in WORKDIR, the staff users alice and bob (password `pw-<name>`),
and serves the admin with Django's own server. Users log in at /admin/login/ (CSRF cookie and
form field, then the `sessionid` cookie) and see /admin/ ("Welcome, <name>").
"""
import os
import sys

import django
from django.conf import settings

address, port, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="test-only-" + "x" * 40,
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
    ],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(workdir, "db.sqlite3"),
        }
    },
    STATIC_URL="/static/",
    USE_TZ=True,
)
django.setup()

from django.contrib import admin  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.urls import path  # noqa: E402

urlpatterns = [path("admin/", admin.site.urls)]

if __name__ == "__main__":
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import User

    for name in ("alice", "bob"):
        if not User.objects.filter(username=name).exists():
            User.objects.create_superuser(name, f"{name}@example.test", f"pw-{name}")
    call_command("runserver", f"{address}:{port}", use_reloader=False, verbosity=0)

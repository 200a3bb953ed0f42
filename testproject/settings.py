"""Settings of the demo project.

Environment:

- ``NATS_URL``: NATS server(s) for the channel layer, comma-separated
  (default ``nats://127.0.0.1:4222``; the launcher sets it).
- ``NATS_PREFIX``: subject prefix of the channel layer (default ``demo``).
- ``DEMO_DB``: path of the SQLite database (default ``testproject/db.sqlite3``).
- ``DEMO_SERVER_NAME``: label of this process shown on every page and in every
  message it relays (the launcher sets ``daphne #1 :8001`` and so on).
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG`` (``1``/``0``, default ``1``).

This is a local demo: loopback hosts only, a well-known default secret key.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "channels-nats-demo-not-secret-do-not-deploy"
)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    # daphne first: its runserver replaces Django's, so
    # ``manage.py runserver`` serves WebSockets too.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # ``manage.py check`` validates CHANNEL_LAYERS (channels_nats.E001).
    "channels_nats",
    # Presence: the admin page "Presence > Roster", ``manage.py presence``
    # and its system checks (the API itself needs no app).
    "channels_nats.presence",
    "testproject.chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "testproject.chat.views.demo_context",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", str(BASE_DIR / "db.sqlite3")),
        # Two daphne processes share the file: wait for a lock instead of
        # failing with "database is locked".
        "OPTIONS": {"timeout": 20},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "lobby"
LOGOUT_REDIRECT_URL = "lobby"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_nats.NatsChannelLayer",
        "CONFIG": {
            "servers": [
                url.strip()
                for url in os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(
                    ","
                )
                if url.strip()
            ],
            "prefix": os.environ.get("NATS_PREFIX", "demo"),
        },
    }
}

DEMO_SERVER_NAME = os.environ.get("DEMO_SERVER_NAME", f"pid {os.getpid()}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"channels_nats": {"handlers": ["console"], "level": "INFO"}},
}

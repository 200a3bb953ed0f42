"""Minimal Django settings for pytest-django.

Tests build their channel layers themselves, so CHANNEL_LAYERS is empty.
"""

SECRET_KEY = "channels-nats-tests-not-secret"
DEBUG = False
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "channels_nats",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS: dict[str, dict[str, object]] = {}

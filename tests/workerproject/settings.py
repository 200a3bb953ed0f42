"""Settings of the project that test_runworker.py runs ``manage.py runworker`` in.

``CHANNEL_LAYERS`` comes from the environment variable of the same name (JSON),
so the test decides which server and prefix the worker uses.
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "runworker-tests"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["channels", "channels_nats"]
DATABASES: dict[str, object] = {}
ASGI_APPLICATION = "tests.workerproject.asgi.application"
CHANNEL_LAYERS = json.loads(os.environ["CHANNEL_LAYERS"])

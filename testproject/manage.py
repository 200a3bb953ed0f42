#!/usr/bin/env python
"""Django's command-line utility for the demo project (``testproject``)."""

import os
import sys
from pathlib import Path


def main() -> None:
    # The project package is ``testproject``: make its parent importable
    # whatever the current directory is.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

"""The channels_nats demo: a small Django chat served by two daphne processes.

``python -m testproject`` (see :mod:`testproject.demo`) sets everything up and
runs it. Importing this package needs nothing beyond the standard library, so
the launcher can start from a bare Python before the demo's venv exists.
"""

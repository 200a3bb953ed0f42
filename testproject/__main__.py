"""``python -m testproject``: run the demo (see :mod:`testproject.demo`)."""

from testproject.demo import main

raise SystemExit(main())

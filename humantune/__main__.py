"""``python -m humantune`` is the ``humantune`` command."""

import sys

from humantune.cli import main

sys.exit(main())

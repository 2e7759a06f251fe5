"""``python -m humantune`` is the ``humantune`` command."""

import sys

from humantune.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m kerasurgery ...``: the `kerasurgery` command, when its script is not on PATH."""

from __future__ import annotations

import sys

from kerasurgery.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

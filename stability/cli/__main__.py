"""``python -m stability.cli``: the same as ``stability``."""

import sys

from stability.cli import main

sys.exit(main())

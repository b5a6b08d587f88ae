"""``python -m stability``: the same as the ``stability`` console script."""

import sys

from stability.cli import main

sys.exit(main())

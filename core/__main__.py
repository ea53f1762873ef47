"""``python -m poolwarden``: the command line."""

import sys

from poolwarden.cli import main

sys.exit(main())

"""``python -m hte``: see :mod:`hte.cli`."""

import sys

from hte.cli import main

sys.exit(main())

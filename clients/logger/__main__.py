"""``python -m clients.logger``: the same as ``ddslogger``."""

import sys

from .cli import main

sys.exit(main())

"""``python -m clients.job``: the same as ``ddsjob``."""

from .cli import main

main()

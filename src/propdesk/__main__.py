"""``python -m propdesk``: the same as the ``propdesk`` command."""

from .cli import main

main()

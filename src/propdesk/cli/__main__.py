"""``python -m propdesk.cli``: the same as the ``propdesk`` command."""

from . import main

main()

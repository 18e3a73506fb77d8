"""``python -m edgekit`` is the ``edgekit`` command."""
from .cli import main

main()

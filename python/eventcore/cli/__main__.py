"""``python -m eventcore.cli``."""

from eventcore.cli import main

main()

"""``python -m gnsm``: the ``gnsm`` command line."""
import sys

from .cli import main

sys.exit(main())

"""`python -m service --bundle bundles/tweets`: see service/cli.py."""

import sys

from .cli import main

sys.exit(main())

"""``python -m sagerl``: see :mod:`sagerl.cli`."""

import sys

from sagerl.cli import main

sys.exit(main())

"""``python -m hvae_detect``: the ``hvae-detect`` command line."""

import sys

from hvae_detect.cli import main

sys.exit(main())

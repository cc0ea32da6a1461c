"""`python -m ulvideo ...` (and `accelerate launch -m ulvideo eval k600 ...`): the `ulvideo` CLI."""

import sys

from .cli import main

sys.exit(main())

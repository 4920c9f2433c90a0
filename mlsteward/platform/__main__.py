"""``python -m mlsteward.platform up|down|status`` (what `make up`, `make down` and `make status`
run)."""

import sys

from mlsteward.platform.command import main

sys.exit(main())

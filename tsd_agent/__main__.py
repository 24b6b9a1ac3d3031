"""``python -m tsd_agent``: the same as the ``tsd-agent`` console script."""

import sys

from tsd_agent.cli import main

sys.exit(main())

"""``python -m examples.telephony_flow.cluster``: the cluster mode on its own (see :mod:`.cli`)."""

import sys

from .cli import main

sys.exit(main())

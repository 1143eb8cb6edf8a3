"""``python -m src_core.cli``: the ``dip`` command."""

import sys

from . import main

sys.exit(main())

"""``python -m memit`` is the ``memit`` command, for environments where the script is not on PATH."""

import sys

from memit.cli import main

sys.exit(main())

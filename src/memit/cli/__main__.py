"""``python -m memit.cli``, as torchrun runs it."""

import sys

from memit.cli import main

sys.exit(main())

"""``python -m training_cluster.cli``."""

import sys

from . import main

sys.exit(main())

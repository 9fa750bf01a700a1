"""``python -m ClaraAWSLib.cli`` runs the ``clara-aws`` command line."""

import sys

from .commands import main

sys.exit(main())

"""``python -m zsad`` runs the command line."""

import sys

from zsad.cli import main

sys.exit(main())

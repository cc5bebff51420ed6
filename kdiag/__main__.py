"""``python -m kdiag`` runs the CLI."""

import sys

from kdiag.cli import main

sys.exit(main())

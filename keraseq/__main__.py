"""`python -m keraseq` runs the command line."""

import sys

from keraseq.cli import main

sys.exit(main())

"""``python -m terramask`` runs the CLI."""

import sys

from terramask.cli.main import main

sys.exit(main())

"""``python -m styletrain`` runs the CLI."""

import sys

from styletrain.cli import main

sys.exit(main())

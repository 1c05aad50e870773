"""``python -m styletrain`` is the ``styletrain`` command (for machines where the script is not on PATH)."""

import sys

from styletrain.cli import main

sys.exit(main())

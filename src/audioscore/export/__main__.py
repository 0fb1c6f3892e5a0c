"""`python -m audioscore.export RUN_DIR [--ckpt best|last|PATH] [--out DIR]`."""

import sys

from audioscore.export.cli import main

sys.exit(main())

"""`python -m dexrl ...` and `torchrun ... -m dexrl train ...`."""

import sys

from dexrl.cli import main

sys.exit(main())

"""dexrl: end-to-end RL for vision-based dexterous grasping, with disaggregated simulation."""

import os
from pathlib import Path

# Warp compiles kernels on first use (75 s on a 2-core CPU); keep them in one stable place so tests,
# CI and later runs reuse them. WARP_CACHE_PATH overrides.
os.environ.setdefault("WARP_CACHE_PATH", str(Path.home() / ".cache" / "dexrl" / "warp"))

__version__ = "0.1.0"

#!/usr/bin/env bash
# On the lent GPU machine, after .dev/a and .dev/b arrived (two calls, see docs/gpu.md):
# installs into /tmp/site; then `export PYTHONPATH=/tmp/site:$PWD` (checks.sh does).
set -euo pipefail
for part in .dev/a/warp.so.xz.0 .dev/b/warp.so.xz.1 .dev/b/warp-clang.so.xz; do
  # A machine given back between the two calls comes back bare: .dev/a is gone with it.
  test -f "$part" || { echo "install.sh: $part is missing: carry .dev/a, then .dev/b in the call right after (docs/gpu.md)"; exit 2; }
done
mkdir -p /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/a/*.whl
python3 -c "import tarfile; tarfile.open('.dev/a/warp-tree.tar.xz').extractall('/tmp/site')"
python3 -c "
import lzma, pathlib
data = pathlib.Path('.dev/a/warp.so.xz.0').read_bytes() + pathlib.Path('.dev/b/warp.so.xz.1').read_bytes()
pathlib.Path('/tmp/site/warp/bin/warp.so').write_bytes(lzma.decompress(data))
pathlib.Path('/tmp/site/warp/bin/warp-clang.so').write_bytes(lzma.decompress(pathlib.Path('.dev/b/warp-clang.so.xz').read_bytes()))
"
# Warp without a CUDA device (a driver older than its wheel's toolkit) would only warn, and
# every stage would then stop at its first --device cuda.
PYTHONPATH=/tmp/site:$PWD python3 -c "
import warp, mujoco, mujoco_warp, dexrl
warp.init()
assert warp.get_cuda_device_count() > 0, 'Warp sees no CUDA device (driver too old for this warp-lang wheel?)'
print('device ready: warp', warp.config.version, 'mujoco', mujoco.__version__, 'cpu device:', warp.is_cpu_available())
"

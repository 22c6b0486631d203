#!/usr/bin/env bash
# Packs what a lent GPU machine lacks (mujoco, mujoco-warp, warp-lang; python 3.12 there) into
# two folders of under 60 MiB each, because one device call carries at most 64 MiB and
# warp-lang's wheel is 149 MB. Run here, in the repo root; then see docs/gpu.md.
#   .dev/a  the small wheels, warp-lang without its binaries (tar.xz), and warp.so (xz) part 0
#   .dev/b  warp.so (xz) part 1
#   .dev/c  warp-clang.so (xz), Warp's CPU compiler: on CUDA Warp compiles with NVRTC and
#           runs without it (no "cpu" device then); carry it in a third call if something
#           needs Warp's CPU device there.
set -euo pipefail
WARP=${WARP:-1.19.0}
MJ=${MJ:-4.0.0}
rm -rf .dev && mkdir -p .dev/a .dev/b .dev/c .dev/tmp
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .dev/tmp \
  "mujoco==$MJ" "mujoco-core==$MJ" "mujoco-studio==$MJ" "mujoco-warp==$MJ" "warp-lang==$WARP" glfw pyopengl
mv .dev/tmp/mujoco*.whl .dev/tmp/glfw*.whl .dev/tmp/pyopengl*.whl .dev/a/
mkdir -p .dev/tmp/tree && (cd .dev/tmp/tree && python3 -m zipfile -e ../warp_lang-*.whl .)
rm -rf .dev/tmp/tree/warp/examples
xz -T2 -6 -c .dev/tmp/tree/warp/bin/warp-clang.so > .dev/c/warp-clang.so.xz && rm .dev/tmp/tree/warp/bin/warp-clang.so
python3 - <<'PY'
import lzma, pathlib
so = pathlib.Path(".dev/tmp/tree/warp/bin/warp.so")
packed = lzma.compress(so.read_bytes(), preset=6)
so.unlink()
half = 24 * 2**20  # part 0 shares .dev/a with ~33 MB of wheels and the tree
pathlib.Path(".dev/a/warp.so.xz.0").write_bytes(packed[:half])
pathlib.Path(".dev/b/warp.so.xz.1").write_bytes(packed[half:])
PY
tar -cJf .dev/a/warp-tree.tar.xz -C .dev/tmp/tree .
rm -rf .dev/tmp
du -sh .dev/a .dev/b .dev/c

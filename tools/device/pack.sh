#!/usr/bin/env bash
# Packs what a lent GPU machine lacks (mujoco, mujoco-warp, warp-lang; python 3.12 there) into
# two folders of about 56 MiB each, because one device call carries at most 64 MiB (the working
# tree, about 1 MiB, included) and warp-lang's wheel is 149 MB. Run here, in the repo root; then
# see docs/gpu.md.
#   .dev/a  the small wheels, warp-lang without its binaries (tar.xz), and warp.so (xz) part 0
#   .dev/b  warp.so (xz) part 1, and warp-clang.so (xz): Warp's CPU compiler, which the tests
#           need (they simulate on the CPU) and the benchmarks do not
# mujoco-studio (MuJoCo's renderers, 13 MB) stays behind: `import mujoco` goes on without it
# and dexrl renders with MuJoCo Warp.
set -euo pipefail
WARP=${WARP:-1.19.0}
MJ=${MJ:-4.0.0}
rm -rf .dev && mkdir -p .dev/a .dev/b .dev/tmp
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .dev/tmp \
  "mujoco==$MJ" "mujoco-core==$MJ" "mujoco-warp==$MJ" "warp-lang==$WARP" glfw pyopengl
mv .dev/tmp/mujoco*.whl .dev/tmp/glfw*.whl .dev/tmp/pyopengl*.whl .dev/a/
mkdir -p .dev/tmp/tree && (cd .dev/tmp/tree && python3 -m zipfile -e ../warp_lang-*.whl .)
rm -rf .dev/tmp/tree/warp/examples
xz -T2 -6 -c .dev/tmp/tree/warp/bin/warp-clang.so > .dev/b/warp-clang.so.xz && rm .dev/tmp/tree/warp/bin/warp-clang.so
xz -T2 -6 -c .dev/tmp/tree/warp/bin/warp.so > .dev/tmp/warp.so.xz && rm .dev/tmp/tree/warp/bin/warp.so
tar -cJf .dev/a/warp-tree.tar.xz -C .dev/tmp/tree .
python3 - <<'PY'
# Cut warp.so.xz so that the two folders weigh the same.
import pathlib
size = lambda d: sum(p.stat().st_size for p in pathlib.Path(d).iterdir())
packed = pathlib.Path(".dev/tmp/warp.so.xz").read_bytes()
cut = (size(".dev/b") + len(packed) - size(".dev/a")) // 2
pathlib.Path(".dev/a/warp.so.xz.0").write_bytes(packed[:cut])
pathlib.Path(".dev/b/warp.so.xz.1").write_bytes(packed[cut:])
for d in (".dev/a", ".dev/b"):
    assert size(d) < 62 * 2**20, f"{d} is {size(d) / 2**20:.1f} MiB: over what one device call carries"
PY
rm -rf .dev/tmp
du -sh .dev/a .dev/b

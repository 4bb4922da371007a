#!/usr/bin/env bash
# Build .whl/a and .whl/b for bench/gpu_setup.sh on a machine with internet (the GPU machine has
# none): the Python 3.12 wheels it installs, with mlx_cuda_13 split in two so that each call's
# carry stays under 64 MiB.   bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl/a .whl/b .whl/dl
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl/dl \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any "$@"
}
dl moshi==0.2.13 pydantic==2.14.4 pydantic_core==2.50.5 annotated_types typing_inspection soxr==0.5.0.post1 pyloudnorm \
  soundfile cffi pycparser pytest pluggy iniconfig packaging pygments mlx==0.32.4 mlx_cuda_13==0.32.4
cuda=.whl/dl/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
echo "94cb48fba73e5ee39467e51c35c51c691123359ca17bafd1a24cf92ad6732bee  $cuda" | sha256sum -c -
split -b 45M "$cuda" .whl/dl/mlx_cuda_13.part-
mv .whl/dl/mlx_cuda_13.part-ab .whl/b/
rm "$cuda"
mv .whl/dl/* .whl/a/
rmdir .whl/dl
du -sh .whl/a .whl/b

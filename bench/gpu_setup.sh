# Source this on the lent GPU machine (bash): installs the carried wheels into /tmp/site (build
# .whl/a and .whl/b here first: bash bench/gpu_wheels.sh).
# Call 1 carries .whl/a (small wheels + first half of mlx_cuda_13); call 2 carries .whl/b (second
# half). The small wheels in .whl/a: moshi, pydantic (+ pydantic_core, annotated_types,
# typing_inspection), soxr, pyloudnorm, soundfile (the manylinux_2_28 wheel: it bundles libsndfile
# but imports _cffi_backend) and so cffi and pycparser; pytest (+ pluggy, iniconfig, packaging,
# pygments) for the `gpu` tests. Both halves are kept in /tmp/wheels while
# the machine stays warm; once both are there the wheel is reassembled, checked against its sha256
# and installed with the image's nvidia libraries.
set -e
mkdir -p /tmp/wheels
for d in .whl/a .whl/b; do [ -d "$d" ] && cp -n "$d"/* /tmp/wheels/ 2>/dev/null || true; done
export NO_TORCH_COMPILE=1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
W=/tmp/wheels
CUDA_WHL=$W/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
if [ ! -f /tmp/site/.done-small ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    $W/moshi-*.whl $W/pydantic-*.whl $W/pydantic_core-*.whl $W/annotated_types-*.whl \
    $W/typing_inspection-*.whl $W/soxr-*.whl $W/soundfile-*.whl $W/pyloudnorm-*.whl \
    $W/cffi-*.whl $W/pycparser-*.whl $W/pytest-*.whl $W/pluggy-*.whl $W/iniconfig-*.whl \
    $W/packaging-*.whl $W/pygments-*.whl
  touch /tmp/site/.done-small
fi
if [ ! -f /tmp/site/.done-mlx ] && [ -f $W/mlx_cuda_13.part-aa ] && [ -f $W/mlx_cuda_13.part-ab ]; then
  cat $W/mlx_cuda_13.part-aa $W/mlx_cuda_13.part-ab > $CUDA_WHL
  echo "94cb48fba73e5ee39467e51c35c51c691123359ca17bafd1a24cf92ad6732bee  $CUDA_WHL" | sha256sum -c
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    $W/mlx-0.32.4-*.whl $CUDA_WHL
  ln -sfn "$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')" /tmp/site/nvidia
  touch /tmp/site/.done-mlx
fi
export PYTHONPATH=/tmp/site:$PWD
# MLX's NVRTC output (PTX) and the driver's compiled kernels, kept across leases: a run ends with
# `tar czf $OUT/gpu_cache.tgz -C .cache gpu`, the file is copied to .cache/gpu_cache.tgz here and
# carried with `.cache/gpu_cache.tgz` (saves the first-step JIT, minutes on a fresh machine).
mkdir -p .cache/gpu/ptx .cache/gpu/nv
[ -f .cache/gpu_cache.tgz ] && [ ! -f .cache/gpu/.unpacked ] && tar xzf .cache/gpu_cache.tgz -C .cache && touch .cache/gpu/.unpacked
export MLX_PTX_CACHE_DIR=$PWD/.cache/gpu/ptx CUDA_CACHE_PATH=$PWD/.cache/gpu/nv CUDA_CACHE_MAXSIZE=4294967296
set +e

# Sourced by the scripts: CUDA on PATH when installed, parallelism, build folders.
if [ -d /usr/local/cuda/bin ] && ! command -v nvcc >/dev/null 2>&1; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
export LONGNET_JOBS="${LONGNET_JOBS:-$(nproc)}"
export LONGNET_BUILD_DIR="${LONGNET_BUILD_DIR:-build}"
# mpirun refuses root unless told; CI and the GPU machines run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

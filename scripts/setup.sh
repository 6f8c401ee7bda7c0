#!/usr/bin/env bash
# Installs what libtesseraq needs on a fresh Debian machine with Swift: libomp (OpenMP
# runtime and header) and the Python packages of the bindings, tests and scripts. Idempotent.
# --mpi also installs Open MPI (mpirun and libmpi.so.40, which the library loads at run time under
# mpirun: README, Tensor parallelism). Nothing is compiled against it.
set -euo pipefail
PACKAGES=()
if [ ! -e /usr/lib/llvm-14/lib/clang/14.0.6/include/omp.h ] || [ ! -e /usr/lib/x86_64-linux-gnu/libomp.so.5 ]; then
  PACKAGES+=(libomp-dev)
fi
if [ "${1:-}" = "--mpi" ] && { ! command -v mpirun >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/libmpi.so.40 ]; }; then
  PACKAGES+=(openmpi-bin libopenmpi-dev)
fi
if [ ${#PACKAGES[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi
python3 -c "import numpy, pytest, tqdm, tokenizers" 2>/dev/null || python3 -m pip install -q numpy pytest tqdm tokenizers

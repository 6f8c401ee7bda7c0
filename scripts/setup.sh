#!/usr/bin/env bash
# Installs what libtesseraq needs on a fresh Debian machine with Swift: libomp (OpenMP
# runtime and header) and the Python packages of the bindings, tests and scripts. Idempotent.
set -euo pipefail
if [ ! -e /usr/lib/llvm-14/lib/clang/14.0.6/include/omp.h ] || [ ! -e /usr/lib/x86_64-linux-gnu/libomp.so.5 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libomp-dev >/dev/null
fi
python3 -c "import numpy, pytest, tqdm, tokenizers" 2>/dev/null || python3 -m pip install -q numpy pytest tqdm tokenizers

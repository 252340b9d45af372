#!/usr/bin/env bash
# Installs every system package Strata needs to build, test and run its demo, from Debian 12's
# archive. Idempotent: when everything is present it only checks, in well under a second.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang
  # the sanitizer and fuzz builds (scripts/sanitize.sh): libFuzzer and the sanitizer runtimes and
  # headers (sanitizer/asan_interface.h, which Abseil's headers include under -fsanitize=address),
  # which clang only recommends; clang's OpenMP runtime
  libclang-rt-14-dev libomp-14-dev
  # the required libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libeigen3-dev libabsl-dev googletest libgtest-dev libgmock-dev libxrt-dev zlib1g-dev
  # headers that libxrt-dev's headers include (xrt/xclbin.h: <uuid/uuid.h>) but it does not depend on
  uuid-dev
  # Prometheus metrics over HTTP (server/metrics.h)
  prometheus-cpp-dev
  # the data set of the demo and of the accuracy tests
  dataset-fashion-mnist
  # the PNG plot of strata-bench-stream
  gnuplot-nox
  # tests: certificates for the TLS tests, JSON / YAML checks of ghz reports and deploy/ manifests
  openssl python3 python3-yaml
  # bench/serving_bench.sh: h2load, a light HTTP/2 load generator, beside ghz
  nghttp2-client
)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  as_root=(sudo)
fi
echo "setup: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
echo "setup: done"

#!/usr/bin/env bash
# install_deps.sh: installs the Debian 12 packages Loom builds and tests with. Idempotent:
# packages already present are left alone and apt is not touched when nothing is missing.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config ccache python3
  libeigen3-dev libopenblas-openmp-dev
  libopenmpi-dev openmpi-bin
  libhdf5-dev libcli11-dev libyaml-cpp-dev nlohmann-json3-dev libgtest-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install_deps: all packages present"
fi

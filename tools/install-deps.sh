#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages viaduct needs to build and test; only missing ones, so it is
# quick when everything is there. Usage: tools/install-deps.sh [run|test|bench]
set -euo pipefail
what=${1:-test}
build=(meson ninja-build pkg-config gcc libc6-dev libuv1-dev libssl-dev libc-ares-dev libfyaml-dev
       libcrypt-dev libnghttp2-dev)
testp=(clang libclang-rt-14-dev llvm libcmocka-dev python3 python3-pytest python3-websockets curl
       openssl apache2-utils clang-format python3-h2 nghttp2-client chromium iproute2 nodejs
       python3-prometheus-client haproxy tinyproxy)
bench=(wrk nginx-light)
pkgs=("${build[@]}")
case "$what" in
  run) ;;
  test) pkgs+=("${testp[@]}") ;;
  bench) pkgs+=("${testp[@]}" "${bench[@]}") ;;
  *) echo "usage: $0 [run|test|bench]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=300 update -q
$sudo apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"

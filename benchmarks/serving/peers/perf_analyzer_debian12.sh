#!/usr/bin/env bash
# Triton's perf_analyzer on Debian 12 (glibc 2.36): its PyPI wheel is built for glibc 2.38, so this
# fetches the wheel and Debian 13's libc6, libstdc++6 and libgcc-s1 into DIR and writes
# DIR/perf_analyzer, a wrapper that runs the binary through those libraries' own loader. Nothing is
# installed system-wide. Usage: perf_analyzer_debian12.sh DIR
set -euo pipefail
dir=$(realpath -m "${1:?usage: $0 DIR}")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$dir/wheel" "$dir/root"
python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_38_x86_64 \
    --python-version 3.12 -d "$dir/wheel" "perf-analyzer==2.60.0"
(cd "$dir/wheel" && python3 -m zipfile -e perf_analyzer-*.whl .)
chmod +x "$dir/wheel/perf_analyzer/bin/perf_analyzer"
curl -fsSL "$mirror/dists/trixie/main/binary-amd64/Packages.xz" | xz -dc >"$dir/Packages"
for package in libc6 libstdc++6 libgcc-s1; do
    file=$(awk -v p="$package" '/^Package: /{name=$2} /^Filename: /{if (name==p) {print $2; exit}}' "$dir/Packages")
    curl -fsSL -o "$dir/$package.deb" "$mirror/$file"
    dpkg-deb -x "$dir/$package.deb" "$dir/root"
done
lib="$dir/root/usr/lib/x86_64-linux-gnu"
cat >"$dir/perf_analyzer" <<WRAPPER
#!/bin/sh
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" \\
    "$dir/wheel/perf_analyzer/bin/perf_analyzer" "\$@"
WRAPPER
chmod +x "$dir/perf_analyzer"
"$dir/perf_analyzer" --version

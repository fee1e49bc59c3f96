#!/usr/bin/env bash
# Builds target/live555/live555-proxy: live555's own RTSP proxy (ProxyServerMediaSession) behind
# the small main in proxy.cpp, the peer `live555` of loadtest/shared-bench.sh.
#
# Debian has no live555 package here, so the library comes from PyPI's `liblivemedia` sdist, which
# carries the source of live555's four libraries at version 2024.06.26 (its Python wrapper and
# CMake file are not used). It is pinned by version and sha256, fetched with pip
# into target/live555/, and compiled with live555's own Linux flags (its config.linux) plus
# NO_OPENSSL=1 (TLS and SRTP are never used by a plain-RTSP proxy; no libssl link).
#
# One change from a stock build, made for the benchmark's sake: live555 waits with select(),
# whose glibc fd_set stops at descriptor 1,023 (BasicTaskScheduler silently ignores sockets above
# it), so stock live555 serves no more than ~500 tunnelled viewers (two descriptors each) or ~1,000
# plain ones, far short of shared-bench.sh's 1,000 and 5,000-viewer workloads. fd_set is
# widened to FD_SETSIZE (below) by a header forced into every live555 file; select() in Linux takes
# any size. The event loop is still live555's own select() loop, with its per-call cost.
#
# Idempotent: nothing is done when the binary is newer than proxy.cpp and this script. Compiling
# takes a minute or more of both cores; it runs under `nice`. Exit status 0 when the binary is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=1.0.5 # live555 2024.06.26
sha256=564f65501ea5e823e5c53b1847ce3f41bd7b71ee2e9f3ba154a7e955817dfb48
fd_setsize=16384
dir=$root/target/live555
bin=$dir/live555-proxy
if [ -x "$bin" ] && [ "$bin" -nt "$here/proxy.cpp" ] && [ "$bin" -nt "$here/build.sh" ]; then
  exit 0
fi
command -v g++ >/dev/null || { echo "live555: g++ missing (apt-get install g++)" >&2; exit 1; }
mkdir -p "$dir"
sdist=$dir/liblivemedia-$version.tar.gz
if ! echo "$sha256  $sdist" | sha256sum -c --status 2>/dev/null; then
  rm -f "$sdist"
  python3 -m pip download "liblivemedia==$version" --no-deps --no-binary :all: -d "$dir" -q >&2 ||
    { echo "live555: pip download liblivemedia==$version failed" >&2; exit 1; }
  echo "$sha256  $sdist" | sha256sum -c --status ||
    { echo "live555: $sdist does not match its pinned sha256" >&2; exit 1; }
fi
src=$dir/liblivemedia-$version
[ -d "$src/liveMedia" ] || tar -xzf "$sdist" -C "$dir"

# Forced first into every file: fd_set sized before <sys/select.h> defines it (see above), and
# FD_SETSIZE fixed after it (it expands to __FD_SETSIZE, which <linux/posix_types.h> sets back to
# 1,024 when a socket header includes it later).
cat >"$dir/wide_fd_set.h" <<EOF
#include <bits/types.h>
#undef __FD_SETSIZE
#define __FD_SETSIZE $fd_setsize
#include <sys/select.h>
#undef FD_SETSIZE
#define FD_SETSIZE $fd_setsize
EOF
libs="UsageEnvironment BasicUsageEnvironment groupsock liveMedia"
includes=""
for l in $libs; do includes+=" -I$src/$l/include"; done
# live555's config.linux (C++20: its scheduler uses std::atomic_flag::test), plus NO_OPENSSL and
# the wide fd_set.
flags="-O2 -DSOCKLEN_T=socklen_t -D_LARGEFILE_SOURCE=1 -D_FILE_OFFSET_BITS=64 -DBSD=1 -DNO_OPENSSL=1
  -U_FORTIFY_SOURCE -include $dir/wide_fd_set.h $includes -w"
obj=$dir/obj
# Objects built with other flags or another forced header are built again.
stamp="$flags $(cat "$dir/wide_fd_set.h")"
[ "$(cat "$obj/flags" 2>/dev/null)" = "$stamp" ] || rm -rf "$obj"
mkdir -p "$obj"
printf '%s' "$stamp" >"$obj/flags"
for l in $libs; do
  mkdir -p "$obj/$l"
  # Each source file once (.o kept: an interrupted build resumes), two compilers at a time.
  find "$src/$l" -maxdepth 1 \( -name '*.cpp' -o -name '*.c' \) -print0 |
    LIVE555_FLAGS="$flags" OBJ="$obj/$l" xargs -0 -P 2 -n 1 sh -c '
      o="$OBJ/$(basename "$1").o"
      [ -s "$o" ] && exit 0
      case $1 in *.c) cc=gcc ;; *) cc="g++ -std=c++20" ;; esac
      nice -n 10 $cc $LIVE555_FLAGS -c "$1" -o "$o.tmp" && mv "$o.tmp" "$o"' sh
  rm -f "$obj/lib$l.a"
  ar rcs "$obj/lib$l.a" "$obj/$l"/*.o
done
# Link order: each library before the ones it uses.
nice -n 10 g++ -std=c++20 $flags "$here/proxy.cpp" -o "$bin.tmp" \
  "$obj/libliveMedia.a" "$obj/libgroupsock.a" "$obj/libBasicUsageEnvironment.a" "$obj/libUsageEnvironment.a"
mv "$bin.tmp" "$bin"
echo "live555: built $bin (live555 $(grep -o '"[0-9.]*"' "$src/liveMedia/include/liveMedia_version.hh"))" >&2

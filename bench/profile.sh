#!/usr/bin/env bash
# Profiles LLMux's hot path natively: builds bench/core-bench with line tables (into
# build/profile-target, the normal build is untouched) and runs each case under
# `valgrind --tool=callgrind`, printing the top functions (self cost) of each.
# Usage: bench/profile.sh [CASE[:N] ...]   (default: the scenario cases)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
  CARGO_TARGET_DIR=build/profile-target cargo build --release --quiet -p core-bench
bin=build/profile-target/release/core-bench
out=build/profile
mkdir -p "$out"
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(roundtrip_openai_1k:5000 roundtrip_anthropic_1k:5000
  stream_200_one_chunk:200 request_anthropic_200k_image:50)
for c in "${cases[@]}"; do
  name=${c%%:*}; n=${c##*:}; [ "$n" != "$c" ] || n=1000
  valgrind --tool=callgrind --callgrind-out-file="$out/$name.callgrind" "$bin" "$name" "$n" >/dev/null 2>&1
  echo "=== $name x$n (callgrind: $out/$name.callgrind; fixture setup is included once)"
  callgrind_annotate "$out/$name.callgrind" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | head -14 | cut -c1-160
done

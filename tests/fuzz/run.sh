#!/bin/sh
# Builds the libFuzzer targets and runs each for SECONDS (default 20).
#   tests/fuzz/run.sh [SECONDS]
# Environment: CC (default clang), FUZZ_OUT (binaries, corpora and crash
# files; default ${TMPDIR:-/tmp}/sandboxfs-fuzz), FUZZ_JOBS (parallel
# workers per target, default 1).  Exits non-zero if any target failed.
set -eu

secs=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${FUZZ_OUT:-${TMPDIR:-/tmp}/sandboxfs-fuzz}
cc=${CC:-clang}
jobs=${FUZZ_JOBS:-1}
targets="parse_auth parse_ctl parse_kv mask template event ps binds"

mkdir -p "$out"
flags="-std=gnu11 -D_GNU_SOURCE -g -O1 -Wall -Wextra
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -I$root/backend -I$here"
backend="$root/backend/err.c $root/backend/log.c $root/backend/parse.c $root/backend/mask.c
         $root/backend/template.c $root/backend/workspace.c $root/backend/state.c $root/backend/engine.c $root/backend/engine_json.c $root/backend/subprocess.c"

for t in $targets; do
	echo "== build fuzz_$t"
	# shellcheck disable=SC2086 # flags and sources are word lists
	$cc $flags "$here/fuzz_$t.c" $backend -lcjson -lpthread -lm -o "$out/fuzz_$t"
done

failed=""
for t in $targets; do
	echo "== run fuzz_$t for ${secs}s"
	corpus="$out/corpus/$t"
	mkdir -p "$corpus"
	# The first directory collects new inputs; the seeds are only read.
	seeds=""
	[ -d "$here/seeds/$t" ] && seeds="$here/seeds/$t"
	# -jobs writes fuzz-N.log into the current directory: run from $out.
	par=""
	[ "$jobs" -gt 1 ] && par="-jobs=$jobs -workers=$jobs"
	# shellcheck disable=SC2086 # par and seeds are word lists
	if ! (cd "$out" && "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 $par \
		-print_final_stats=1 -artifact_prefix="$out/crash-$t-" \
		"$corpus" $seeds); then
		failed="$failed $t"
	fi
done

if [ -n "$failed" ]; then
	echo "FAILED:$failed (reproducers in $out/crash-*)" >&2
	exit 1
fi
echo "all fuzz targets ran ${secs}s without findings"

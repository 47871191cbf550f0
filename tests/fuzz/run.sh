#!/bin/sh
# Builds the libFuzzer targets (meson, -Dfuzz=true: tests/fuzz/meson.build
# lists them and links them with the backend's own sources) and runs each
# for SECONDS (default 20).
#   tests/fuzz/run.sh [SECONDS]
# Environment: FUZZ_BUILD (meson build directory, default build-fuzz),
# FUZZ_OUT (corpora and crash files; default ${TMPDIR:-/tmp}/sandboxfs-fuzz),
# FUZZ_JOBS (parallel workers per target, default 1).  Exits non-zero if any
# target failed.
set -eu

secs=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
out=${FUZZ_OUT:-${TMPDIR:-/tmp}/sandboxfs-fuzz}
jobs=${FUZZ_JOBS:-1}

opts="-Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized -Dwerror=true"
if [ -f "$build/build.ninja" ]; then
	# shellcheck disable=SC2086
	meson setup --reconfigure "$build" "$root" $opts >/dev/null
else
	# shellcheck disable=SC2086
	CC=clang meson setup "$build" "$root" $opts >/dev/null
fi
echo "== build the fuzz targets ($build)"
ninja -C "$build" >/dev/null
targets=$(find "$build/tests/fuzz" -maxdepth 1 -type f -perm -u+x -name 'fuzz_*' |
	sed 's|.*/fuzz_||' | sort)
[ -n "$targets" ] || { echo "no fuzz targets were built" >&2; exit 1; }

mkdir -p "$out"
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
	# The sanitizers halt on the first report, like the fuzzer itself.
	# shellcheck disable=SC2086 # par and seeds are word lists
	if ! (cd "$out" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		"$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 $par \
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

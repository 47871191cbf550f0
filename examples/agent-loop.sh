#!/usr/bin/env bash
# agent-loop.sh — the agent loop on a sandboxfs mount, in plain shell.
#
#   examples/agent-loop.sh [-m MOUNT] [-n NAME] [-t SECONDS] [-k] [-a AUTHFILE] PRD
#
# Pre-warms one sandbox (mkdir MOUNT/NAME), then runs each story of PRD in
# turn: one story per line, a shell command as the sandbox runs it (for an
# agent: claude -p '...' or codex exec '...'); blank lines and lines starting
# with # are skipped. Per story it prints a progress line and keeps the output
# in OUTDIR/story-K.out; at the end a summary. The sandbox is removed on exit,
# on Ctrl-C and on TERM.
#
#   -m MOUNT    the sandboxfs mount point (default $SANDBOXFS_MOUNT or /sbx)
#   -n NAME     the sandbox name; a template matching it applies, e.g.
#               claude-loop for the claude template (default loop-PID)
#   -t SECONDS  time bound of each story (the sandbox's timeout file; 0 none)
#   -k          keep going after a failed story (default: stop at the first)
#   -a FILE     credentials written to the sandbox's auth before the first
#               story (KEY=VALUE lines or the JSON form); never echoed
#   -o OUTDIR   where story outputs go (default: a new directory under /tmp)
#
# Exit status: 0 when every story ran and exited 0, 1 when one failed, 2 on
# bad usage or when the sandbox could not be made.
set -u

mount=${SANDBOXFS_MOUNT:-/sbx}
name=loop-$$
bound=0
keep_going=0
authfile=
outdir=
usage() { sed -n '4,5p' "$0" >&2; exit 2; }
while getopts 'm:n:t:ka:o:h' opt; do
    case $opt in
    m) mount=$OPTARG ;;
    n) name=$OPTARG ;;
    t) bound=$OPTARG ;;
    k) keep_going=1 ;;
    a) authfile=$OPTARG ;;
    o) outdir=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# = 1 ] || usage
prd=$1
[ -r "$prd" ] || { echo "agent-loop: cannot read $prd" >&2; exit 2; }
[ -n "$outdir" ] || outdir=$(mktemp -d /tmp/agent-loop.XXXXXX)
mkdir -p "$outdir"

sbx=$mount/$name
made=0
teardown() {
    # rmdir ends a live run and removes the container.
    if [ "$made" = 1 ]; then
        rmdir "$sbx" 2>/dev/null || echo "agent-loop: rmdir $sbx failed" >&2
        made=0
    fi
}
trap teardown EXIT
trap 'echo "agent-loop: interrupted" >&2; exit 130' INT TERM

# Pre-warm: the container starts now, not at the first story.
if ! mkdir "$sbx"; then
    echo "agent-loop: cannot make the sandbox $sbx" >&2
    exit 2
fi
made=1
echo "$bound" > "$sbx/timeout" || exit 2
if [ -n "$authfile" ]; then
    cat "$authfile" > "$sbx/auth" || exit 2
fi

total=0 passed=0 failed=0 skipped=0
summary=()
k=0
while IFS= read -r story || [ -n "$story" ]; do
    case $story in '' | '#'*) continue ;; esac
    k=$((k + 1))
    total=$((total + 1))
    if [ "$failed" -gt 0 ] && [ "$keep_going" = 0 ]; then
        skipped=$((skipped + 1))
        summary+=("$(printf '%3d  %-10s  %s' "$k" skipped "$story")")
        continue
    fi
    t0=$(date +%s)
    # Open exec read-write: write the story, read back its run number, so
    # that its output is runs/N/ whatever else happens in the sandbox.
    if ! exec 3<>"$sbx/exec"; then
        echo "agent-loop: cannot open $sbx/exec" >&2
        exit 2
    fi
    printf '%s' "$story" >&3
    n=
    read -r n <&3
    exec 3>&-
    if [ -z "$n" ]; then
        status="not started"
    else
        # output blocks until the run ends; status is then final.
        cat "$sbx/runs/$n/output" > "$outdir/story-$k.out"
        status=$(cat "$sbx/runs/$n/status")
    fi
    secs=$(( $(date +%s) - t0 ))
    if [ "$status" = "exited 0" ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    echo "story $k: $status (${secs}s, run ${n:--}, output $outdir/story-$k.out)"
    summary+=("$(printf '%3d  %-10s  %s' "$k" "$status" "$story")")
done < "$prd"

echo "summary: $total stories, $passed passed, $failed failed, $skipped skipped"
for line in "${summary[@]}"; do
    echo "$line"
done
[ "$failed" = 0 ]

#!/bin/sh
# check-scenarios.sh LIST SOURCE: the scenario names in LIST (first column, '#' comments)
# must be exactly the names in SOURCE's table (lines like `{ "name", STAGE_...`).
# Run by the Makefile; exits 1 with a diff when they disagree.
set -eu
list=$1
src=$2
tmp=${TMPDIR:-/tmp}/kdiag-scn.$$
trap 'rm -f "$tmp".a "$tmp".b' EXIT
sed -e 's/#.*//' "$list" | awk 'NF { print $1 }' | sort > "$tmp".a
sed -n 's/^[[:space:]]*{ "\([a-z0-9-]*\)", STAGE_.*/\1/p' "$src" | sort > "$tmp".b
if ! cmp -s "$tmp".a "$tmp".b; then
	echo "scenario names differ between $list (<) and $src (>):" >&2
	diff "$tmp".a "$tmp".b >&2 || true
	exit 1
fi

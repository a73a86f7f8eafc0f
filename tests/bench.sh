#!/usr/bin/env bash
# make bench: erpcrm's benchmarks, set-up included, one table at the end.
#
# As root: installs the Debian packages that are missing, builds and
# installs erpcrm, then runs tests/bench/bench.py as the unprivileged user
# "postgres" (initdb refuses to run as root) in a copy of the tree it owns,
# and copies the table to tests/bench/last-results.txt.
# As another user: runs in place (erpcrm must be installed).
#
# Sizes: BENCH_QUICK=1 for a quick run; BENCH_SECONDS, BENCH_COMPANIES, ...
# (the list is at the top of tests/bench/bench.py).  BENCH_ONLY=capture or
# BENCH_ONLY=delivery runs one half, BENCH_ONLY=scale the scaling runs only,
# BENCH_ONLY=reach delivery from 1, 4 and 16 databases (tests/bench/databases.py).
# BENCH_ONLY=fingerprints the calls saved by fingerprints and refresh.
# PG_CONFIG picks the PostgreSQL (default: the system's PostgreSQL 15).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
# shellcheck source=tests/lib.sh
. tests/lib.sh

PACKAGES="postgresql-15 postgresql-client-15 postgresql-server-dev-15
libcurl4-openssl-dev libcjson-dev python3 make gcc"
# PG_CONFIG names the PostgreSQL to build for and measure (lib.sh)
use_pg_config

# which erpcrm is measured: the commit, and whether its sources differ from it
revision() {
	local rev dirty
	rev=$(git rev-parse --short HEAD 2>/dev/null) || { echo "unknown (no git)"; return; }
	dirty=$(git status --porcelain -- extension worker hubspot sql erpcrm.control Makefile 2>/dev/null)
	if [ -n "$dirty" ]; then
		echo "$rev + uncommitted changes"
	else
		echo "$rev"
	fi
}
export BENCH_REVISION="${BENCH_REVISION:-$(revision)}"

run_bench() {
	export PATH="$PG_BIN:$PATH"
	if [ -n "${BENCH_ONLY:-}" ]; then
		python3 tests/bench/bench.py --out "$1" --only "$BENCH_ONLY"
		return
	fi
	# everything: one cluster for capture, delivery, scale and fingerprints,
	# then the many-database figures on clusters of their own
	python3 tests/bench/bench.py --out "$1" || return
	python3 tests/bench/bench.py --out "$1.reach" --only reach || return
	cat "$1.reach" >>"$1"
	rm -f "$1.reach"
}

if [ "${1:-}" = "--run" ]; then
	run_bench "$2"
	exit $?
fi

if [ "$(id -u)" = 0 ]; then
	# shellcheck disable=SC2086  # one word per package
	install_missing $PACKAGES
	export PATH="$PG_BIN:$PATH"
	build_and_install "$PG_CONFIG"
	# tracked files and new ones not ignored (a fresh clone has only the former)
	work_copy erpcrm-bench-tree --others
	status=0
	runuser -u postgres -- env BENCH_REVISION="$BENCH_REVISION" PG_CONFIG="$PG_CONFIG" \
		$(env | grep -E '^BENCH_[A-Z_]+=[A-Za-z0-9_.,]*$' || true) \
		bash "$work/tests/bench.sh" --run "$work/last-results.txt" || status=$?
	if [ -s "$work/last-results.txt" ]; then
		mkdir -p "$top/tests/bench"
		cp "$work/last-results.txt" "$top/tests/bench/last-results.txt"
		echo "(also in tests/bench/last-results.txt)"
	fi
	exit $status
fi

mkdir -p tests/bench
run_bench "$top/tests/bench/last-results.txt"

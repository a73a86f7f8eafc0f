#!/usr/bin/env bash
# make test: everything a fresh Debian 12 machine needs, then every suite.
#
# As root: installs the Debian packages that are missing, builds and
# installs erpcrm, then runs the suites as the unprivileged user "postgres"
# (initdb refuses to run as root) in a copy of the tree it owns.
# As another user: runs the suites in place (erpcrm must be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

PACKAGES="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libcjson-dev
libipc-run-perl python3 make gcc perl
clang libclang-rt-14-dev openssl curl"

run_suites() {
	export PATH="/usr/lib/postgresql/15/bin:$PATH"
	local failed=0
	echo "=== unit tests (HTTP client, JSON, rate limiter)"
	make -s -C tests/unit run || failed=1
	# --- fuzzing (tests/fuzz): a short bounded run; make fuzz runs longer
	echo "=== fuzzing (libFuzzer, ${FUZZ_SECONDS:-15} s per harness)"
	make -s -C tests/fuzz run FUZZ_SECONDS="${FUZZ_SECONDS:-15}" || failed=1
	echo "=== HubSpot mock self-test"
	python3 tests/mock/test_mock.py || failed=1
	echo "=== pg_regress"
	make -s check-regress || { failed=1; cat tests/regress/regression.diffs 2>/dev/null | head -200; }
	echo "=== TAP"
	make -s check-tap PROVE_FLAGS="${PROVE_FLAGS:-}" || failed=1
	return $failed
}

if [ "${1:-}" = "--suites" ]; then
	run_suites
	exit $?
fi

if [ "$(id -u)" = 0 ]; then
	missing=""
	for p in $PACKAGES; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "=== installing:$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
	export PATH="/usr/lib/postgresql/15/bin:$PATH"
	make -s PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	make -s install PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >/dev/null
	work=$(mktemp -d /tmp/erpcrm-test.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	git ls-files -z 2>/dev/null | tar --null -T - -cf - 2>/dev/null | tar -C "$work" -xf - \
		|| cp -a . "$work"
	chown -R postgres: "$work"
	status=0
	runuser -u postgres -- env PROVE_FLAGS="${PROVE_FLAGS:-}" bash "$work/tests/run.sh" --suites || status=$?
	if [ $status -ne 0 ]; then
		rm -rf "$top/tests/log" && mkdir -p "$top/tests/log"
		cp -a "$work/tests/tmp_check" "$top/tests/log/" 2>/dev/null || true
		cp -a "$work/tests/regress/regression.diffs" "$top/tests/log/" 2>/dev/null || true
		echo "erpcrm: tests failed; logs are in tests/log" >&2
	fi
	exit $status
fi

run_suites

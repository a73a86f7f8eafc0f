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

# PG_CONFIG names the PostgreSQL to build for and test against (default:
# Debian's PostgreSQL 15).  A relocated copy of it lets several checkouts
# test side by side without sharing one installed erpcrm.
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_CONFIG

# SUITES picks some of them (default: all): unit fuzz mock regress tap.
# PROVE_TESTS picks TAP files (default: t/*.pl).
SUITES=${SUITES:-unit fuzz mock regress tap}
export SUITES

want() { case " $SUITES " in *" $1 "*) return 0;; *) return 1;; esac; }

run_suites() {
	export PATH="$("$PG_CONFIG" --bindir):$PATH"
	local failed=0
	if want unit; then
		echo "=== unit tests (HTTP client, JSON, rate limiter)"
		make -s -C tests/unit run || failed=1
	fi
	if want fuzz; then
		# a short bounded run; make fuzz runs longer
		echo "=== fuzzing (libFuzzer, ${FUZZ_SECONDS:-15} s per harness)"
		make -s -C tests/fuzz run FUZZ_SECONDS="${FUZZ_SECONDS:-15}" || failed=1
	fi
	if want mock; then
		echo "=== HubSpot mock self-test"
		python3 tests/mock/test_mock.py || failed=1
	fi
	if want regress; then
		echo "=== pg_regress"
		make -s check-regress || { failed=1; cat tests/regress/regression.diffs 2>/dev/null | head -200; }
	fi
	if want tap; then
		echo "=== TAP"
		make -s check-tap PROVE_FLAGS="${PROVE_FLAGS:-}" PROVE_TESTS="${PROVE_TESTS:-}" || failed=1
	fi
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
	export PATH="$("$PG_CONFIG" --bindir):$PATH"
	make -s PG_CONFIG="$PG_CONFIG"
	make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
	work=$(mktemp -d /tmp/erpcrm-test.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	git ls-files -z 2>/dev/null | tar --null -T - -cf - 2>/dev/null | tar -C "$work" -xf - \
		|| cp -a . "$work"
	chown -R postgres: "$work"
	status=0
	runuser -u postgres -- env PROVE_FLAGS="${PROVE_FLAGS:-}" PROVE_TESTS="${PROVE_TESTS:-}" SUITES="$SUITES" PG_CONFIG="$PG_CONFIG" bash "$work/tests/run.sh" --suites || status=$?
	if [ $status -ne 0 ]; then
		rm -rf "$top/tests/log" && mkdir -p "$top/tests/log"
		cp -a "$work/tests/tmp_check" "$top/tests/log/" 2>/dev/null || true
		cp -a "$work/tests/regress/regression.diffs" "$top/tests/log/" 2>/dev/null || true
		echo "erpcrm: tests failed; logs are in tests/log" >&2
	fi
	exit $status
fi

run_suites

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
# shellcheck source=tests/lib.sh
. tests/lib.sh

PACKAGES="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libcjson-dev
libipc-run-perl python3 make gcc perl
clang libclang-rt-14-dev openssl curl
prometheus python3-yaml"

# PG_CONFIG names the PostgreSQL to build for and test against (lib.sh)
use_pg_config

# SUITES picks some of them (default: all): clang unit fuzz mock
# monitoring regress tap.  PROVE_TESTS picks TAP files (default: t/*.pl).
SUITES=${SUITES:-clang unit fuzz mock monitoring regress tap}
export SUITES

want() { case " $SUITES " in *" $1 "*) return 0;; *) return 1;; esac; }

run_suites() {
	export PATH="$("$PG_CONFIG" --bindir):$PATH"
	local failed=0
	if want clang; then
		# the layers: the HubSpot client includes nothing of the extension
		# or the worker, and no includes go round in a circle
		echo "=== layering of the C code (tests/layers.py)"
		python3 tests/layers.py --self-test || failed=1
		# make test installs the gcc build; this one only has to compile
		# with erpcrm's own warnings as errors
		echo "=== build with clang"
		local tree
		tree=$(mktemp -d "${TMPDIR:-/tmp}/erpcrm-clang.XXXXXX")
		tar --exclude=./tests --exclude=./.git -cf - . | tar -C "$tree" -xf -
		make -s -C "$tree" clean PG_CONFIG="$PG_CONFIG" >/dev/null
		make -s -C "$tree" CC=clang PG_CONFIG="$PG_CONFIG" >/dev/null || failed=1
		rm -rf "$tree"
	fi
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
	if want monitoring; then
		echo "=== monitoring: alert rules (promtool), dashboard and rules against the exporter's metrics"
		promtool check rules monitoring/erpcrm_alerts.yaml >/dev/null || failed=1
		promtool test rules tests/monitoring/alerts_test.yaml || failed=1
		python3 tests/monitoring/check_monitoring.py --self-test || failed=1
	fi
	if want regress; then
		echo "=== pg_regress"
		make -s check-regress || { failed=1; cat tests/regress/regression.diffs 2>/dev/null | head -200; }
	fi
	if want tap; then
		echo "=== TAP"
		# the mock of each suite records its calls; all are then checked
		# against HubSpot's contract (tests/contract/check.js)
		local calls
		calls=$(mktemp -d "${TMPDIR:-/tmp}/erpcrm-contract.XXXXXX")
		ERPCRM_CONTRACT_DIR=$calls make -s check-tap PROVE_FLAGS="${PROVE_FLAGS:-}" PROVE_TESTS="${PROVE_TESTS:-}" || failed=1
		if ls "$calls"/*.json >/dev/null 2>&1; then
			echo "=== HubSpot contract: the calls of every TAP suite"
			node tests/contract/check.js --quiet "$calls"/*.json || failed=1
		fi
		rm -rf "$calls"
	fi
	return $failed
}

# The contract check (TAP 019) reads the models of HubSpot's official Node
# client: Node.js and npm from Debian when missing, then the client at the
# version package-lock.json pins (npm ci, again only when the lock changed).
contract_client() {
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		install_missing nodejs npm
	fi
	if [ ! tests/contract/node_modules/.package-lock.json -nt tests/contract/package-lock.json ]; then
		echo "=== npm ci (tests/contract: HubSpot's Node client)"
		(cd tests/contract && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
	fi
}

# TAP 020 checks the Debian package: make deb, then the package installed
# into Debian's PostgreSQL 15 (only the system's, whatever PG_CONFIG is).
want_package() {
	want tap && case " ${PROVE_TESTS:-020_package} " in *020_package*) return 0;; *) return 1;; esac
}
install_package() {
	DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS:-parallel=2} bash tests/deb.sh
	local deb
	deb=$(ls "$top"/deb/postgresql-15-erpcrm_*.deb)
	echo "=== installing $(basename "$deb")"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall \
		-o DPkg::Lock::Timeout=300 "$deb" >/dev/null
}

if [ "${1:-}" = "--suites" ]; then
	run_suites
	exit $?
fi

if [ "$(id -u)" = 0 ]; then
	# shellcheck disable=SC2086  # one word per package
	install_missing $PACKAGES
	if want tap; then
		contract_client
	fi
	export PATH="$("$PG_CONFIG" --bindir):$PATH"
	build_and_install "$PG_CONFIG"
	# after make install: with the system's PG_CONFIG, the package's files
	# replace the ones make install put there
	if want_package; then
		install_package
	fi
	work_copy erpcrm-test
	if [ -d tests/contract/node_modules ]; then
		cp -a tests/contract/node_modules "$work/tests/contract/"
		chown -R postgres: "$work/tests/contract/node_modules"
	fi
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

#!/usr/bin/env bash
# make check-long: the long fault runs (tests/long/*.pl), not part of
# make test.  They print their figures (rounds, rows, throughput, lost,
# duplicated) as TAP diagnostics.
#
#   bash tests/long/run.sh [tests/long/crash_rounds.pl ...]
#   ROUNDS=20 ROWS=100000 OUTAGE_SECONDS=60 REACTIVATE=1 (the defaults)
#   PGBIN=/usr/lib/postgresql/15/bin (the installation to test)
#
# As root, runs as the user postgres in a copy of the tree (initdb refuses
# root); erpcrm must be installed (make install, or make test once).
set -uo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PATH="$PGBIN:$PATH"

scripts=("$@")
[ ${#scripts[@]} -eq 0 ] && scripts=(tests/long/crash_rounds.pl tests/long/outage.pl tests/long/ddl_rounds.pl)

if [ "$(id -u)" = 0 ]; then
	work=$(mktemp -d /tmp/erpcrm-long.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	tar --exclude=./tests/tmp_check --exclude=./tests/fuzz/work -cf - . | tar -C "$work" -xf -
	chown -R postgres: "$work"
	status=0
	runuser -u postgres -- env PGBIN="$PGBIN" ROUNDS="${ROUNDS:-}" ROWS="${ROWS:-}" \
		OUTAGE_SECONDS="${OUTAGE_SECONDS:-}" SEED="${SEED:-}" REACTIVATE="${REACTIVATE:-}" \
		bash "$work/tests/long/run.sh" "${scripts[@]}" || status=$?
	if [ $status -ne 0 ]; then
		rm -rf "$top/tests/log/long" && mkdir -p "$top/tests/log"
		cp -a "$work/tests/tmp_check" "$top/tests/log/long" 2>/dev/null || true
		echo "erpcrm: long runs failed; logs are in tests/log/long" >&2
	fi
	exit $status
fi

# empty values from the root branch mean "the default"
for v in ROUNDS ROWS OUTAGE_SECONDS SEED REACTIVATE; do
	[ -z "${!v:-}" ] && unset $v
done
cd "$top/tests"
rm -rf tmp_check
pgroot=$(dirname "$PGBIN")
TESTDIR="$top/tests" PG_REGRESS="$pgroot/lib/pgxs/src/test/regress/pg_regress" \
	prove -I "$top/tests" -I "$pgroot/lib/pgxs/src/test/perl" \
	"${scripts[@]/#tests\//}"

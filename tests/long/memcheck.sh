#!/usr/bin/env bash
# make check-valgrind: the end-to-end TAP suites with every server process,
# the erpcrm worker included, under valgrind memcheck.
#
#   bash tests/long/memcheck.sh [t/001_delivery.pl ...]   (default: 001, 002, 007)
#
# Why valgrind and how.  The worker is a forked child of the postmaster, so
# valgrind on the postmaster follows it (and every backend) without exec.
# pg_ctl and initdb find "postgres" next to themselves, so a private copy of
# the bin directory (copies, not symlinks: PostgreSQL resolves symlinks to
# find its own directory) holds a "postgres" script that runs the real
# binary under valgrind for server starts, and directly for initdb's
# bootstrap and version checks.  lib/ and share/ are symlinked where the
# relocatable binaries look for them, so the installed erpcrm is the one
# tested.  (The AddressSanitizer alternative needs libasan preloaded into an
# uninstrumented postgres and a second copy of erpcrm.so, and sees no more:
# PostgreSQL's palloc chunks live inside big malloc blocks either way.)
#
# What counts.  Debian's PostgreSQL is not built with USE_VALGRIND, so the
# server core shows known false positives (uninitialised padding written to
# WAL and the stats files); without PostgreSQL's suppression file, the
# report counts only errors with a stack frame in erpcrm.so: erpcrm's own
# code, or libcurl/cJSON/libc called from it.  Each error is printed with
# its stack, and any makes the run fail.  Leak checking is off: memory
# contexts are freed by reset, not free().
#
# The timing-sensitive assertions of the suites may fail under valgrind's
# slowdown; the run says so but judges memory errors only.
set -uo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=(t/001_delivery.pl t/002_faults.pl t/007_tls.pl)

if [ "$(id -u)" = 0 ]; then
	if ! command -v valgrind >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
	fi
	# initdb refuses root: run in a copy owned by postgres, report here
	work=$(mktemp -d /tmp/erpcrm-memcheck.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	tar --exclude=./tests/tmp_check --exclude=./tests/fuzz/work -cf - . | tar -C "$work" -xf -
	chown -R postgres: "$work"
	status=0
	runuser -u postgres -- env PGBIN="$PGBIN" bash "$work/tests/long/memcheck.sh" "${tests[@]}" || status=$?
	rm -rf "$top/tests/log/memcheck" && mkdir -p "$top/tests/log"
	cp -a "$work/tests/memcheck" "$top/tests/log/memcheck" 2>/dev/null || true
	echo "memcheck: valgrind logs are in tests/log/memcheck"
	exit $status
fi

out="$top/tests/memcheck"
rm -rf "$out"
mkdir -p "$out/vg"

# the relocated installation: $root/usr/lib/postgresql/15/{bin,lib}, share
root="$out/install"
pgroot=$(dirname "$PGBIN")			# /usr/lib/postgresql/15
share=$("$PGBIN/pg_config" --sharedir)	# /usr/share/postgresql/15
mkdir -p "$root$PGBIN" "$root$(dirname "$share")"
for f in "$PGBIN"/*; do
	cp -L "$f" "$root$PGBIN/"
done
ln -s "$pgroot/lib" "$root$pgroot/lib"
ln -s "$share" "$root$share"
mv "$root$PGBIN/postgres" "$root$PGBIN/postgres.real"
rm -f "$root$PGBIN/postmaster"
cat > "$root$PGBIN/postgres" <<EOF
#!/bin/sh
# Run the server under valgrind; initdb's bootstrap and checks directly.
real="\$(dirname "\$0")/postgres.real"
case "\${1:-}" in
	-V|--version|--boot|--single|--check|-C|--describe-config)
		exec "\$real" "\$@" ;;
esac
exec valgrind --tool=memcheck --quiet --trace-children=no \\
	--track-origins=yes --leak-check=no --num-callers=40 \\
	--error-limit=no --vgdb=no --child-silent-after-fork=no \\
	--fullpath-after= --log-file="$out/vg/%p.log" \\
	"\$real" "\$@"
EOF
chmod +x "$root$PGBIN/postgres"
ln -s postgres "$root$PGBIN/postmaster"

echo "=== memcheck: ${tests[*]} with every server process under valgrind"
start=$(date +%s)
cd "$top/tests"
rm -rf tmp_check
PATH="$root$PGBIN:$PATH" TESTDIR="$top/tests" \
	PG_REGRESS="$pgroot/lib/pgxs/src/test/regress/pg_regress" \
	PG_TEST_TIMEOUT_DEFAULT=900 \
	prove -I "$top/tests" -I "$pgroot/lib/pgxs/src/test/perl" "${tests[@]}"
suite=$?
echo "=== memcheck: suites took $(( $(date +%s) - start )) s (exit $suite under valgrind)"

python3 "$top/tests/long/valgrind_report.py" "$out/vg" "$pgroot/lib/erpcrm.so"
report=$?
[ $suite -ne 0 ] && echo "memcheck: some assertions failed under valgrind's slowdown (see tests/tmp_check/log); memory errors are judged above"
exit $report

# shellcheck shell=bash
# tests/lib.sh: what make test, make bench, make demo and make deb share
# (sourced by tests/run.sh, tests/bench.sh, tests/demo.sh and tests/deb.sh).
#
# Each of them, started as root on a fresh Debian 12, installs the Debian
# packages it needs, builds and installs erpcrm, copies the tree to a
# directory the user postgres owns (initdb refuses root) and goes on there as
# that user.

# install_missing PACKAGE...: apt-get install those not installed (as root)
install_missing() {
	local p missing=""
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	[ -n "$missing" ] || return 0
	echo "=== installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086  # one word per package
	apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 $missing >/dev/null
}

# build_and_install PG_CONFIG: make and make install for that PostgreSQL
build_and_install() {
	make -s PG_CONFIG="$1"
	make -s install PG_CONFIG="$1" >/dev/null
}

# copy_tree DIR [--others]: the git-tracked files (with --others also new
# files git does not ignore) into DIR; the whole tree when this is not a
# git checkout
copy_tree() {
	local dir=$1
	shift
	git ls-files -z --cached "$@" ${1:+--exclude-standard} 2>/dev/null |
		tar --null -T - -cf - 2>/dev/null | tar -C "$dir" -xf - \
		|| cp -a . "$dir"
}

# shellcheck disable=SC2034  # PG_BIN is for the scripts that source this
# use_pg_config: the PostgreSQL to build for and run against.  PG_CONFIG
# (exported) names it, by default Debian's PostgreSQL 15; a relocated copy
# of it lets several checkouts test side by side without sharing one
# installed erpcrm.  PG_BIN is its bindir (Debian's while PostgreSQL is not
# installed yet).
use_pg_config() {
	PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
	export PG_CONFIG
	if [ -x "$PG_CONFIG" ]; then
		PG_BIN=$("$PG_CONFIG" --bindir)
	else
		PG_BIN=/usr/lib/postgresql/15/bin
	fi
}

# work_copy PREFIX [--others]: the tree (as copy_tree copies it) in a new
# directory /tmp/PREFIX.XXXXXX, in $work, owned by the user postgres and
# removed at exit
work_copy() {
	local prefix=$1
	shift
	work=$(mktemp -d "/tmp/$prefix.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	copy_tree "$work" "$@"
	chown -R postgres: "$work"
}

# tests/lib.sh: what make test, make bench and make demo share (sourced by
# tests/run.sh, tests/bench.sh and tests/demo.sh).
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

#!/usr/bin/env bash
# make deb: the Debian package postgresql-15-erpcrm, built with Debian's own
# PostgreSQL extension tooling (debian/: dh with pg_buildext) from the
# git-tracked files, into deb/.
#
# As root, the build dependencies that are missing are installed first.
# The build is skipped when deb/ holds a package of the same sources.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
# shellcheck source=tests/lib.sh
. tests/lib.sh
out=${DEB_OUT:-$top/deb}
unset PG_CONFIG		# pg_buildext picks each version's own pg_config

BUILD_DEPS="debhelper postgresql-server-dev-all build-essential dpkg-dev
libcurl4-openssl-dev libcjson-dev"

if [ "$(id -u)" = 0 ]; then
	# shellcheck disable=SC2086  # one word per package
	install_missing $BUILD_DEPS
fi

# the tracked files (a fresh clone has only those), as they are now
files() {
	git ls-files -z 2>/dev/null
}
sources=$(files | xargs -0 sha1sum 2>/dev/null | sha1sum | cut -c1-40)
if [ -f "$out/.sources" ] && [ "$(cat "$out/.sources")" = "$sources" ] \
	&& ls "$out"/postgresql-*-erpcrm_*.deb >/dev/null 2>&1; then
	echo "make deb: $(basename "$out"/postgresql-*-erpcrm_*.deb) is up to date"
	exit 0
fi

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
work=$(mktemp -d "${TMPDIR:-/tmp}/erpcrm-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/erpcrm-$version"
files | tar --null -T - -cf - | tar -C "$work/erpcrm-$version" -xf -
echo "=== dpkg-buildpackage (erpcrm $version)"
if ! (cd "$work/erpcrm-$version" && dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1; then
	tail -n 60 "$work/build.log" >&2
	echo "make deb: the package build failed (above)" >&2
	exit 1
fi
mkdir -p "$out"
rm -f "$out"/*.deb "$out/.sources"
cp "$work"/*.deb "$out/"
echo "$sources" >"$out/.sources"
ls "$out"/*.deb

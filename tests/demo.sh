#!/usr/bin/env bash
# make demo: erpcrm end to end against the local HubSpot mock.
#
# As root (a fresh Debian 12 machine): installs the Debian packages that are
# missing, builds and installs erpcrm, then runs the demo as the user
# "postgres" (initdb refuses root).  As another user: runs the demo directly
# (erpcrm must be installed: make install).
#
# The demo works in a temporary directory that is removed at the end: the
# HubSpot mock on a free port, with HubSpot's Free-tier rate limit (100 calls
# per 10 s); a throw-away cluster listening on a unix socket only, with
# erpcrm preloaded and pointed at the mock; the sample ERP of a Polish
# distributor (tests/demo/*.sql); a burst of ERP changes with one product
# that HubSpot refuses; live progress; what erpcrm and HubSpot say at the end.
# shellcheck disable=SC2317  # cleanup and pass_on run from traps
set -euo pipefail

PACKAGES="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libcjson-dev python3 make gcc"
PG_BIN_DEFAULT=/usr/lib/postgresql/15/bin
SYNC_TIMEOUT=60			# seconds allowed for one phase to sync
BAD_SKU=PV-003			# the product HubSpot (the mock) refuses

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\ndemo: FAILED: %s\n' "$*" >&2; said=1; exit 1; }

# ---------------------------------------------------------------------------
# The demo itself, as an unprivileged user, in the directory $1 (which holds
# src/ with the mock and the SQL files).
# ---------------------------------------------------------------------------
run_demo() {
	work=$1
	src=$work/src
	cd "$work"
	# everything is on loopback or a unix socket: no proxy
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
	export PGHOST=$work PGDATABASE=postgres PGCLIENTENCODING=UTF8 PGOPTIONS='' PYTHONIOENCODING=utf-8
	unset PGSERVICE PGUSER PGPASSWORD PGHOSTADDR

	mock_pid=
	started=$SECONDS
	echo $$ >"$work/demo.pid"	# for the parent, to pass on a signal
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	# --- the HubSpot mock ------------------------------------------------
	say "Starting the HubSpot mock"
	python3 "$src/hubspot_mock.py" --port 0 --port-file "$work/mock.port" --seed 42 \
		>"$work/mock.out" 2>"$work/mock.err" &
	mock_pid=$!
	for _ in $(seq 100); do
		[ -s "$work/mock.port" ] && break
		kill -0 "$mock_pid" 2>/dev/null || die "the HubSpot mock did not start"
		sleep 0.1
	done
	[ -s "$work/mock.port" ] || die "the HubSpot mock did not write its port"
	mock_port=$(cat "$work/mock.port")
	mock_url=http://127.0.0.1:$mock_port
	mock POST /_mock/reset '{
		"unique_properties": {"companies": ["erp_id"], "contacts": ["erp_id"],
			"products": ["erp_id"], "deals": ["erp_id"], "line_items": ["erp_id"]},
		"properties": {"companies": [
			{"name": "nip", "type": "string"},
			{"name": "price_level", "type": "string"},
			{"name": "credit_limit", "type": "number"},
			{"name": "customer_since", "type": "date"},
			{"name": "last_order_at", "type": "datetime"},
			{"name": "vip", "type": "bool"}]},
		"max_per_window": 100, "window_ms": 10000, "daily_limit": 0}' >/dev/null
	echo "    $mock_url: unique property erp_id on companies, contacts, products, deals,"
	echo "    line items; company properties nip, price_level, credit_limit, ...;"
	echo "    rate limit 100 calls per 10 s (HubSpot Free)"

	# --- the cluster -------------------------------------------------------
	say "Creating a PostgreSQL cluster with erpcrm preloaded"
	pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	export PGPORT=$pg_port
	printf 'test-token\n' >"$work/token"
	chmod 600 "$work/token"
	initdb -D "$work/data" -A trust -E UTF8 --locale=C --no-sync >"$work/initdb.log" 2>&1 \
		|| { cat "$work/initdb.log" >&2; die "initdb failed"; }
	cat >>"$work/data/postgresql.conf" <<-EOF
		listen_addresses = ''
		port = $pg_port
		unix_socket_directories = '$work'
		fsync = off
		shared_preload_libraries = 'erpcrm'
		erpcrm.database = 'postgres'
		erpcrm.hubspot_url = '$mock_url'
		erpcrm.token_file = '$work/token'
		erpcrm.max_calls_per_10s = 80
		erpcrm.batch_size = 10
		erpcrm.retry_base = '200ms'
		erpcrm.retry_max = '5s'
		erpcrm.poll_interval = '1s'
	EOF
	grep -E '^(shared_preload|erpcrm\.)' "$work/data/postgresql.conf" | sed 's/^/    /'
	echo "    (batch size 10 so that a few hundred rows take more than 80 calls:"
	echo "     the client-side limiter has something to do)"
	pg_ctl -D "$work/data" -l "$work/server.log" -w -t 30 start >/dev/null \
		|| die "the cluster did not start"
	echo "    cluster up on unix socket $work/.s.PGSQL.$pg_port"

	# --- the ERP --------------------------------------------------------------
	say "Loading the sample ERP, its mapping views and erpcrm.map/associate/watch"
	psql_q -f "$src/erp.sql" >/dev/null
	psql_t -c "SELECT name AS mapping, source::text AS view, object_type, on_delete FROM erpcrm.mapping ORDER BY mapping_id"
	psql_t -f "$src/data.sql"

	say "Initial load: the worker sends every row (live, once a second)"
	monitor "initial load"
	echo "    (the mock's per-second limit, 10 calls, paces the worker; its own limit"
	echo "     stops it at 80 calls in any 10 s, below HubSpot's 100)"

	# --- the burst ----------------------------------------------------------
	say "HubSpot will refuse product $BAD_SKU (mock fault reject_ids)"
	mock POST /_mock/faults "{\"reject_ids\": [\"$BAD_SKU\"]}" >/dev/null
	say "A burst of ERP changes: new customers, new price list, orders, a delete"
	echo "    8 new customers with 20 contacts; new price list for cables and cement;"
	echo "    12 customers move up a price level; 30 one-row order transactions;"
	echo "    a buyer moves to another customer; 5 new products ($BAD_SKU among them);"
	echo "    a product deleted, a customer blocked, a web-shop contact deleted"
	psql_q -f "$src/burst.sql" >/dev/null
	monitor "burst"

	say "erpcrm.failures: the refused product, with HubSpot's message"
	psql_t -x -P format=wrapped -P columns=96 -c "SELECT mapping, erp_id, http_status, error_category, error_message, attempts,
		to_char(error_at, 'HH24:MI:SS') AS error_at FROM erpcrm.failures"
	[ "$(psql_v "SELECT count(*) FROM erpcrm.failures WHERE erp_id = '$BAD_SKU'")" = 1 ] \
		|| die "product $BAD_SKU is not in erpcrm.failures"
	[ "$(psql_v "SELECT count(*) FROM erpcrm.failures")" = 1 ] \
		|| die "more failures than the one product HubSpot was told to refuse"

	say "The fault is cleared; SELECT erpcrm.requeue_failed()"
	mock POST /_mock/faults '{}' >/dev/null
	psql_t -c "SELECT erpcrm.requeue_failed()"
	monitor "requeue"
	psql_t -c "SELECT '$BAD_SKU' AS erp_id, state, hubspot_id, attempts, to_char(last_synced_at, 'HH24:MI:SS') AS synced_at FROM erpcrm.key_status('products', '$BAD_SKU')"
	[ "$(psql_v "SELECT state FROM erpcrm.key_status('products', '$BAD_SKU')")" = synced ] \
		|| die "product $BAD_SKU did not sync after the requeue"

	# --- the result ------------------------------------------------------------
	say "erpcrm.status"
	psql_t -c "SELECT mapping, object_type, paused, unfolded, pending, in_flight, failed, synced, archived,
		coalesce(oldest_pending_age::text, '-') AS oldest_pending, to_char(last_success, 'HH24:MI:SS') AS last_success
		FROM erpcrm.status ORDER BY mapping"
	say "erpcrm.worker"
	psql_t -x -c "SELECT pid, database, state, detail, to_char(started_at, 'HH24:MI:SS') AS started_at,
		to_char(last_call, 'HH24:MI:SS.MS') AS last_call, window_remaining, daily_remaining,
		calls, rate_limited, objects_sent FROM erpcrm.worker"
	say "erpcrm.api_log: the last calls"
	psql_t -c "SELECT * FROM (SELECT to_char(called_at, 'HH24:MI:SS.MS') AS at, method, path, http_status AS status,
		round(latency_ms::numeric, 1) AS ms, inputs, coalesce(error_category, '') AS error, mapping
		FROM erpcrm.api_log ORDER BY called_at DESC LIMIT 8) l ORDER BY at"
	psql_t -c "SELECT count(*) AS calls, sum(inputs) AS inputs, count(*) FILTER (WHERE http_status = 429) AS answered_429,
		count(*) FILTER (WHERE http_status >= 400) AS errors FROM erpcrm.api_log"

	say "What HubSpot (the mock) holds now"
	hubspot_report

	check_result
	say "Demo finished in $((SECONDS - started)) s"
}

# psql: quiet, no ~/.psqlrc, stop at the first error.
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
# ... as a table for the reader (indented)
psql_t() { psql_q -P footer=off -P null='' "$@" | sed 's/^/    /'; }
# ... one bare value
psql_v() { psql_q -A -t -c "$1"; }

# Talk to the mock's control API: mock METHOD PATH [JSON]
mock() {
	python3 - "$mock_url" "$@" <<'PY'
import sys, urllib.request, urllib.error
base, method, path = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(base + path, data=data, method=method,
                             headers={"Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=30) as r:
        sys.stdout.write(r.read().decode())
except (urllib.error.URLError, OSError) as e:
    body = e.read().decode() if isinstance(e, urllib.error.HTTPError) else ""
    sys.exit("mock %s %s: %s %s" % (method, path, e, body))
PY
}

# One line a second until erpcrm.wait_for_sync says done; fails after
# SYNC_TIMEOUT seconds.
monitor() {
	local what=$1 t0=$SECONDS out finished line
	while :; do
		out=$(psql_q -A -t \
			-c "SELECT erpcrm.wait_for_sync('1 second')" \
			-c "SELECT format('queue %4s  synced %4s  failed %s  archived %2s | calls %3s  last 10 s %2s  429s %s | %s',
					sum(s.unfolded + s.pending + s.in_flight), sum(s.synced), sum(s.failed), sum(s.archived),
					w.calls, (SELECT count(*) FROM erpcrm.api_log WHERE called_at > clock_timestamp() - interval '10 s'),
					w.rate_limited, w.state || CASE WHEN w.detail <> '' THEN ': ' || left(regexp_replace(w.detail, '^/\\S+: ', ''), 50) ELSE '' END)
				FROM erpcrm.status s, erpcrm.worker w
				GROUP BY w.calls, w.rate_limited, w.state, w.detail") \
			|| die "cannot query erpcrm ($what)"
		finished=${out%%$'\n'*}
		line=${out#*$'\n'}
		printf '    %3ss  %s\n' "$((SECONDS - t0))" "$line"
		[ "$finished" = t ] && break
		[ $((SECONDS - t0)) -lt "$SYNC_TIMEOUT" ] \
			|| die "$what: not synced after $SYNC_TIMEOUT s"
	done
}

# Objects, associations, calls and 429s, three companies.
hubspot_report() {
	python3 - "$mock_url" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(path):
    with opener.open(base + path, timeout=30) as r:
        return json.load(r)
st = get("/_mock/stats")
assoc = get("/_mock/associations")["results"]
print("    %-12s %7s %9s" % ("object", "active", "archived"))
for t in ("companies", "contacts", "products"):
    o = st["objects"].get(t, {"active": 0, "archived": 0})
    print("    %-12s %7d %9d" % (t, o["active"], o["archived"]))
pairs = {(a["fromId"], a["toId"]) for a in assoc
         if a["fromType"] == "contacts" and a["toType"] == "companies"}
print("    associations contact -> company: %d" % len(pairs))
print("    API calls: %d (%s), inputs %d" % (st["calls"], ", ".join(
    "%s: %d" % kv for kv in st["byStatus"].items()), st["inputs"]))
print("    429 answers: %d   busiest %d-s window: %d calls as HubSpot counts them"
      " (HubSpot allows 100, erpcrm.max_calls_per_10s = 80)"
      % (st["rateLimited"], st["windowMs"] // 1000, st["maxWindowCalls"]))
companies = get("/_mock/objects/companies")["results"]
by_erp = {c["properties"].get("erp_id"): c for c in companies}
contacts_of = {}
for f, t in pairs:
    contacts_of[t] = contacts_of.get(t, 0) + 1
print()
print("    three companies as HubSpot shows them:")
for key in ("1", "3", "81"):
    c = by_erp.get(key)
    if c is None:
        print("    erp_id %s: MISSING" % key)
        continue
    p = c["properties"]
    print("    #%s %s%s" % (c["id"], p.get("name"), "  [archived]" if c["archived"] else ""))
    for k in ("erp_id", "nip", "domain", "city", "price_level", "credit_limit",
              "vip", "customer_since", "last_order_at"):
        print("        %-15s %s" % (k, p.get(k) if p.get(k) not in (None, "") else "-"))
    print("        %-15s %d" % ("contacts", contacts_of.get(c["id"], 0)))
PY
}

# HubSpot holds what the mapping views say: every key once, the same values
# (contacts deleted in the ERP stay: their mapping keeps them).
check_result() {
	psql_v "SELECT json_build_object(
		'companies', (SELECT json_object_agg(erp_id, json_build_object('name', name, 'nip', nip,
						'price_level', price_level, 'credit_limit', credit_limit)) FROM erp.hs_companies),
		'contacts', (SELECT json_object_agg(erp_id, json_build_object('email', email)) FROM erp.hs_contacts),
		'products', (SELECT json_object_agg(erp_id, json_build_object('name', name, 'price', price)) FROM erp.hs_products),
		'kept', (SELECT coalesce(json_agg(s.erp_id), '[]') FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
				  WHERE m.name = 'contacts' AND s.state = 'synced'
					AND NOT EXISTS (SELECT FROM erp.hs_contacts c WHERE c.erp_id::text = s.erp_id)))" \
		>"$work/expected.json"
	python3 - "$mock_url" "$work/expected.json" <<'PY' || die "HubSpot does not hold what the ERP says"
import json, sys, urllib.request
from decimal import Decimal
base = sys.argv[1]
expected = json.load(open(sys.argv[2]))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def get(path):
    with opener.open(base + path, timeout=30) as r:
        return json.load(r)
def same(want, have):
    if want is None:
        return have in (None, "")
    if isinstance(want, (int, float)):
        try:
            return Decimal(str(want)) == Decimal(have)
        except Exception:
            return False
    return str(want) == have
problems = []
for t in ("companies", "contacts", "products"):
    held = {}
    for o in get("/_mock/objects/" + t)["results"]:
        if not o["archived"]:
            held.setdefault(o["properties"].get("erp_id"), []).append(o)
    want = expected[t]
    for key, props in want.items():
        objs = held.get(key, [])
        if len(objs) != 1:
            problems.append("%s %s: %d objects in HubSpot" % (t, key, len(objs)))
            continue
        for name, value in props.items():
            if not same(value, objs[0]["properties"].get(name)):
                problems.append("%s %s: %s is %r in HubSpot, %r in the ERP"
                                % (t, key, name, objs[0]["properties"].get(name), value))
    extra = set(held) - set(want) - (set(expected["kept"]) if t == "contacts" else set())
    if extra:
        problems.append("%s: %d objects in HubSpot that the ERP does not have (%s)"
                        % (t, len(extra), ", ".join(sorted(map(str, extra))[:5])))
st = get("/_mock/stats")
if st["rateLimited"]:
    problems.append("HubSpot answered 429 %d times" % st["rateLimited"])
if st["maxWindowCalls"] > 100:
    problems.append("%d calls in one 10-s window, HubSpot allows 100" % st["maxWindowCalls"])
for p in problems[:20]:
    print("    " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
	echo
	echo "    check: every company, contact and product of the views is in HubSpot once, with the"
	echo "    ERP's values; nothing else is active there; no 429, no window over HubSpot's limit"
}

# Stop the cluster and the mock, always; show the logs when something failed.
cleanup() {
	local rc=$?
	set +e
	trap - INT TERM
	if [ "$rc" -ne 0 ]; then
		if [ -z "${said:-}" ]; then
			case $rc in
			130|143) printf '\ndemo: interrupted\n' >&2 ;;
			*) printf '\ndemo: FAILED (exit %s): see the error above\n' "$rc" >&2 ;;
			esac
		fi
		if [ -f "$work/server.log" ]; then
			echo "--- last lines of the server log ($work/server.log)" >&2
			tail -n 40 "$work/server.log" >&2
		fi
		if [ -s "$work/mock.err" ]; then
			echo "--- last lines of the mock's log" >&2
			tail -n 20 "$work/mock.err" >&2
		fi
	fi
	if [ -f "$work/data/postmaster.pid" ]; then
		pg_ctl -D "$work/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
			|| pg_ctl -D "$work/data" -m immediate -w stop >/dev/null 2>&1
	fi
	if [ -n "$mock_pid" ]; then
		kill "$mock_pid" 2>/dev/null
		wait "$mock_pid" 2>/dev/null
	fi
	exit "$rc"
}

# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------
if [ "${1:-}" = "--run" ]; then
	run_demo "$2"
	exit 0
fi

cd "$(dirname "$0")/.."
top=$(pwd)

# A private work directory with what the demo needs, removed at the end.
make_work() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/erpcrm-demo.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	mkdir "$work/src"
	cp "$top/tests/demo.sh" "$top/tests/mock/hubspot_mock.py" "$top"/tests/demo/*.sql "$work/src/"
}

# Run the demo (the command given) and wait for it.  A signal to this shell
# is passed on to the demo, which stops its cluster and mock, and only then
# is the work directory removed.
run_and_wait() {
	local child status
	trap 'pass_on TERM' TERM INT HUP
	"$@" &
	child=$!
	while :; do
		status=0
		wait "$child" || status=$?
		kill -0 "$child" 2>/dev/null || break
	done
	return "$status"
}
pass_on() {
	[ -s "$work/demo.pid" ] && kill -"$1" "$(cat "$work/demo.pid")" 2>/dev/null
	return 0
}

if [ "$(id -u)" = 0 ]; then
	export PATH="$PATH:/usr/sbin:/sbin"
	missing=""
	for p in $PACKAGES; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		say "Installing:$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086  # one word per package
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
	pg_bin=$PG_BIN_DEFAULT
	say "Building and installing erpcrm"
	# build as the owner of the tree, so that no root-owned files are left in it
	owner=$(stat -c %U "$top")
	if [ "$owner" != root ] && id "$owner" >/dev/null 2>&1; then
		runuser -u "$owner" -- make -s -C "$top" PG_CONFIG="$pg_bin/pg_config"
	else
		make -s -C "$top" PG_CONFIG="$pg_bin/pg_config"
	fi
	make -s -C "$top" install PG_CONFIG="$pg_bin/pg_config" >/dev/null
	make_work
	chown -R postgres: "$work"
	status=0
	run_and_wait runuser -u postgres -- env PATH="$pg_bin:/usr/local/bin:/usr/bin:/bin" \
		bash "$work/src/demo.sh" --run "$work" || status=$?
	exit $status
fi

# Not root: erpcrm must already be installed.
pg_config=${PG_CONFIG:-$PG_BIN_DEFAULT/pg_config}
[ -x "$pg_config" ] || pg_config=$(command -v pg_config) \
	|| die "pg_config not found: install postgresql-server-dev-15, or run 'make demo' as root"
pg_bin=$("$pg_config" --bindir)
if [ ! -f "$("$pg_config" --sharedir)/extension/erpcrm.control" ] \
	|| [ ! -f "$("$pg_config" --pkglibdir)/erpcrm.so" ]; then
	die "erpcrm is not installed for $pg_config: run 'make install' as root, or 'make demo' as root"
fi
command -v python3 >/dev/null || die "python3 is needed for the HubSpot mock"
make_work
status=0
PATH="$pg_bin:$PATH" run_and_wait bash "$work/src/demo.sh" --run "$work" || status=$?
exit $status

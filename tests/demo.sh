#!/usr/bin/env bash
# make demo: erpcrm end to end, the ERP of a Polish distributor synced to
# HubSpot.
#
# As root (a fresh Debian 12 machine): installs the Debian packages that are
# missing, builds and installs erpcrm, then runs the demo as the user
# "postgres" (initdb refuses root).  As another user: runs the demo directly
# (erpcrm must be installed: make install).
#
# The demo works in a temporary directory that is removed at the end: a
# throw-away cluster listening on a unix socket only, with erpcrm preloaded;
# the mapping guide's ERP (examples/erp.sql, examples/mappings.sql) filled
# with thousands of rows (tests/demo/data.sql); erpcrm.check_connection()
# and erpcrm.setup_hubspot(); the initial load, live; one invoice line that
# HubSpot refuses, fixed and requeued; a business day of ERP changes
# (tests/demo/burst.sql), live; the way back (examples/subscriptions.sql: a
# deal won by hand becomes an ERP order, whose status and invoice go back
# onto that deal); what HubSpot holds at the end, and a check
# that it holds what the ERP's views say.
#
# HubSpot is a local mock (tests/mock/hubspot_mock.py) with the Free tier's
# rate limit, 100 calls per 10 s, and records that sales "made by hand"
# before the ERP was connected: a company, a contact and deals.
#
# With HUBSPOT_TOKEN set (a private app's access token), the demo targets
# that real portal instead, with a smaller data set, after
# erpcrm.check_connection() says every check is passed.  It writes sample
# records there: use a test portal.  Mock-only steps (records made by hand,
# the refused line, the mock's own report and check) are skipped, and the
# demo archives its records at the end unless HUBSPOT_KEEP=1.  HUBSPOT_URL
# overrides the API's address (default https://api.hubapi.com).
# shellcheck disable=SC2317  # cleanup and pass_on run from traps
set -euo pipefail

PACKAGES="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libcjson-dev python3 make gcc"

# What sales typed into HubSpot by hand: tests/demo/data.sql has the same
# customer 1 (Alfa-Bud) and its buyer Katarzyna.
HAND_DOMAIN=alfa-bud.pl
HAND_EMAIL=katarzyna.wisniewska@alfa-bud.pl
HAND_OWNER=75000002
BAD_LINE=FV-700/2		# the invoice line HubSpot (the mock) refuses

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\ndemo: FAILED: %s\n' "$*" >&2; said=1; exit 1; }

# ---------------------------------------------------------------------------
# The demo itself, as an unprivileged user, in the directory $1 (which holds
# src/ with the mock, the examples and the demo's files).
# ---------------------------------------------------------------------------
run_demo() {
	work=$1
	src=$work/src
	cd "$work"
	umask 077
	export PGHOST=$work PGDATABASE=postgres PGCLIENTENCODING=UTF8 PGOPTIONS='' PYTHONIOENCODING=utf-8
	unset PGSERVICE PGUSER PGPASSWORD PGHOSTADDR

	mock_pid=
	mock_url=
	started=$SECONDS
	echo $$ >"$work/demo.pid"	# for the parent, to pass on a signal
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	# The token goes to a file only the cluster's owner can read, and out of
	# the environment before anything else starts (the server would inherit
	# it).
	if [ -n "${HUBSPOT_TOKEN:-}" ]; then
		target=hubspot
		printf '%s\n' "$HUBSPOT_TOKEN" >"$work/token"
		unset HUBSPOT_TOKEN
		hubspot_url=${HUBSPOT_URL:-}
		# a small data set: a few hundred records in a real portal
		sizes=(-v customers=20 -v products=50 -v invoices=100 -v offers=5)
		sync_timeout=600
	else
		target=mock
		printf 'test-token\n' >"$work/token"
		# everything is on loopback or a unix socket: no proxy
		unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
		sizes=(-v customers=150 -v products=408 -v invoices=1500 -v offers=40)
		sync_timeout=90
	fi
	chmod 600 "$work/token"

	if [ "$target" = mock ]; then
		start_mock
	else
		say "Target: the HubSpot portal of HUBSPOT_TOKEN (${hubspot_url:-https://api.hubapi.com})"
		echo "    The demo writes sample companies, contacts, products and deals there."
		echo "    Use a test portal (a developer test account or a sandbox), not production."
	fi

	start_cluster

	# --- the ERP and its mappings --------------------------------------------
	say "The ERP: examples/erp.sql, and its mapping views: examples/mappings.sql"
	psql_q -c 'CREATE EXTENSION erpcrm' -f "$src/examples/erp.sql" -f "$src/examples/mappings.sql" >/dev/null
	if [ "$target" = hubspot ]; then
		psql_q -c "SELECT erpcrm.set_match('companies', NULL), erpcrm.set_match('contacts', NULL)" \
			-c "SELECT erpcrm.map('contacts', 'erp.hs_contacts', 'contacts', on_delete => 'archive')" >/dev/null
		echo "    In a real portal the demo adopts nothing (matching by domain and e-mail is off),"
		echo "    and contacts that leave the ERP are archived, so that it can leave nothing behind."
	fi
	psql_t -c "SELECT m.name AS mapping, m.source::text AS view, m.object_type AS hubspot, m.on_delete,
			COALESCE(string_agg(t.name || COALESCE(' as ' || a.as_property, '')
				|| CASE WHEN a.inherit_owner THEN ' (and its owner)' ELSE '' END, ', ' ORDER BY a.target_id), '')
				AS associated_to
		FROM erpcrm.mapping m
		LEFT JOIN erpcrm.association a USING (mapping_id)
		LEFT JOIN erpcrm.mapping t ON t.mapping_id = a.target_id
		GROUP BY m.mapping_id ORDER BY m.mapping_id"
	psql_t -A -t -c "SELECT format('%s watches on %s ERP tables; companies are matched by %s, contacts by %s',
			count(*), count(DISTINCT w.source),
			(SELECT match_property FROM erpcrm.mapping WHERE name = 'companies'),
			(SELECT match_property FROM erpcrm.mapping WHERE name = 'contacts'))
		FROM erpcrm.watch w"

	# --- HubSpot --------------------------------------------------------------
	say "SELECT * FROM erpcrm.check_connection()"
	psql_q -A -t -F $'\t' -c 'SELECT ok, "check", detail FROM erpcrm.check_connection()' >"$work/check.txt" \
		|| die "erpcrm.check_connection() failed"
	while IFS=$'\t' read -r ok check detail; do
		printf '    %-4s %-32s %s\n' "$([ "$ok" = t ] && echo ok || echo FAIL)" "$check" "$detail"
	done <"$work/check.txt"
	if grep -q $'^f\t' "$work/check.txt" || ! grep -q $'^t\ttoken valid\t' "$work/check.txt"; then
		die "erpcrm.check_connection() says HubSpot is not ready: fix what FAIL says (the token, its scopes) and run again"
	fi

	say "SELECT * FROM erpcrm.setup_hubspot()   (properties, property groups, the invoice pipeline)"
	psql_q -A -t -F $'\t' -c 'SELECT object_type, kind, name, result FROM erpcrm.setup_hubspot()' >"$work/setup.txt" \
		|| die "erpcrm.setup_hubspot() failed"
	show_setup <"$work/setup.txt"
	if grep -qv -e $'\tcreated$' -e $'\texists$' "$work/setup.txt"; then
		grep -v -e $'\tcreated$' -e $'\texists$' "$work/setup.txt" | sed 's/^/    /' >&2
		die "erpcrm.setup_hubspot() could not prepare HubSpot (above)"
	fi
	psql_t -A -t -c "SELECT format('erpcrm.pipeline_stage, for the views: %s = %s, stages %s', pipeline, pipeline_id,
			string_agg(stage_id, ', ' ORDER BY display_order))
		FROM erpcrm.pipeline_stage GROUP BY pipeline, pipeline_id"

	# --- what sales did by hand, and a line HubSpot will refuse ---------------
	sales_deals='{}'
	echo '{}' >"$work/handmade.json"
	if [ "$target" = mock ]; then
		made_by_hand
		say "HubSpot will refuse invoice line $BAD_LINE (the mock's reject_ids fault: a validation rule)"
		mock POST /_mock/faults "{\"reject_ids\": [\"$BAD_LINE\"]}" >/dev/null
	fi

	# --- the data ---------------------------------------------------------------
	say "Filling the ERP: one transaction (tests/demo/data.sql)"
	psql_q "${sizes[@]}" -v sales_deals="$sales_deals" -f "$src/data.sql" >/dev/null
	psql_t -c "SELECT (SELECT count(*) FROM erp.customers) AS customers,
			(SELECT count(*) FROM erp.persons) AS persons,
			(SELECT count(*) FROM erp.products) AS products,
			(SELECT count(*) FROM erp.orders) AS orders,
			(SELECT count(*) FROM erp.invoices WHERE corrects_id IS NULL) AS invoices,
			(SELECT count(*) FROM erp.invoices WHERE corrects_id IS NOT NULL) AS corrections,
			(SELECT count(*) FROM erp.invoice_lines) AS lines,
			(SELECT count(*) FROM erp.payments) AS payments,
			(SELECT count(*) FROM erp.offers) AS offers,
			(SELECT count(*) FROM erp.offer_lines) AS offer_lines"
	psql_t -A -t -c "SELECT format('%s rows in the mapping views: what HubSpot will hold', sum(n))
		FROM (SELECT count(*) AS n FROM erp.hs_companies UNION ALL SELECT count(*) FROM erp.hs_contacts
			UNION ALL SELECT count(*) FROM erp.hs_products UNION ALL SELECT count(*) FROM erp.hs_invoices
			UNION ALL SELECT count(*) FROM erp.hs_invoice_lines UNION ALL SELECT count(*) FROM erp.hs_sales_orders
			UNION ALL SELECT count(*) FROM erp.hs_b2b_orders UNION ALL SELECT count(*) FROM erp.hs_offers
			UNION ALL SELECT count(*) FROM erp.hs_offer_lines) v"
	if [ "$target" = mock ]; then
		[ "$(psql_v "SELECT count(*) FROM erp.hs_invoice_lines WHERE erp_id = '$BAD_LINE'")" = 1 ] \
			|| die "the data has no invoice line $BAD_LINE"
	fi

	say "Initial load: the worker sends everything (live, once a second)"
	monitor "initial load" "$sync_timeout"
	echo "    (rate limited: the worker waits for its own limit, 80 calls in any 10 s, or longer when"
	echo "     HubSpot's X-HubSpot-RateLimit-Remaining says its window is full: the calls of"
	echo "     check_connection() and setup_hubspot() count in that window too)"
	say "Batching: erpcrm.api_log by call"
	psql_t -c "SELECT method, regexp_replace(path, '^/crm/v[34]/', '') AS call, count(*) AS calls,
			sum(inputs) AS inputs, round(avg(inputs)) AS per_call,
			string_agg(DISTINCT http_status::text, ',') AS status
		FROM erpcrm.api_log GROUP BY 1, 2 ORDER BY 2, 1"
	if [ "$target" = mock ]; then
		echo "    (search: adopting records made by hand; companies/batch/read: the owner of a deal's"
		echo "     company, for invoices without a salesperson; 207: one input refused, the rest done)"
	fi

	# --- the refused line -------------------------------------------------------
	if [ "$target" = mock ]; then
		refused_line
	fi

	# --- a business day -----------------------------------------------------------
	say "The next business day in the ERP (tests/demo/burst.sql)"
	echo "    a new customer with two buyers and its first invoice (one transaction); 20 new"
	echo "    invoices; a line removed, a quantity changed; the bank statement pays the 40"
	echo "    oldest open invoices; Alfa-Bud returns goods: a correction invoice; orders"
	echo "    fulfilled and delayed; cables 7.5 % dearer at every price level; a product"
	echo "    discontinued, two new ones; credit limits; offers accepted, rejected and a new"
	echo "    one; a phone number; a buyer leaves Alfa-Bud$([ "$target" = hubspot ] \
		|| printf ' (HubSpot keeps the contact: the\n    contacts mapping says keep)')"
	corrected=$(psql_v "SELECT 'FV-' || max(id) FROM erp.invoices WHERE customer_id = 1 AND id < 10000 AND corrects_id IS NULL")
	before=$(deal_now "$corrected")
	psql_q -f "$src/burst.sql" >/dev/null
	monitor "business day" "$sync_timeout"
	echo "    the corrected invoice $corrected in HubSpot (correction KOR/D/1: goods returned):"
	echo "      before: $before"
	echo "      after:  $(deal_now "$corrected")"
	[ "$target" = hubspot ] || way_back


	# --- the result -----------------------------------------------------------------
	say "erpcrm.status"
	psql_t -c "SELECT mapping, pending, in_flight, failed, synced, archived,
			COALESCE(oldest_pending_age::text, '-') AS lag, per_second, to_char(time_left, 'MI:SS') AS time_left,
			to_char(last_success, 'HH24:MI:SS') AS last_success
		FROM erpcrm.status ORDER BY mapping"
	say "erpcrm.worker and erpcrm.api_log"
	psql_q -A -t -x -F $'\t' -c "SELECT pid, state, detail, calls, rate_limited, objects_sent, window_remaining, daily_remaining
		FROM erpcrm.worker" | show_record
	psql_t -c "SELECT count(*) AS calls, sum(inputs) AS inputs, round(sum(inputs)::numeric / count(*), 1) AS per_call,
			count(*) FILTER (WHERE http_status = 207) AS answered_207,
			count(*) FILTER (WHERE http_status = 429) AS answered_429,
			round(avg(latency_ms)::numeric, 1) AS avg_ms,
			(SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY called_at RANGE BETWEEN interval '10 s' PRECEDING AND CURRENT ROW) AS n
								   FROM erpcrm.api_log) w) AS busiest_10s
		FROM erpcrm.api_log"
	say "erpcrm.failures"
	failures_by_reason

	psql_q -A -t -f "$src/expected.sql" >"$work/expected.json"
	if [ "$target" = mock ]; then
		say "What HubSpot (the mock) holds now"
		hubspot report "$work/expected.json" "$work/handmade.json"
		say "Check: HubSpot holds what the ERP's views say"
		hubspot check "$work/expected.json" "$work/handmade.json" \
			|| die "HubSpot does not hold what the ERP says"
	else
		say "What erpcrm delivered to the portal"
		psql_t -c "SELECT m.object_type AS hubspot, count(*) FILTER (WHERE s.state = 'synced') AS synced,
				count(*) FILTER (WHERE s.state = 'archived') AS archived,
				count(*) FILTER (WHERE s.state NOT IN ('synced', 'archived')) AS other
			FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) GROUP BY 1 ORDER BY 1"
		[ "$(psql_v 'SELECT count(*) FROM erpcrm.failures')" = 0 ] \
			|| die "HubSpot refused records: see erpcrm.failures above"
		if [ -z "${HUBSPOT_KEEP:-}" ]; then
			archive_demo_records
		else
			echo "    HUBSPOT_KEEP is set: the records stay in the portal (erp_id FV-..., OF-..., ZAM-...,"
			echo "    companies 1-22 and 900, contacts and products of tests/demo/data.sql)"
		fi
	fi
	say "Demo finished in $((SECONDS - started)) s"
}

# psql: quiet, no ~/.psqlrc, stop at the first error.
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
# ... as a table for the reader (indented)
psql_t() { psql_q -P footer=off -P null='' "$@" | sed 's/^/    /'; }
# ... one bare value
psql_v() { psql_q -A -t -c "$1"; }

# The demo's HubSpot helper (report, check, the mock's control API).
hubspot() { python3 "$src/hubspot.py" "$mock_url" "$@"; }
# mock METHOD PATH [JSON]
mock() { hubspot ctl "$@"; }

start_mock() {
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
	mock_url=http://127.0.0.1:$(cat "$work/mock.port")
	hubspot_url=$mock_url
	mock POST /_mock/reset '{"max_per_window": 100, "window_ms": 10000, "daily_limit": 250000}' >/dev/null
	echo "    $mock_url: a portal with HubSpot's own properties and Sales Pipeline only;"
	echo "    HubSpot Free's rate limits: 100 calls per 10 s, 250,000 a day"
}

start_cluster() {
	say "Creating a PostgreSQL cluster with erpcrm preloaded"
	pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	export PGPORT=$pg_port
	initdb -D "$work/data" -A trust -E UTF8 --locale=C --no-sync >"$work/initdb.log" 2>&1 \
		|| { cat "$work/initdb.log" >&2; die "initdb failed"; }
	{
		echo "listen_addresses = ''"
		echo "port = $pg_port"
		echo "unix_socket_directories = '$work'"
		echo "fsync = off"
		echo "shared_preload_libraries = 'erpcrm'"
		echo "erpcrm.database = 'postgres'"
		[ -z "$hubspot_url" ] || echo "erpcrm.hubspot_url = '$hubspot_url'"
		echo "erpcrm.token_file = '$work/token'"
		echo "erpcrm.max_calls_per_10s = 80"
		echo "erpcrm.retry_base = '200ms'"
		echo "erpcrm.retry_max = '5s'"
		echo "erpcrm.poll_interval = '1s'"
		echo "erpcrm.pull_interval = '1s'"
		echo "erpcrm.pull_settle = '2s'"
	} >>"$work/data/postgresql.conf"
	grep -E '^(shared_preload|erpcrm\.)' "$work/data/postgresql.conf" | sed 's/^/    /'
	echo "    (batches of up to 100 inputs, erpcrm.batch_size's default; at most 80 calls"
	echo "     in any 10 s, below HubSpot's 100, so that other integrations have room)"
	pg_ctl -D "$work/data" -l "$work/server.log" -w -t 30 start >/dev/null \
		|| die "the cluster did not start"
	echo "    cluster up on unix socket $work/.s.PGSQL.$pg_port"
}

# setup_hubspot()'s rows (object type, kind, name, result), a line per
# object type, then the pipeline.
show_setup() {
	python3 -c '
import collections, sys, textwrap
by = collections.OrderedDict()
for line in sys.stdin:
    t, kind, name, result = line.rstrip("\n").split("\t", 3)
    by.setdefault(t, collections.OrderedDict()).setdefault((kind, result), []).append(name)
for t, rows in by.items():
    parts = []
    for (kind, result), names in rows.items():
        if kind == "property" and result == "exists":
            parts.append("%d of HubSpot\x27s own exist" % len(names))
        elif kind == "property":
            parts.append("%s %s (%s)" % (len(names) == 1 and "property" or "%d properties" % len(names),
                                         result, ", ".join(names)))
        else:
            parts.append("%s %s %s" % (kind, ", ".join(names), result))
    print(textwrap.fill("; ".join(parts), 100, initial_indent="    %-11s" % t, subsequent_indent=" " * 15))
'
}

# Sales worked in HubSpot before the ERP was connected: a company and a
# contact that erpcrm adopts by domain and e-mail, and deals that ERP orders
# were made from (the orders keep the deals' HubSpot ids).
made_by_hand() {
	local company contact d deals=() stages=(qualifiedtobuy presentationscheduled decisionmakerboughtin contractsent closedwon)
	local names=("Alfa-Bud: hala magazynowa Ożarów" "Stal-Mat: dostawa zbrojenia" "Hydro-Pol: instalacje osiedle Zielone"
		"Bud-Tech: remont szkoły" "Elektro-Serwis: oświetlenie hali")
	say "Sales' records in HubSpot, made by hand before the ERP was connected"
	company=$(mock POST /_mock/objects/companies "{\"properties\": {\"name\": \"ALFA BUD\",
		\"domain\": \"$HAND_DOMAIN\", \"hubspot_owner_id\": \"$HAND_OWNER\"}}" | json_id)
	contact=$(mock POST /_mock/objects/contacts "{\"properties\": {\"email\": \"$HAND_EMAIL\",
		\"firstname\": \"Kasia\", \"hubspot_owner_id\": \"$HAND_OWNER\"}}" | json_id)
	echo "    company #$company \"ALFA BUD\", domain $HAND_DOMAIN, owner $HAND_OWNER"
	echo "    contact #$contact \"Kasia\", $HAND_EMAIL"
	for i in 0 1 2 3 4; do
		d=$(mock POST /_mock/objects/deals "{\"properties\": {\"dealname\": \"${names[$i]}\",
			\"pipeline\": \"default\", \"dealstage\": \"${stages[$i]}\", \"amount\": \"$(( (i + 2) * 23000 ))\",
			\"hubspot_owner_id\": \"$HAND_OWNER\"}}" | json_id)
		deals+=("$d")
		echo "    deal #$d \"${names[$i]}\", ${stages[$i]}"
	done
	sales_deals="{$(IFS=,; echo "${deals[*]}")}"
	echo "    the ERP's orders ZAM/1 to ZAM/5 keep these deal ids (erp.orders.hubspot_deal_id)"
	printf '{"company": "%s", "contact": "%s", "deals": [%s]}\n' "$company" "$contact" \
		"$(printf '"%s",' "${deals[@]}" | sed 's/,$//')" >"$work/handmade.json"
}
json_id() { python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }

# The way back (examples/subscriptions.sql): a deal sales moves to won by
# hand becomes an ERP order carrying the deal's id, for the customer of the
# deal's company (read with the deal, its ERP id from erpcrm); the order's
# number and status go back onto that deal, and its invoice becomes an
# invoice deal associated to it.
way_back() {
	local d order t0 inv company
	say "The way back: the ERP subscribes to won deals (examples/subscriptions.sql)"
	psql_q -f "$src/examples/subscriptions.sql" >/dev/null
	company=$(psql_v "SELECT s.hubspot_id FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
		WHERE m.name = 'companies' AND s.erp_id = '1'")
	d=$(mock POST /_mock/objects/deals "{\"properties\": {\"dealname\": \"Alfa-Bud: regały (wygrana)\",
		\"pipeline\": \"default\", \"dealstage\": \"contractsent\", \"amount\": \"48000\"},
		\"associations\": [{\"toType\": \"companies\", \"toId\": \"$company\"}]}" | json_id)
	mock PATCH "/_mock/objects/deals/$d" '{"properties": {"dealstage": "closedwon"}}' >/dev/null
	echo "    sales moves deal #$d \"Alfa-Bud: regały (wygrana)\" of company #$company to closedwon, by hand"
	t0=$SECONDS
	until [ "$(psql_v "SELECT count(*) FROM erp.orders WHERE hubspot_deal_id = '$d'")" = 1 ]; do
		[ $((SECONDS - t0)) -lt 60 ] || die "the won deal did not become an order"
		sleep 0.5
	done
	order=$(psql_v "SELECT id FROM erp.orders WHERE hubspot_deal_id = '$d'")
	echo "    erp.deal_won made order $(psql_v "SELECT number || ' (' || status || ', ' || total || ' PLN)'
		FROM erp.orders WHERE id = $order") with hubspot_deal_id $d, after $((SECONDS - t0)) s"
	[ "$(psql_v "SELECT customer_id FROM erp.orders WHERE id = $order")" = 1 ] ||
		die "the order did not get its customer from the deal's company"
	echo "    for customer $(psql_v "SELECT k.id || ' ' || k.name FROM erp.orders o JOIN erp.customers k ON k.id = o.customer_id
		WHERE o.id = $order"), the deal's company in HubSpot"
	inv=$(psql_v "SELECT max(id) + 1 FROM erp.invoices")
	psql_q -c "INSERT INTO erp.invoices (id, number, customer_id, order_id, issued_on, due_on, net, gross)
		VALUES ($inv, 'FV/HS/$inv', 1, $order, current_date, current_date + 14, 39024.39, 48000)"
	echo "    the ERP invoices the order: FV/HS/$inv"
	monitor "the order and its invoice" "$sync_timeout"
	echo "    deal #$d in HubSpot now: $(mock GET /_mock/objects/deals | python3 -c '
import json, sys
d = [o for o in json.load(sys.stdin)["results"] if o["id"] == sys.argv[1]][0]["properties"]
print("%s, stage %s, order %s: %s" % (d.get("dealname"), d.get("dealstage"), d.get("order_number"), d.get("order_status")))' "$d")"
	echo "    invoice deal FV-$inv associated to it: $(mock GET /_mock/associations | python3 -c '
import json, sys
deals = json.load(sys.stdin)["results"]
print("yes" if any(a["fromType"] == "deals" and a["toType"] == "deals" and a["toId"] == sys.argv[1] for a in deals) else "NO")' "$d")"
	psql_t -c "SELECT subscription, handled, echoes, pending, parked, round(extract(epoch FROM lag)) AS lag_s
		FROM erpcrm.subscriptions ORDER BY 1"
}

# The line HubSpot refused: in erpcrm.failures with HubSpot's words; the
# rest of its batch was delivered.  Then the cause is fixed and the line
# requeued.
refused_line() {
	say "erpcrm.failures: the refused line, with HubSpot's message"
	psql_q -A -t -x -F $'\t' -c "SELECT mapping, erp_id, attempts, http_status, error_category,
			error_message, correlation_id, to_char(error_at, 'HH24:MI:SS') AS error_at FROM erpcrm.failures" | show_record
	[ "$(psql_v "SELECT count(*) FROM erpcrm.failures WHERE mapping = 'invoice_lines' AND erp_id = '$BAD_LINE'")" = 1 ] \
		|| die "invoice line $BAD_LINE is not in erpcrm.failures"
	[ "$(psql_v "SELECT count(*) FROM erpcrm.failures")" = 1 ] \
		|| die "more failures than the one line HubSpot was told to refuse"
	psql_t -A -t -c "SELECT format('its batch call was answered %s: %s inputs delivered, this one refused; its invoice %s is in HubSpot (%s)',
			a.http_status, a.inputs - 1, split_part('$BAD_LINE', '/', 1), s.state)
		FROM erpcrm.api_log a, erpcrm.key_status('invoices', split_part('$BAD_LINE', '/', 1)) s
		WHERE a.mapping = 'invoice_lines' AND a.http_status = 207 LIMIT 1"

	say "HubSpot's rule is fixed (the mock stops refusing); SELECT erpcrm.requeue_failed()"
	mock POST /_mock/faults '{}' >/dev/null
	psql_t -c "SELECT erpcrm.requeue_failed()"
	monitor "requeue" 30
	psql_t -c "SELECT '$BAD_LINE' AS erp_id, state, hubspot_id, attempts, to_char(last_synced_at, 'HH24:MI:SS') AS synced_at
		FROM erpcrm.key_status('invoice_lines', '$BAD_LINE')"
	[ "$(psql_v "SELECT state FROM erpcrm.key_status('invoice_lines', '$BAD_LINE')")" = synced ] \
		|| die "invoice line $BAD_LINE did not sync after the requeue"
}

# psql -A -t -x -F TAB output (name TAB value), aligned and wrapped.
show_record() {
	python3 -c '
import sys, textwrap
for line in sys.stdin:
    name, _, value = line.rstrip("\n").partition("\t")
    if not name:
        print()
        continue
    print(textwrap.fill(value, 100, initial_indent="    %-18s" % name, subsequent_indent=" " * 22,
                        break_on_hyphens=False) if value else "    " + name)
'
}

failures_by_reason() {
	if [ "$(psql_v 'SELECT count(*) FROM erpcrm.failures')" = 0 ]; then
		echo "    none"
	else
		psql_t -c "SELECT mapping, error_category, error_message, count(*) AS keys, min(erp_id) AS first_key
			FROM erpcrm.failures GROUP BY 1, 2, 3 ORDER BY 1, 2"
	fi
}

# A deal's amount and stage as HubSpot shows it (the mock), or as the
# ERP's view says it (a real portal).
deal_now() {
	if [ "$target" = mock ]; then
		psql_q -A -t -f "$src/expected.sql" >"$work/expected.json"
		hubspot deal "$work/expected.json" "$1"
	else
		psql_v "SELECT amount || ' PLN, stage ' || (SELECT stage FROM erpcrm.pipeline_stage WHERE stage_id = dealstage)
			FROM erp.hs_invoices WHERE erp_id = '$1'"
	fi
}

# One line a second until erpcrm.wait_for_sync says done: the queue (changes
# not folded yet, pending and in flight, over all mappings), synced keys,
# objects sent per second, the lag (oldest change not in HubSpot yet), calls
# in the last 10 s, 429s, what the worker does.  Fails after $2 seconds.
monitor() {
	local what=$1 limit=$2 t0=$SECONDS out finished queue synced failed lag sent now_ms calls r429 state
	local prev_sent prev_ms rate
	prev_sent=$(psql_v "SELECT objects_sent FROM erpcrm.worker")
	prev_ms=$(psql_v "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
	while :; do
		out=$(psql_q -A -t -F '|' \
			-c "SELECT erpcrm.wait_for_sync('1 second')" \
			-c "SELECT sum(s.unfolded + s.pending + s.in_flight), sum(s.synced), sum(s.failed),
					COALESCE(to_char(extract(epoch FROM max(s.oldest_pending_age)), 'FM9990.0') || ' s', '-'),
					w.objects_sent, (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
					(SELECT count(*) FROM erpcrm.api_log WHERE called_at > clock_timestamp() - interval '10 s'),
					w.rate_limited, w.state
				FROM erpcrm.status s, erpcrm.worker w
				GROUP BY w.objects_sent, w.rate_limited, w.state") \
			|| die "cannot query erpcrm ($what)"
		finished=${out%%$'\n'*}
		IFS='|' read -r queue synced failed lag sent now_ms calls r429 state <<<"${out#*$'\n'}"
		rate=$(( (sent - prev_sent) * 1000 / (now_ms > prev_ms ? now_ms - prev_ms : 1) ))
		prev_sent=$sent prev_ms=$now_ms
		printf '    %3ss  queue %5s  synced %5s  failed %s  sent %4s/s  lag %6s  calls/10s %2s  429s %s  %s\n' \
			"$((SECONDS - t0))" "$queue" "$synced" "$failed" "$rate" "$lag" "$calls" "$r429" "$state"
		[ "$finished" = t ] && break
		[ $((SECONDS - t0)) -lt "$limit" ] || die "$what: not synced after $limit s"
	done
}

# A real portal: leave it as the demo found it, apart from what
# setup_hubspot() made.  Every row leaves the views and is archived (the
# contacts mapping was switched to archive at the start; there are no orders
# on sales deals, whose mapping keeps them).
archive_demo_records() {
	say "Archiving the demo's records in the portal (HUBSPOT_KEEP=1 keeps them)"
	psql_q -c "BEGIN" \
		-c "DELETE FROM erp.offer_lines" -c "DELETE FROM erp.offers" -c "DELETE FROM erp.payments" \
		-c "DELETE FROM erp.invoice_lines" -c "UPDATE erp.invoices SET corrects_id = NULL" \
		-c "DELETE FROM erp.invoices" -c "DELETE FROM erp.orders" -c "DELETE FROM erp.persons" \
		-c "DELETE FROM erp.products" -c "DELETE FROM erp.customers" -c "COMMIT" >/dev/null
	monitor "archiving" "$sync_timeout"
	psql_t -c "SELECT m.object_type AS hubspot, count(*) FILTER (WHERE s.state = 'archived') AS archived,
			count(*) FILTER (WHERE s.state <> 'archived') AS left_over
		FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) GROUP BY 1 ORDER BY 1"
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
	rm -f "$work/token"
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
# shellcheck source=tests/lib.sh
. tests/lib.sh
# PG_CONFIG names the PostgreSQL to install into and run (lib.sh)
use_pg_config

# A private work directory with what the demo needs, removed at the end.
make_work() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/erpcrm-demo.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/src/examples"
	cp "$top/tests/demo.sh" "$top/tests/mock/hubspot_mock.py" "$top"/tests/demo/*.sql \
		"$top/tests/demo/hubspot.py" "$work/src/"
	cp -r "$top/tests/mock/hsmock" "$work/src/"
	cp "$top/examples/erp.sql" "$top/examples/mappings.sql" "$top/examples/subscriptions.sql" "$work/src/examples/"
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
	# a real portal is reached over TLS: the system's CA certificates
	[ -z "${HUBSPOT_TOKEN:-}" ] || PACKAGES="$PACKAGES ca-certificates"
	# shellcheck disable=SC2086  # one word per package
	install_missing $PACKAGES
	pg_bin=$("$PG_CONFIG" --bindir)
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
pg_config=$PG_CONFIG
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

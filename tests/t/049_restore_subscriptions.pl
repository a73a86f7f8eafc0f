# pg_dump / pg_restore of an ERP database with a subscription (the way back,
# 1.3): the restored database keeps the subscription, its owner, its cursor
# and its parked change, and its worker goes on from the cursor: what was
# handed over before the dump is not handed over again, a change made in
# HubSpot afterwards is, and the parked change can still be requeued.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock(config => { %{ ErpcrmTest::default_mock_config() },
	search_index_delay_ms => 100 });
my $pull_conf = q{
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '500ms'
};
my $old = erpcrm_node('subs_before_dump', conf => $pull_conf);
load_erp($old);


$old->safe_psql('postgres', q{
CREATE ROLE erp_integration LOGIN IN ROLE erpcrm_admin;
CREATE TABLE erp.orders (hubspot_deal_id text PRIMARY KEY, name text);
CREATE TABLE erp.handler_calls (hubspot_id text, modified_at timestamptz);
CREATE TABLE erp.allowed (hubspot_id text PRIMARY KEY);
GRANT USAGE ON SCHEMA erp TO erp_integration;
GRANT SELECT, INSERT ON erp.orders, erp.handler_calls, erp.allowed TO erp_integration;
CREATE FUNCTION erp.deal_won(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
	INSERT INTO erp.handler_calls VALUES (c.hubspot_id, c.modified_at);
	IF c.properties ->> 'dealname' LIKE 'Broken%'
	   AND NOT EXISTS (SELECT FROM erp.allowed a WHERE a.hubspot_id = c.hubspot_id) THEN
		RAISE EXCEPTION 'deal % has no customer in the ERP', c.hubspot_id;
	END IF;
	INSERT INTO erp.orders VALUES (c.hubspot_id, c.properties ->> 'dealname');
END
$$;
ALTER FUNCTION erp.deal_won(erpcrm.hubspot_change) OWNER TO erp_integration;
SET ROLE erp_integration;
SELECT erpcrm.subscribe('won_deals', 'deals', '{dealname}',
	'[{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]',
	'erp.deal_won(erpcrm.hubspot_change)');
});

my @before = (hs_new_deal('Printers'), hs_new_deal('Broken deal'), hs_new_deal('Toner'));
ok(poll_until('two orders and a parked change', sub {
	$old->safe_psql('postgres', q{SELECT (SELECT count(*) FROM erp.orders) || ' '
		|| (SELECT count(*) FROM erpcrm.parked_changes)}) eq '2 1' }),
	'before the dump: two deals handed over, one parked');
# a pull round after them, so that the cursor is past the three
my $pulls = $old->safe_psql('postgres', "SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '%/search'");
ok(poll_until('two more pulls', sub {
	$old->safe_psql('postgres', "SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '%/search'") >= $pulls + 2 }),
	'the worker pulled again');
# paused, so that the cursor stands still from here to the check after
# the restore (a pull moves it on even when it finds nothing)
$old->safe_psql('postgres', "SELECT erpcrm.pause_subscription('won_deals')");
my $state_query = q{
SELECT s.subscription || ' ' || s.owner || ' ' || s.cursor || ' ' || s.caught_up_to || ' '
	   || s.handled || ' ' || s.parked || ' ' || p.hubspot_id || ' ' || p.error_message
  FROM erpcrm.subscriptions s JOIN erpcrm.parked_changes p USING (subscription)};
my $state = $old->safe_psql('postgres', $state_query);
my $inbox_query = q{SELECT string_agg(change_id || ':' || hubspot_id || ':' || state, ',' ORDER BY change_id) FROM erpcrm.inbox};
my $inbox = $old->safe_psql('postgres', $inbox_query);

# dump; the roles first (pg_dumpall --globals-only), as the runbook says
my $dump = $old->basedir . '/erp.dump';
my $globals = $old->basedir . '/globals.sql';
$old->command_ok([ 'pg_dumpall', '--globals-only', '-f', $globals, '-d', $old->connstr('postgres') ],
	'pg_dumpall --globals-only');
$old->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $old->connstr('postgres') ], 'pg_dump');
$old->stop;

my $new = erpcrm_node('subs_restored', conf => $pull_conf);
$new->psql('postgres', slurp_file($globals));	# the bootstrap role exists already
$new->command_ok([ 'pg_restore', '--exit-on-error', '--single-transaction',
				   '-d', $new->connstr('postgres'), $dump ], 'pg_restore');
sub sql { return $new->safe_psql('postgres', $_[0]); }

is(sql($state_query), $state,
	'the subscription, its owner, its cursor, its counts and its parked change came along');
is(sql($inbox_query), $inbox, 'the inbox came along, change by change');
is(sql("SELECT paused FROM erpcrm.subscriptions"), 't', 'paused, as it was');
sql("SELECT erpcrm.resume_subscription('won_deals')");

# the restored worker goes on from the cursor
my $after = hs_new_deal('Paper');
ok(poll_until('the change made after the restore', sub {
	sql("SELECT count(*) FROM erp.orders WHERE hubspot_deal_id = '$after'") eq '1' }),
	'a change made after the restore is handed over');
$pulls = sql("SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '%/search'");
ok(poll_until('two more pulls', sub {
	sql("SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '%/search'") >= $pulls + 2 }),
	'the restored worker keeps pulling');
is(sql(q{SELECT string_agg(hubspot_id || ':' || n, ',' ORDER BY hubspot_id::bigint)
		   FROM (SELECT hubspot_id, count(*) AS n FROM erp.handler_calls GROUP BY 1) c}),
	join(',', map { "$_:1" } sort { $a <=> $b } $before[0], $before[2], $after),
	'nothing handed over before the dump is handed over again (a refused call leaves no trace)');
is(sql("SELECT min(change_id) > " . (sort { $b <=> $a } ($inbox =~ /(\d+):\d+:/g))[0]
	   . " FROM erpcrm.inbox WHERE hubspot_id = '$after'"),
	't', 'new changes get new inbox ids (the sequence came along)');

# the parked change can still be fixed and requeued
sql("INSERT INTO erp.allowed VALUES ('$before[1]')");
is(sql("SELECT erpcrm.requeue_parked('won_deals')"), '1', 'the parked change is requeued');
ok(poll_until('the requeued change', sub {
	sql("SELECT count(*) FROM erp.orders WHERE hubspot_deal_id = '$before[1]'") eq '1' }),
	'and handed over');
is(sql("SELECT count(*) FROM erp.orders"), '4', 'four orders, none twice');

$new->stop;
done_testing();

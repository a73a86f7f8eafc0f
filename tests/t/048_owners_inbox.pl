# Dead owners and the inbox's history (the way back, hardened, 1.3).
#
# A role that owns a subscription and a mapping cannot be dropped from the
# ERP database; dropped from another database of the cluster (where erpcrm
# cannot see its objects), its subscription and mapping stop with a
# problem that says so, never run as nobody, and the others go on;
# erpcrm.reassign_owned() gives them an owner and they go on from where
# they stopped.  The worker prunes handled changes past
# erpcrm.inbox_retention, keeping parked ones and each object's latest.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock(config => { %{ ErpcrmTest::default_mock_config() },
	search_index_delay_ms => 100 });
my $node = erpcrm_node('owners_inbox', conf => q{
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '500ms'
erpcrm.inbox_retention = '1min'
});
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }


# Two integration roles; erp_leaver owns nothing PostgreSQL knows of, and
# holds no grant (so that another database can drop it), only a
# subscription and a mapping: the handler and the view are in a schema
# everyone may use.
sql(q{
CREATE ROLE erp_keeper LOGIN IN ROLE erpcrm_admin;
CREATE ROLE erp_leaver LOGIN IN ROLE erpcrm_admin;
CREATE SCHEMA hooks;
GRANT USAGE ON SCHEMA hooks TO PUBLIC;
CREATE TABLE erp.took (sub text, hubspot_id text, dealname text);
CREATE FUNCTION hooks.took(c erpcrm.hubspot_change) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
BEGIN ATOMIC
	INSERT INTO erp.took VALUES (c.subscription, c.hubspot_id, c.properties ->> 'dealname');
END;
CREATE TABLE erp.gadgets (sku text PRIMARY KEY, name text);
CREATE VIEW hooks.hs_gadgets AS SELECT sku AS erp_id, name, sku AS hs_sku FROM erp.gadgets;
GRANT SELECT ON hooks.hs_gadgets TO PUBLIC;
});
for my $who (qw(keeper leaver))
{
	$node->safe_psql('postgres', qq{
SET ROLE erp_$who;
SELECT erpcrm.subscribe('${who}_deals', 'deals', '{dealname}',
	'[{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]',
	'hooks.took(erpcrm.hubspot_change)');
});
}
$node->safe_psql('postgres', q{
SET ROLE erp_leaver;
SELECT erpcrm.map('gadgets', 'hooks.hs_gadgets', 'products');
});
sql(q{SELECT erpcrm.watch('gadgets', 'erp.gadgets', 'sku')});

# --- DROP ROLE in the ERP's database is refused, and says why
my ($ret, $out, $err) = $node->psql('postgres', 'DROP ROLE erp_leaver');
isnt($ret, 0, 'DROP ROLE of the owner of a subscription and a mapping is refused');
like($err, qr/role "erp_leaver" cannot be dropped because some objects depend on it/,
	'in PostgreSQL\'s words');
like($err, qr/owner of erpcrm mapping "gadgets".*owner of erpcrm subscription "leaver_deals"/s,
	'naming what it owns');
like($err, qr/HINT:.*REASSIGN OWNED BY erp_leaver TO/, 'and how to hand it on');

# --- dropped from another database, where erpcrm cannot see its objects
$node->safe_psql('postgres', 'CREATE DATABASE elsewhere');
my $leaver = sql("SELECT oid FROM pg_roles WHERE rolname = 'erp_leaver'");
$node->safe_psql('elsewhere', 'DROP ROLE erp_leaver');
is(sql("SELECT count(*) FROM pg_roles WHERE rolname = 'erp_leaver'"), '0',
	'another database drops the role');
my $log_offset = -s $node->logfile;

my $deal = hs_new_deal('Won while the owner is gone');
sql(q{INSERT INTO erp.gadgets VALUES ('G-1', 'Gadget')});
sql(q{UPDATE erp.customers SET name = name || ' (renamed)' WHERE id = (SELECT min(id) FROM erp.customers)});
ok(poll_until('the keeper\'s subscription to hand the deal over', sub {
	sql("SELECT count(*) FROM erp.took WHERE sub = 'keeper_deals' AND hubspot_id = '$deal'") eq '1' }),
	'the other subscription goes on');
is(sql(q{SELECT erpcrm.wait_for_sync('60 seconds', 'companies')}), 't',
	'the other mappings go on');
# a later pull round of every subscription has passed
my $pulls = sql("SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '%/deals/search'");
ok(poll_until('two more pull rounds', sub {
	sql("SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '%/deals/search'") >= $pulls + 2 }),
	'the worker keeps pulling');
is(sql("SELECT count(*) FROM erp.took WHERE sub = 'leaver_deals'"), '0',
	'the subscription of the dropped owner hands nothing over');
is(sql("SELECT owner = '$leaver' AND owner_dropped FROM erpcrm.subscriptions WHERE subscription = 'leaver_deals'"),
	't', 'erpcrm.subscriptions shows its owner by OID, dropped');
like(sql("SELECT problem FROM erpcrm.subscriptions WHERE subscription = 'leaver_deals'"),
	qr/^its owner \(role $leaver\) was dropped: nothing is pulled or handed over until erpcrm.reassign_owned\('$leaver', \.\.\.\)/,
	'and says why, and what to do');
is(sql("SELECT state FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'gadgets'"),
	'pending', 'the mapping of the dropped owner waits');
like(sql("SELECT problem FROM erpcrm.status WHERE mapping = 'gadgets'"),
	qr/^its owner \(role $leaver\) was dropped/, 'erpcrm.status says why');
is(scalar(grep { ($_->{properties}{erp_id} // '') eq 'G-1' }
		  @{ mock_get('/_mock/objects/products')->{results} }), 0,
	'nothing of it reached HubSpot');
unlike(substr(slurp_file($node->logfile), $log_offset), qr/role with OID \d+ does not exist/,
	'nothing tried to run as the dropped role');

# --- reassign_owned() gives them an owner; they go on from where they stopped
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE erp_keeper; SELECT erpcrm.reassign_owned('$leaver', 'erp_integration_nobody')");
like($err, qr/role "erp_integration_nobody" does not exist/, 'a new owner must exist');
is($node->safe_psql('postgres', "SET ROLE erp_keeper; SELECT erpcrm.reassign_owned('$leaver', 'erp_keeper')"),
	'2', 'an erpcrm_admin hands the dropped role\'s two objects to itself');
ok(poll_until('the subscription to go on', sub {
	sql("SELECT count(*) FROM erp.took WHERE sub = 'leaver_deals' AND hubspot_id = '$deal'") eq '1' }),
	'the subscription hands over the change made while it was stopped');
is(sql(q{SELECT erpcrm.wait_for_sync('60 seconds', 'gadgets')}), 't', 'the mapping delivers');
is(scalar(grep { ($_->{properties}{erp_id} // '') eq 'G-1' }
		  @{ mock_get('/_mock/objects/products')->{results} }), 1,
	'what waited reaches HubSpot');
is(sql("SELECT string_agg(DISTINCT owner, ',') || ' ' || bool_or(owner_dropped) FROM erpcrm.subscriptions"),
	'erp_keeper false', 'both subscriptions belong to erp_keeper now');

# --- the inbox's history: handled changes past the retention (1 minute)
# are pruned by the worker; parked ones and each object's latest stay
my $sub = sql("SELECT subscription_id FROM erpcrm.subscription WHERE name = 'keeper_deals'");
sql(qq{
INSERT INTO erpcrm.inbox (subscription_id, hubspot_id, modified_at, properties, changed, state, handled_at)
SELECT $sub, 'old-' || (i % 50), '2025-01-01'::timestamptz + i * interval '1 minute', '{}', '{}',
	   'done', now() - interval '2 hours'
  FROM generate_series(1, 2500) AS i;
INSERT INTO erpcrm.inbox (subscription_id, hubspot_id, modified_at, properties, changed, state, handled_at,
	error_message)
VALUES ($sub, 'old-0', '2024-01-01', '{}', '{}', 'parked', now() - interval '2 hours', 'refused');
});
ok(poll_until('the worker to prune the history', sub {
	sql("SELECT count(*) FROM erpcrm.inbox WHERE hubspot_id LIKE 'old-%' AND state = 'done'") eq '50' }, 120),
	'handled changes past erpcrm.inbox_retention are pruned, over several rounds');
is(sql(q{SELECT count(DISTINCT hubspot_id) || ' ' || bool_and(modified_at >= '2025-01-02 16:00+00')
		   FROM erpcrm.inbox WHERE hubspot_id LIKE 'old-%' AND state = 'done'}),
	'50 true', 'the latest change of each object stays');
is(sql("SELECT count(*) FROM erpcrm.parked_changes WHERE hubspot_id = 'old-0'"), '1',
	'a parked change stays, however old');
is(sql("SELECT count(*) FROM erp.took WHERE hubspot_id = '$deal'"), '2',
	'and what was handed over recently is there');

$node->stop;
done_testing();

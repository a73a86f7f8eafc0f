# Companies, contacts and products reach HubSpot: insert, update, delete,
# associations, values exactly as HubSpot expects them, 207 partial failures.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use File::Basename qw(dirname);

start_mock();
my $node = erpcrm_node('delivery');
load_erp($node);

# --- insert
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit, customer_since, vip)
VALUES (1, 'Alfa sp. z o.o.', '5260001246', 'alfa.pl', 'A', 50000, '2019-03-01', true),
	   (2, 'Beta S.A.', NULL, 'beta.com.pl', 'B', 12000.5, NULL, false);
INSERT INTO erp.persons VALUES (10, 1, 'anna@alfa.pl', 'Anna', 'Nowak'),
	(11, 2, 'piotr@beta.com.pl', 'Piotr', 'Wiśniewski'),
	(12, NULL, 'solo@example.com', 'Solo', NULL);
INSERT INTO erp.products VALUES ('P-1', 'Śruba M8', 0.35), ('P-2', 'Nakrętka', 0.12);
});
ok(wait_synced($node), 'inserted rows are synced');
state_ok($node, 'HubSpot holds the inserted companies, contacts, products and associations');

my $status = $node->safe_psql('postgres',
	"SELECT mapping || ':' || synced || '/' || pending || '/' || failed FROM erpcrm.status ORDER BY 1");
is($status, "companies:2/0/0\ncontacts:3/0/0\nproducts:2/0/0", 'erpcrm.status counts synced keys');

my $ids = $node->safe_psql('postgres',
	"SELECT count(*) FROM erpcrm.sync_state WHERE hubspot_id IS NULL");
is($ids, '0', 'every key knows its HubSpot id');

# calls were batched: one upsert per mapping and one association call
my $calls = ErpcrmTest::mock_get('/_mock/requests')->{results};
my @upserts = grep { $_->{path} =~ m{/batch/upsert$} } @$calls;
is(scalar(@upserts), 3, 'one batch upsert per mapping');
my @assoc = grep { $_->{path} =~ m{^/crm/v4/associations/contacts/companies/batch/associate/default$} } @$calls;
is(scalar(@assoc), 1, 'associations are created in one v4 batch call');
is($assoc[0]{inputs}, 2, 'only contacts with a company are associated');

# --- update, and a contact moving to another company
$node->safe_psql('postgres', q{
UPDATE erp.customers SET name = 'Alfa Sp. z o.o.', credit_limit = 75000 WHERE id = 1;
UPDATE erp.products SET price = 0.40 WHERE sku = 'P-1';
UPDATE erp.persons SET customer_id = 2 WHERE id = 10;
});
ok(wait_synced($node), 'updates are synced');
state_ok($node, 'HubSpot holds the updated values');
my $companies = ErpcrmTest::mock_get('/_mock/objects/companies')->{results};
is(scalar(@$companies), 2, 'updates upsert the same objects, no duplicates');
my %company_id = map { $_->{properties}{erp_id} => $_->{id} } @$companies;
my ($anna) = grep { ($_->{properties}{erp_id} // '') eq '10' }
  @{ ErpcrmTest::mock_get('/_mock/objects/contacts')->{results} };
my @anna_links = grep { $_->{fromType} eq 'contacts' && $_->{fromId} eq $anna->{id} && $_->{toType} eq 'companies' }
  @{ ErpcrmTest::mock_get('/_mock/associations')->{results} };
is(join(',', map { $_->{toId} } @anna_links), $company_id{2},
	'a contact that moved to another company is associated to the new one only');

# a change that keeps the company makes no association call
my $seen = ErpcrmTest::mock_get('/_mock/requests')->{lastSeq};
$node->safe_psql('postgres', "UPDATE erp.persons SET last_name = 'Nowak-Wiśniewska' WHERE id = 10");
ok(wait_synced($node), 'a contact update is synced');
my @new_calls = grep { $_->{seq} > $seen } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
is(join(' ', map { $_->{path} } @new_calls), '/crm/v3/objects/contacts/batch/upsert',
	'an unchanged association is not made again: one call in all');

# --- delete: archived (companies, products), kept (contacts)
$node->safe_psql('postgres', q{
DELETE FROM erp.products WHERE sku = 'P-2';
UPDATE erp.customers SET active = false WHERE id = 2;
DELETE FROM erp.persons WHERE id = 12;
});
ok(wait_synced($node), 'deletes are synced');
state_ok($node, 'keys that left the views are archived or kept as mapped');
my $p2_id = $node->safe_psql('postgres', "SELECT hubspot_id FROM erpcrm.key_status('products', 'P-2')");
my ($p2) = grep { $_->{id} eq $p2_id }
  @{ ErpcrmTest::mock_get('/_mock/objects/products')->{results} };
ok($p2 && $p2->{archived}, 'deleted product is archived in HubSpot');
is($p2->{properties}{erp_id}, undef, 'its erp_id was cleared first, so that the key can come back as a new object');
my ($solo) = grep { ($_->{properties}{erp_id} // '') eq '12' }
  @{ ErpcrmTest::mock_get('/_mock/objects/contacts')->{results} };
ok($solo && !$solo->{archived}, 'deleted contact is kept (on_delete => keep)');
is($node->safe_psql('postgres',
	"SELECT state FROM erpcrm.key_status('products', 'P-2')"), 'archived',
	'key_status says archived');
is($node->safe_psql('postgres', "SELECT hubspot_id FROM erpcrm.key_status('contacts', '12')"),
	$solo->{id}, 'a kept key keeps its HubSpot id');

# a contact of a company that is not in its view (inactive) is sent without
# the association, instead of waiting for a company that will never come
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, active) VALUES (99, 'Nieaktywna', false);
INSERT INTO erp.persons VALUES (13, 99, 'ktos@nieaktywna.pl', 'Ktoś', NULL);
});
ok(wait_synced($node, 30), 'a contact of an inactive company does not wait forever');
is($node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('contacts', '13')"), 'synced',
	'it is synced, without the association');

# --- values as HubSpot expects them
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit, customer_since, last_order_at, vip)
VALUES (3, E'Zakład "Łódź" \\\\ Żółć 😀\nline two\ttab', '', NULL, 'C', 1234567.891, '2024-02-29',
		'2026-11-27 13:45:01.25+01', NULL);
});
ok(wait_synced($node), 'row with special values is synced');
my ($c3) = grep { ($_->{properties}{erp_id} // '') eq '3' }
  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
is($c3->{properties}{name}, "Zakład \"Łódź\" \\ Żółć 😀\nline two\ttab",
	'text survives: Polish letters, emoji, quotes, backslash, newline, tab');
is($c3->{properties}{credit_limit}, '1234567.89', 'numeric as a plain decimal');
is($c3->{properties}{customer_since}, '2024-02-29', 'date as YYYY-MM-DD');
is($c3->{properties}{last_order_at}, '2026-11-27T12:45:01.250Z', 'timestamptz as ISO 8601 UTC');
is($c3->{properties}{vip} // '', '', 'NULL clears the property');
is($c3->{properties}{domain} // '', '', 'NULL text clears the property');
my ($c1) = grep { ($_->{properties}{erp_id} // '') eq '1' }
  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
is($c1->{properties}{vip}, 'true', 'boolean as true');

# --- 207: one bad row fails alone, with HubSpot's message
ErpcrmTest::mock_post('/_mock/faults', { reject_ids => ['P-bad'] });
$node->safe_psql('postgres', q{
INSERT INTO erp.products VALUES ('P-3', 'Podkładka', 0.05), ('P-bad', 'Zła', 1), ('P-4', 'Nit', 0.02);
});
ok(poll_until('the bad row to fail', sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.failures") eq '1' }),
	'the rejected row is failed');
ok(wait_synced($node), 'the rest is synced');
my $f = $node->safe_psql('postgres',
	"SELECT mapping, erp_id, http_status, error_category, error_message <> '' FROM erpcrm.failures");
is($f, 'products|P-bad|400|VALIDATION_ERROR|t', 'erpcrm.failures names the key with HubSpot\'s error');
is($node->safe_psql('postgres',
	"SELECT string_agg(erp_id || '=' || state, ',' ORDER BY erp_id) FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'products' AND erp_id IN ('P-3','P-4','P-bad')"),
	'P-3=synced,P-4=synced,P-bad=failed', 'only the rejected input failed');

# not retried on its own: the worker delivers a later change, and the
# failed key still has its one attempt and its first error
my $bad = "SELECT state, attempts, error_at FROM erpcrm.key_status('products', 'P-bad')";
my $before = $node->safe_psql('postgres', $bad);
$node->safe_psql('postgres', "INSERT INTO erp.products VALUES ('P-5', 'Zawleczka', 0.01)");
ok(poll_until('P-5 synced', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('products', 'P-5')") eq 'synced' }),
	'a change after the failure is delivered');
like($before, qr/^failed\|1\|/, 'the rejected key failed on its first attempt');
is($node->safe_psql('postgres', $bad), $before, 'a failed key is not retried by itself');

# fixed in HubSpot's eyes, then requeued
ErpcrmTest::mock_post('/_mock/faults', {});
is($node->safe_psql('postgres', "SELECT erpcrm.requeue_failed('products')"), '1', 'requeue_failed counts');
ok(wait_synced($node), 'requeued key is synced');
state_ok($node, 'HubSpot holds everything after the requeue');
is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.failures"), '0', 'no failures left');

# --- the api log and the worker view
my $log = $node->safe_psql('postgres',
	"SELECT count(*) > 0, bool_and(latency_ms >= 0), bool_and(correlation_id IS NOT NULL) FROM erpcrm.api_log");
is($log, 't|t|t', 'erpcrm.api_log records the calls with latency and correlation id');
my $w = $node->safe_psql('postgres',
	"SELECT state, calls > 0, objects_sent > 0, pid IS NOT NULL FROM erpcrm.worker");
is($w, 'idle|t|t|t', 'erpcrm.worker shows the worker idle after work');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm worker' AND datname = 'postgres'"),
	'1', 'the worker is visible in pg_stat_activity');

# --- every query of the Prometheus exporter file runs, as a monitor, and
# gives the columns its metrics name
$node->safe_psql('postgres', 'CREATE ROLE exporter LOGIN IN ROLE erpcrm_monitor');
my $yaml = slurp_file(dirname(__FILE__) . '/../../monitoring/postgres_exporter.yaml');
my @queries = $yaml =~ /^  query: "(.*)"$/mg;
is(scalar(@queries), 5, 'the exporter file has its five queries');
for my $block (split /^(?=\S)/m, $yaml)
{
	next unless $block =~ /^(\w+):\n  query: "(.*)"$/m;
	my ($name, $query) = ($1, $2);
	my @metrics = $block =~ /^    - (\w+):$/mg;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET ROLE exporter; SELECT " . join(', ', @metrics) . " FROM ($query) q",
		extra_params => ['-A']);
	is($ret, 0, "exporter query $name runs as a monitor and has its metrics' columns") or diag($err);
}
my $depth = $node->safe_psql('postgres',
	"SELECT sum(queue_depth) FROM (" . $queries[0] . ") q");
is($depth, '0', 'queue depth is 0 once everything is delivered');

# --- a company that left its view comes back as a new HubSpot object; its
# contacts are associated to the new one
$node->safe_psql('postgres', "UPDATE erp.customers SET active = true WHERE id = 2");
ok(wait_synced($node), 'a reactivated company is synced');
state_ok($node, 'its contacts follow it to its new HubSpot object');

# --- a resync sends everything again without duplicates
is($node->safe_psql('postgres', "SELECT erpcrm.resync('companies') > 0"), 't', 'resync marks keys');
ok(wait_synced($node), 'resync completes');
state_ok($node, 'no duplicates after a resync');

# the token never reached the server log
my $logtext = slurp_file($node->logfile);
unlike($logtext, qr/test-token/, 'the token is not in the server log');

$node->stop;
done_testing();

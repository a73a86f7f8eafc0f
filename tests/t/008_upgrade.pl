# Upgrade: version 1.0 installed and working, filled with synced and
# pending keys, upgraded to the current version under a live worker.
# Nothing is lost, and the worker carries on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('upgrade');
load_erp($node, version => '1.0');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'erpcrm'"),
	'1.0', 'version 1.0 is installed');

$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip) SELECT g, 'Firma ' || g, lpad(g::text, 10, '0') FROM generate_series(1, 50) g;
INSERT INTO erp.persons SELECT g, g, 'p' || g || '@firma.pl', 'Jan', 'Nowak' FROM generate_series(1, 50) g;
INSERT INTO erp.products SELECT 'U-' || g, 'Towar ' || g, g FROM generate_series(1, 50) g;
});
ok(wait_synced($node), 'the library delivers for a 1.0 installation');
state_ok($node, 'HubSpot holds the ERP under 1.0');

# changes waiting in the outbox and in sync_state while the upgrade runs
$node->safe_psql('postgres', q{
SELECT erpcrm.pause();
UPDATE erp.customers SET name = name || ' sp. z o.o.' WHERE id <= 25;
INSERT INTO erp.products SELECT 'V-' || g, 'Nowy ' || g, g FROM generate_series(1, 20) g;
DELETE FROM erp.products WHERE sku IN ('U-1', 'U-2');
});
my $before = $node->safe_psql('postgres',
	"SELECT count(*) FROM erpcrm.sync_state WHERE state = 'synced'");
$node->safe_psql('postgres', 'SELECT erpcrm._fold()');
$node->safe_psql('postgres', "UPDATE erp.customers SET nip = '1' WHERE id = 50");

$node->safe_psql('postgres', 'ALTER EXTENSION erpcrm UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'erpcrm'"),
	'1.3', 'upgraded to the current version');
cmp_ok($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.sync_state"), '>=', $before,
	'sync state kept');
is($node->safe_psql('postgres', "SELECT state = 'pending' OR unfolded FROM erpcrm.key_status('companies', '50')"),
	't', 'a change made just before the upgrade is still queued');

$node->safe_psql('postgres', 'SELECT erpcrm.resume()');
ok(wait_synced($node), 'the worker carries on after the upgrade');
state_ok($node, 'nothing lost across the upgrade');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed');

# the new version's features work under the same worker
$node->safe_psql('postgres', q{
SELECT erpcrm.set_match('companies', 'domain');
INSERT INTO erp.customers (id, name, domain) VALUES (51, 'Omega', 'omega.pl');
});
ok(wait_synced($node), 'a 1.1 mapping option is honoured');
my $log = $node->safe_psql('postgres',
	"SELECT count(*) > 0 FROM erpcrm.api_log WHERE path LIKE '%/search'");
is($log, 't', 'the 1.1 match search is made and logged');
state_ok($node, 'HubSpot holds the ERP after using 1.1 features');

$node->stop;
done_testing();

# Failover: no worker runs on a standby; after promotion the new primary's
# worker delivers what the old primary committed but had not delivered.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $primary = erpcrm_node('primary', init => { allows_streaming => 1 });
load_erp($primary);
$primary->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(1, 20) g;
});
ok(wait_synced($primary), 'the primary delivers');

$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;

# changes committed while delivery is paused reach the standby, not HubSpot
$primary->safe_psql('postgres', q{
SELECT erpcrm.pause();
INSERT INTO erp.customers (id, name) SELECT g, 'Nowa ' || g FROM generate_series(21, 40) g;
UPDATE erp.customers SET name = 'Zmieniona' WHERE id = 1;
INSERT INTO erp.persons SELECT g, g, 'k' || g || '@x.pl', 'Ewa', 'Lis' FROM generate_series(1, 10) g;
});
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm worker'"), '0',
	'no worker runs on the standby');

$primary->stop;
$standby->promote;
$standby->safe_psql('postgres', 'SELECT erpcrm.resume()');
ok(poll_until('the worker on the new primary', sub {
	$standby->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm worker'") eq '1' }),
	'after promotion the worker runs on the new primary');
ok(wait_synced($standby), 'the new primary delivers what the old one committed');
state_ok($standby, 'after failover: nothing lost, nothing duplicated');
$standby->stop;
done_testing();

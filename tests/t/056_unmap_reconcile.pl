# A mapping dropped (erpcrm.unmap) while the worker reconciles it with
# HubSpot: the drop waits for nothing of the worker's, the worker says in the
# server log that the run ended with its mapping, keeps nothing of it, and
# goes on without a restart: it delivers and reconciles the other mappings.
#
# The drop is held open (its transaction not committed) with the run locked
# while the worker is between HubSpot's answer and recording it, or between
# two steps: either way the worker meets the dropped run when it commits.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('unmap_reconcile');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
INSERT INTO erp.products (sku, name, price)
SELECT 'P-' || lpad(i::text, 4, '0'), 'Product ' || i, i FROM generate_series(1, 1000) i;
INSERT INTO erp.customers (id, name) SELECT i, 'Firm ' || i FROM generate_series(1, 30) i;
SELECT erpcrm.resync('products');
SELECT erpcrm.resync('companies');
});
ok(wait_synced($node), 'products and companies are delivered');
my $pid = worker_pid($node);

# a slow HubSpot: each call of the reconcile takes a second and more
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1500 });
my $run = sql("SELECT erpcrm.reconcile('products')");
ok(poll_until('the run checks keys',
		sub { sql("SELECT keys_checked > 0 FROM erpcrm.reconcile_runs WHERE run_id = $run") eq 't' }),
	'the reconcile of the products is under way');

# the drop: the run is locked first, so that it cannot end meanwhile
my $log_offset = -s $node->logfile;
my ($in, $out, $err) = ('', '', '');
my $drop = IPC::Run::start(
	[ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN;\n"
  . "SELECT 'run ' || state FROM erpcrm.reconcile_run WHERE run_id = $run FOR UPDATE;\n"
  . "SELECT erpcrm.unmap('products');\n"
  . "SELECT 'dropped';\n";
ok(poll_until('the drop is made', sub { $drop->pump_nb; $out =~ /dropped/ || $err ne '' }),
	'erpcrm.unmap() does not wait for the worker')
  or diag($err);
like($out, qr/^run running$/m, 'the run was still running when its mapping was dropped');

# the worker meets the run the drop holds: it waits for the drop's commit
ok(poll_until('the worker waits for the drop',
		sub { sql(q{
SELECT count(*) FROM pg_stat_activity a
 WHERE a.backend_type = 'erpcrm worker' AND a.wait_event_type = 'Lock'}) eq '1' }),
	'the worker comes to the run while the drop is not committed');
$in .= "COMMIT;\n\\q\n";
$drop->finish;
is($drop->result(0), 0, 'the drop commits');

# the worker reports it, and goes on
ok(poll_until('the log says so', sub {
	substr(slurp_file($node->logfile), $log_offset)
	  =~ /the reconcile of mapping "products" stopped: the mapping was dropped/ }),
	'the server log says the reconcile stopped with its mapping');
unlike(substr(slurp_file($node->logfile), $log_offset), qr/ERROR|FATAL|PANIC|terminated by signal/,
	'with no error on the way');
is(sql('SELECT count(*) FROM erpcrm.mapping WHERE name = \'products\''), '0', 'the mapping is gone');
is(sql('SELECT count(*) FROM erpcrm.reconcile_run') . ' ' . sql('SELECT count(*) FROM erpcrm.drift_item'),
	'0 0', 'and nothing of its reconcile is kept');

ErpcrmTest::mock_post('/_mock/faults', {});
sql("UPDATE erp.customers SET name = 'Firm One, renamed' WHERE id = 1");
ok(wait_synced($node), 'the worker goes on delivering');
is(hs_object('companies', '1')->{properties}{name}, 'Firm One, renamed', 'the change is in HubSpot');
$run = sql("SELECT erpcrm.reconcile('companies')");
ok(poll_until('the companies are reconciled',
		sub { sql("SELECT state FROM erpcrm.reconcile_runs WHERE run_id = $run") eq 'done' }, 120),
	'and reconciling the other mappings');
is(sql('SELECT count(*) FROM erpcrm.drift'), '0', 'which found no drift');
is(worker_pid($node), $pid, 'the same worker process all along (no restart)');

ErpcrmTest::contract_log();
done_testing();

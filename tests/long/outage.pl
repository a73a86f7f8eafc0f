# Long fault run (make check-long): HubSpot is down (connections refused)
# while the ERP writes 100,000 rows.  Measured with pgbench, 100,000
# single-row INSERT transactions each:
#   - into a table erpcrm does not watch (the ERP without erpcrm);
#   - into a watched table, HubSpot up (the worker delivering meanwhile);
#   - into a watched table, HubSpot down (the worker backing off).
# Then HubSpot returns, the queue drains (time and rate), and the objects
# HubSpot holds are compared with the view, in SQL: nothing may be missing,
# duplicated or stale.  The worker's memory (RSS and memory contexts) is
# sampled before and after, to see it does not grow with the backlog.
#
# ROWS=n and OUTAGE_SECONDS=n (environment) change the figures.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename qw(dirname);
use IPC::Run;
use Time::HiRes qw(time usleep);
use ErpcrmTest;

my $rows = $ENV{ROWS} // 100_000;
my $hold = $ENV{OUTAGE_SECONDS} // 60;
my $clients = 4;

my $port = start_mock();
my $node = erpcrm_node('outage', conf => q{
erpcrm.retry_max = '5s'
log_min_messages = 'warning'
log_statement = 'none'
max_wal_size = '2GB'
});
load_erp($node);
$node->safe_psql('postgres', q{
CREATE SEQUENCE erp.customer_ids START 1000000;
CREATE TABLE erp.customers_plain (LIKE erp.customers INCLUDING ALL);
CREATE SEQUENCE erp.plain_ids;
});
my $dir = PostgreSQL::Test::Utils::tempdir();

# pgbench: $rows single-row INSERT transactions; returns tps
sub bench
{
	my ($name, $table, $seq) = @_;
	my $script = "$dir/$name.sql";
	open(my $fh, '>', $script) or die;
	print $fh "INSERT INTO $table (id, name, nip, credit_limit, customer_since, vip) VALUES "
	  . "(nextval('$seq'), 'Firma ' || :client_id || ' ' || random(), '5260001246', "
	  . "12345.67, current_date, true);\n";
	close $fh;
	my $t0 = time();
	my ($out, $err);
	IPC::Run::run([ 'pgbench', '-n', '-c', $clients, '-j', 2,
		'-t', int($rows / $clients), '-f', $script,
		'-h', $node->host, '-p', $node->port, 'postgres' ], '>', \$out, '2>', \$err)
	  or die "pgbench failed: $err";
	my ($tps) = $out =~ /tps = ([\d.]+) \(without initial connection time\)/;
	note(sprintf("%s: %d transactions in %.1f s, %.0f tps", $name, $rows, time() - $t0, $tps));
	return $tps;
}

sub worker_memory
{
	my $pid = worker_pid($node);
	my $rss = 0;
	if (open(my $fh, '<', "/proc/$pid/status"))
	{
		while (<$fh>) { $rss = $1 if /^VmRSS:\s+(\d+) kB/; }
		close $fh;
	}
	# the worker's memory contexts, logged by PostgreSQL itself
	my $offset = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	my $total = '?';
	poll_until('the memory context dump', sub {
		my $log = substr(slurp_file($node->logfile), $offset);
		($total) = $log =~ /\[$pid\][^\n]*?LOG:\s+Grand total: (\d+) bytes/ ? ($1) : ('?');
		$total ne '?' }, 20);
	return ($pid, $rss, $total);
}

# --- baseline: the same writes into a table erpcrm does not watch
my $tps_plain = bench('plain', 'erp.customers_plain', 'erp.plain_ids');

# --- HubSpot up: the worker delivers while the ERP writes
my @mem_before = worker_memory();
my $tps_up = bench('watched_up', 'erp.customers', 'erp.customer_ids');
my $t0 = time();
ok(wait_synced($node, 1200), "HubSpot up: the $rows rows are delivered");
my $drain_up = time() - $t0;

# --- HubSpot down: connections refused while the ERP writes
ErpcrmTest::mock_post('/_mock/faults', { down => 'refuse' });
my $outage_start = time();
my $tps_down = bench('watched_down', 'erp.customers', 'erp.customer_ids');
ok(poll_until('backing off', sub {
	$node->safe_psql('postgres', 'SELECT state FROM erpcrm.worker') eq 'backing off' }, 60),
	'HubSpot down: the worker backs off');
usleep(1_000_000) while time() - $outage_start < $hold;
my $backlog = $node->safe_psql('postgres',
	"SELECT pending + in_flight + unfolded FROM erpcrm.status WHERE mapping = 'companies'");
cmp_ok($backlog, '>=', $rows, 'the backlog holds every row written during the outage');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0',
	'an outage fails no key');
my $outage = time() - $outage_start;

# --- HubSpot back: the queue drains
ErpcrmTest::mock_post('/_mock/faults', {});
$t0 = time();
ok(wait_synced($node, 1800), 'HubSpot back: the queue drains');
my $drain_down = time() - $t0;
my @mem_after = worker_memory();

# --- what HubSpot holds against the view, in SQL
my $held = `python3 @{[ dirname(__FILE__) ]}/held_objects.py $port companies $dir/held.tsv`;
chomp $held;
$node->safe_psql('postgres', qq{
CREATE TABLE held (hubspot_id text, erp_id text, name text, archived boolean);
COPY held FROM '$dir/held.tsv';
CREATE INDEX ON held (erp_id);
ANALYZE held;
});
my ($expected, $missing, $duplicated, $stale, $unarchived) = split /\|/, $node->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM erp.hs_companies),
	   (SELECT count(*) FROM erp.hs_companies v
		 WHERE NOT EXISTS (SELECT FROM held h WHERE h.erp_id = v.erp_id::text AND NOT h.archived)),
	   (SELECT count(*) FROM (SELECT erp_id FROM held WHERE NOT archived
							   GROUP BY erp_id HAVING count(*) > 1) d),
	   (SELECT count(*) FROM erp.hs_companies v JOIN held h
			ON h.erp_id = v.erp_id::text AND NOT h.archived AND h.name IS DISTINCT FROM v.name),
	   (SELECT count(*) FROM held h WHERE NOT h.archived
		   AND NOT EXISTS (SELECT FROM erp.hs_companies v WHERE v.erp_id::text = h.erp_id))});
is($missing, '0', 'no company is missing in HubSpot');
is($duplicated, '0', 'no company is duplicated in HubSpot');
is($stale, '0', 'no company is stale in HubSpot');
is($unarchived, '0', 'HubSpot holds no company the ERP does not');
is($expected, 2 * $rows, 'the view holds every row written');
my $stats = ErpcrmTest::mock_get('/_mock/stats');

# the ERP's writes are not slowed by the outage (within the noise of a
# shared machine: the up run also competes with the worker for the CPU)
cmp_ok($tps_down, '>=', 0.8 * $tps_up, 'the outage does not slow the ERP down');

diag(sprintf("outage run: %d rows written with HubSpot up, %d while it was down for %.0f s "
	  . "(connections refused); ERP write throughput (%d clients, single-row INSERT "
	  . "transactions): without erpcrm %.0f tps, watched with HubSpot up %.0f tps, "
	  . "watched with HubSpot down %.0f tps (%.0f%% of up, %.0f%% of without erpcrm); "
	  . "drained %d rows in %.1f s (%.0f objects/s) after the outage, %.1f s with HubSpot up; "
	  . "HubSpot calls %d; objects compared %d: lost %d, duplicated %d, stale %d; "
	  . "worker memory (pid %s -> %s): RSS %d kB -> %d kB, memory contexts %s -> %s bytes",
	$rows, $rows, $outage, $clients, $tps_plain, $tps_up, $tps_down,
	100 * $tps_down / $tps_up, 100 * $tps_down / $tps_plain,
	$rows, $drain_down, $rows / $drain_down, $drain_up, $stats->{calls}, $expected,
	$missing, $duplicated, $stale, $mem_before[0], $mem_after[0],
	$mem_before[1], $mem_after[1], $mem_before[2], $mem_after[2]));

$node->stop;
done_testing();

# Overlap of the network with the database (worker/pipeline.c): while a
# batch is on the wire, the worker has already claimed the next one.  A
# crash then (SIGKILL of the worker, or of the whole server) with both
# batches in flight loses nothing and duplicates nothing in HubSpot.
#
# The mock holds every request for a while (slow_ms), and the test waits for
# the event it needs: the worker waiting for HubSpot's answer to an upsert
# (pg_stat_activity: active, wait event "Extension", the upsert's path),
# after the work it does while the request is on the wire.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('overlap_crash',
	conf => "erpcrm.batch_size = 20\nrestart_after_crash = on\n");
load_erp($node);

# keys of a mapping in flight (claimed, not recorded)
sub in_flight
{
	my ($mapping) = @_;
	return $node->safe_psql('postgres',
		"SELECT in_flight FROM erpcrm.status WHERE mapping = '$mapping'");
}

# Is the worker waiting for HubSpot's answer to an upsert of this object
# type (after its work of the meantime)?
sub waiting_for_answer
{
	my ($type) = @_;
	return $node->safe_psql('postgres', qq{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'erpcrm worker' AND state = 'active'
   AND wait_event_type = 'Extension'
   AND query LIKE '%/$type/batch/upsert%'}) eq '1';
}

# Wait for an upsert of companies on the wire with the next batch claimed
# (and, optionally, a condition more): the event, polled, whatever the load.
sub overlapping
{
	my ($what, $more) = @_;
	return poll_until($what, sub {
		waiting_for_answer('companies') && in_flight('companies') eq '40'
		  && (!$more || $more->()) }, 90);
}

my $next = 1;
sub add_customers
{
	my ($n) = @_;
	my $from = $next;
	$next += $n;
	$node->safe_psql('postgres', qq{
INSERT INTO erp.customers (id, name, nip)
	SELECT g, 'Firma ' || g, lpad(g::text, 10, '0') FROM generate_series($from, $from + $n - 1) g;
});
}

sub companies_in_hubspot
{
	return scalar grep { !$_->{archived} }
	  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
}

# --- the next batch of the same mapping is claimed while one is on the wire
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1500 });
add_customers(200);
ok(overlapping('two batches in flight'),
	'while a batch of 20 companies is on the wire, the next batch is claimed and read');
ok(overlapping('a later batch on the wire', sub {
		$node->safe_psql('postgres',
			"SELECT synced >= 20 FROM erpcrm.status WHERE mapping = 'companies'") eq 't' }),
	'and so on, batch after batch, the batches before recorded meanwhile');
ErpcrmTest::mock_post('/_mock/faults', {});
ok(wait_synced($node, 120), 'the queue drains');
is(companies_in_hubspot(), 200, 'HubSpot holds the 200 companies');
state_ok($node, 'with overlap: HubSpot holds exactly the ERP');

# --- SIGKILL of the worker with a batch on the wire and the next claimed
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1500 });
for my $round (1 .. 2)
{
	add_customers(60);
	$node->safe_psql('postgres', "UPDATE erp.customers SET name = name || '.' WHERE id % 5 = $round");
	ok(overlapping("round $round: two batches in flight"),
		"round $round: a batch of companies is on the wire, the next one is claimed");
	my $pid = worker_pid($node);
	kill 'KILL', $pid;
	ok(poll_until('a new worker', sub {
		my $p = eval { worker_pid($node) } // '';
		$p ne '' && $p ne $pid }, 60), "round $round: the worker is back after SIGKILL");
}
ErpcrmTest::mock_post('/_mock/faults', {});
ok(wait_synced($node, 120), 'after SIGKILL with two batches in flight, the queue drains');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed');
is(companies_in_hubspot(), $next - 1, 'no company is missing or duplicated');
state_ok($node, 'after SIGKILL: nothing lost, nothing duplicated');

# --- the whole server stopped (immediate) with both batches in flight
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1500 });
for my $round (1 .. 2)
{
	add_customers(60);
	ok(overlapping("immediate round $round: two batches in flight"),
		"immediate round $round: a batch is on the wire, the next one is claimed");
	$node->stop('immediate');
	$node->start;
}
ErpcrmTest::mock_post('/_mock/faults', {});
ok(wait_synced($node, 120), 'after immediate stops, the queue drains');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed');
is(companies_in_hubspot(), $next - 1, 'no company is missing or duplicated');
state_ok($node, 'after immediate stops: nothing lost, nothing duplicated');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM erpcrm.sync_state WHERE state = 'in_flight'"), '0',
	'nothing is left in flight');

$node->stop;
done_testing();

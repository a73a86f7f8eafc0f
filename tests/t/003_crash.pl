# Crashes: the worker killed with SIGKILL mid-batch, the server stopped with
# "immediate" mid-batch, SIGTERM in the middle of an HTTP call.  Nothing
# committed is lost, nothing is duplicated.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('crash', conf => "erpcrm.batch_size = 20\nrestart_after_crash = on\n");
load_erp($node);

sub in_flight
{
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM erpcrm.sync_state WHERE state = 'in_flight'");
}

my $next = 1;
sub write_burst
{
	my ($n) = @_;
	my $from = $next;
	$next += $n;
	$node->safe_psql('postgres', qq{
INSERT INTO erp.customers (id, name, nip)
	SELECT g, 'Firma ' || g, lpad(g::text, 10, '0') FROM generate_series($from, $from + $n - 1) g;
INSERT INTO erp.persons SELECT g, g, 'p' || g || '\@firma.pl', 'Jan', 'Nowak'
	FROM generate_series($from, $from + $n - 1) g;
UPDATE erp.customers SET name = name || '.' WHERE id % 7 = 0;
INSERT INTO erp.products SELECT 'C-' || g, 'Towar ' || g, g FROM generate_series($from, $from + $n - 1) g;
});
}

# --- SIGKILL of the worker while HubSpot is answering its batch
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 300 });
for my $round (1 .. 3)
{
	write_burst(40);
	ok(poll_until('a batch in flight', sub { in_flight() > 0 }, 30), "round $round: a batch is in flight");
	my $pid = worker_pid($node);
	usleep(int(rand(250_000)));
	kill 'KILL', $pid;
	ok(poll_until('a new worker', sub {
		my $p = eval { worker_pid($node) } // '';
		$p ne '' && $p ne $pid }, 60), "round $round: the worker is back after SIGKILL");
}
ErpcrmTest::mock_post('/_mock/faults', {});
ok(wait_synced($node, 120), 'SIGKILL rounds: the queue drains');
state_ok($node, 'SIGKILL rounds: nothing lost, nothing duplicated');

# --- pg_ctl stop -m immediate in the middle of a batch
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 300 });
for my $round (1 .. 3)
{
	write_burst(40);
	ok(poll_until('a batch in flight', sub { in_flight() > 0 }, 30), "immediate round $round: a batch is in flight");
	usleep(int(rand(250_000)));
	$node->stop('immediate');
	$node->start;
}
ErpcrmTest::mock_post('/_mock/faults', {});
ok(wait_synced($node, 120), 'immediate stops: the queue drains');
state_ok($node, 'immediate stops: nothing lost, nothing duplicated');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', 'crashes fail nothing');

# --- SIGTERM in the middle of a slow HTTP call ends the worker at once
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 20000 });
$node->append_conf('postgresql.conf', "erpcrm.request_timeout = '60s'\n");
$node->reload;
write_burst(5);
ok(poll_until('sending', sub {
	$node->safe_psql('postgres', 'SELECT state FROM erpcrm.worker') eq 'sending' }, 30),
	'the worker is waiting for a slow answer');
my $pid = worker_pid($node);
# paused until HubSpot has finished the call the worker abandons (below)
$node->safe_psql('postgres', 'SELECT erpcrm.pause()');
kill 'TERM', $pid;
# the answer would come after 20 s: gone well before that, it did not wait
# for it (no timed assertion: a loaded machine only makes the poll slower)
ok(poll_until('the worker to exit', sub { !kill(0, $pid) }, 15),
	'SIGTERM during an HTTP call ends the worker, without waiting for the answer');
ErpcrmTest::mock_post('/_mock/faults', {});
# HubSpot still carries out the abandoned call when its 20 s are up: wait for
# it, lest its old values land after the newer ones sent again after it
ok(poll_until('the abandoned call answered', sub {
	grep { ($_->{durationMs} // 0) >= 19000 }
	  @{ ErpcrmTest::mock_get('/_mock/requests')->{results} } }, 40),
	'HubSpot finished the call the worker abandoned');
ok(poll_until('a new worker', sub { (eval { worker_pid($node) } // '') ne '' }, 30),
	'the postmaster starts the worker again');
$node->safe_psql('postgres', 'SELECT erpcrm.resume()');
ok(wait_synced($node, 60), 'after SIGTERM the queue drains');
state_ok($node, 'after SIGTERM: nothing lost, nothing duplicated');

# --- a clean restart keeps everything, and DROP EXTENSION under a live worker
$node->restart;
write_burst(10);
ok(wait_synced($node, 60), 'after a restart the queue drains');
state_ok($node, 'after a restart: nothing lost');
$node->safe_psql('postgres', 'DROP EXTENSION erpcrm CASCADE');
ok(poll_until('not configured', sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm worker'") eq '1' }),
	'the worker survives DROP EXTENSION');
$node->safe_psql('postgres', 'CREATE EXTENSION erpcrm');
load_erp_again($node);
$node->safe_psql('postgres', "INSERT INTO erp.customers (id, name) VALUES (100000, 'Po reinstalacji')");
ok(wait_synced($node, 60), 'after CREATE EXTENSION again the worker delivers');
$node->stop;
done_testing();

sub load_erp_again
{
	my ($n) = @_;
	$n->safe_psql('postgres', q{
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
});
}

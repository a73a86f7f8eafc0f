# Drift (issue 13, point 3), in bad weather: a reconcile that meets HubSpot
# failing goes on once it answers, and counts the failed calls in its
# budget; delivery goes first, so an ERP change made while a long reconcile
# runs reaches HubSpot before the reconcile ends; a paused worker makes no
# reconcile call.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('drift_faults');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
INSERT INTO erp.customers (id, name) SELECT i, 'Firm ' || i FROM generate_series(1, 1000) i;
SELECT erpcrm.resync('companies');
});
ok(wait_synced($node), 'the companies are delivered');

sub run_ends
{
	my ($run) = @_;
	my $state;
	poll_until("reconcile run $run", sub {
		$state = sql("SELECT state FROM erpcrm.reconcile_runs WHERE run_id = $run");
		$state ne 'queued' && $state ne 'running' }, 120);
	return $state;
}
sub last_seq { return ErpcrmTest::mock_get('/_mock/requests')->{lastSeq} // 0; }

# 1. HubSpot fails twice: the worker backs off, and the run goes on
ErpcrmTest::mock_post('/_mock/faults',
	{ force_status => { count => 2, status => 503, path_contains => 'companies/batch/read' } });
my $run = sql("SELECT erpcrm.reconcile('companies', budget => 100)");
is(run_ends($run), 'done', 'a reconcile that met two 503s ends');
is(sql("SELECT keys_checked || ' ' || records_scanned || ' ' || calls FROM erpcrm.reconcile_runs WHERE run_id = $run"),
	'1000 1000 18', 'every key and record checked; the two failed calls count in its budget (10 reads, 6 searches of which the last finds no more, 2 failures)');
is(sql("SELECT count(*) FROM erpcrm.api_log WHERE mapping = 'companies' AND http_status = 503"), '2',
	'the failed calls are in erpcrm.api_log');
is(sql('SELECT count(*) FROM erpcrm.drift'), '0', 'and no drift is made up from them');

# 2. Delivery goes first: an ERP change made while a slow reconcile runs
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1000 });   # 16 calls: 16 s and more
$run = sql("SELECT erpcrm.reconcile('companies')");
ok(poll_until('the run checks keys', sub { sql("SELECT keys_checked > 0 FROM erpcrm.reconcile_runs WHERE run_id = $run") eq 't' }),
	'the reconcile is under way');
my $since = last_seq();
sql("UPDATE erp.customers SET name = 'Firm One, renamed in the ERP' WHERE id = 1");
is(run_ends($run), 'done', 'the slow reconcile ends');
my @after = grep { $_->{seq} > $since } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
my ($upsert) = grep { $_->{path} eq '/crm/v3/objects/companies/batch/upsert' } @after;
my @reads_after = grep { $_->{path} =~ m{/(batch/read|search)$} && $upsert && $_->{seq} > $upsert->{seq} } @after;
ok($upsert, 'the change was delivered');
cmp_ok(scalar(@reads_after), '>', 0, 'before the reconcile had made all its calls');
is(sql("SELECT count(*) FROM erpcrm.drift"), '0', 'the changed company is not drift');
ErpcrmTest::mock_post('/_mock/faults', {});

# 3. A paused worker makes no reconcile call
sql('SELECT erpcrm.pause()');
$since = last_seq();
$run = sql("SELECT erpcrm.reconcile('companies')");
ok(poll_until('the worker woke after the request', sub {
	sql("SELECT w.state = 'paused' AND w.last_wake > r.requested_at FROM erpcrm.worker w, erpcrm.reconcile_runs r WHERE r.run_id = $run") eq 't' }),
	'the worker woke for the request, paused');
is(sql("SELECT state || ' ' || calls FROM erpcrm.reconcile_runs WHERE run_id = $run"), 'queued 0',
	'a reconcile asked for while the worker is paused waits');
is(scalar(grep { $_->{seq} > $since } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} }), 0,
	'and nothing is called');
sql('SELECT erpcrm.resume()');
is(run_ends($run), 'done', 'it runs once the worker is resumed');

ErpcrmTest::contract_log();
done_testing();

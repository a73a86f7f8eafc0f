# HubSpot calls made from a SQL session (check_connection(),
# setup_hubspot()) and what the worker says when things go wrong:
#   - a slow HubSpot does not hold a session past statement_timeout or a
#     pg_cancel_backend(), and pg_stat_activity shows the wait;
#   - a session's calls are in erpcrm.api_log and count in the worker's
#     rate limiter, so the worker causes no 429 after them;
#   - erpcrm.worker shows backoff_until while backing off, a failed cycle
#     is logged with its SQLSTATE and names the mapping and the step, and
#     erpcrm.retry_now() ends a back-off;
#   - erpcrm.status lists the mappings in a stable order (by name).
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

my $config = ErpcrmTest::default_mock_config();
$config->{max_per_window} = 6;
$config->{window_ms} = 10000;
start_mock(config => $config);
my $node = erpcrm_node('session', conf => qq{
erpcrm.max_calls_per_10s = 6
erpcrm.request_timeout = '60s'
erpcrm.retry_base = '30s'
erpcrm.retry_max = '60s'
log_error_verbosity = verbose
});
load_erp($node);

# --- a session's calls: in api_log, and counted by the worker's limiter
# (calls the worker made before, with no mapping, are left out on both
# sides: the log is read from a moment taken before the mock's mark)
my $t0 = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
my $seq0 = mock_get('/_mock/requests')->{lastSeq} // 0;
my $rows = $node->safe_psql('postgres', q{
SELECT count(*) FROM erpcrm.check_connection();
SELECT count(*) FROM erpcrm.check_connection();});
# (the worker's own refresh of HubSpot's owners, also with no mapping, may
# run at the same time: its calls are left out on both sides)
my $session_calls = grep { $_->{path} !~ m{^/crm/v3/owners} }
  @{ mock_get("/_mock/requests?since=$seq0")->{results} };
cmp_ok($session_calls, '>=', 4, "two check_connection() made $session_calls calls");
is($node->safe_psql('postgres',
	"SELECT count(*) FROM erpcrm.api_log WHERE mapping IS NULL AND path NOT LIKE '/crm/v3/owners%' AND called_at >= '$t0'"),
	$session_calls, 'each is in erpcrm.api_log, with no mapping');
like($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT path, ',') FROM erpcrm.api_log WHERE mapping IS NULL"),
	qr{/account-info/v3/details}, 'by path');
cmp_ok($node->safe_psql('postgres', 'SELECT calls FROM erpcrm.worker'), '>=', $session_calls,
	'and counted in erpcrm.worker.calls');

# right away, the worker delivers more than the window has room for: it
# must wait for the window, not meet HubSpot's 429
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(1, 3) g;
INSERT INTO erp.products VALUES ('P-1', 'Śruba', 0.35);
INSERT INTO erp.persons VALUES (10, 1, 'a@b.pl', 'Anna', 'Nowak');
});
ok(wait_synced($node, 90), 'the worker delivers');
my @all = @{ mock_get("/_mock/requests?since=$seq0")->{results} };
my @r429 = grep { $_->{status} == 429 } @all;
is(scalar(@r429), 0, 'HubSpot answered no 429: the worker counted the session\'s calls')
  or diag(join("\n", map { "$_->{method} $_->{path} $_->{status}" } @all));
state_ok($node, 'HubSpot holds the ERP');
ErpcrmTest::mock_post('/_mock/config', { max_per_window => 0 });

# --- cancels: a slow HubSpot (120 s per call, within erpcrm.request_timeout):
# a cancel must end the call, not wait for its answer.  Each wait below is
# a bound that only code ignoring the cancel reaches.
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 120000 });
$node->append_conf('postgresql.conf', "erpcrm.request_timeout = '5min'\n");
$node->reload;
for my $f ('check_connection', 'setup_hubspot')
{
	my $timed_out = 0;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '1s'; SELECT * FROM erpcrm.$f();",
		timeout => 60, timed_out => \$timed_out);
	ok(!$timed_out && $err =~ /canceling statement due to statement timeout/,
		"$f() honours statement_timeout while HubSpot is slow")
	  or diag("timed out: $timed_out; $err");
}

my ($sout, $serr) = ('', '');
my $active = sub {
	my ($app) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = '$app' AND state = 'active'");
};
my $h = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'),
	  '-c', "SET application_name = 'slow_check'; SELECT * FROM erpcrm.check_connection()" ],
	'>', \$sout, '2>', \$serr);
ok(poll_until('the session waiting on HubSpot', sub {
	$node->safe_psql('postgres',
		"SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'slow_check'") eq 'Extension' }, 15),
	'pg_stat_activity shows the session waiting (wait_event_type Extension)');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'slow_check'");
ok(poll_until('the cancel', sub { $active->('slow_check') eq '0' }, 60),
	'pg_cancel_backend() ends check_connection() without waiting for HubSpot');
$h->finish;
like($serr, qr/canceling statement due to user request/, 'with the cancel\'s message');

($sout, $serr) = ('', '');
$h = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'),
	  '-c', "SET application_name = 'slow_setup'; SELECT * FROM erpcrm.setup_hubspot()" ],
	'>', \$sout, '2>', \$serr);
ok(poll_until('setup_hubspot waiting on HubSpot', sub {
	$node->safe_psql('postgres',
		"SELECT wait_event_type FROM pg_stat_activity WHERE application_name = 'slow_setup'") eq 'Extension' }, 15),
	'setup_hubspot() shows its wait too');
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'slow_setup'");
ok(poll_until('the termination', sub { $active->('slow_setup') eq '0' }, 60),
	'pg_terminate_backend() ends setup_hubspot() without waiting for HubSpot');
$h->finish;
like($serr, qr/terminating connection due to administrator command/, 'with the termination\'s message');
ErpcrmTest::mock_post('/_mock/faults', {});
$node->append_conf('postgresql.conf', "erpcrm.request_timeout = '60s'\n");
$node->reload;

# --- a failed cycle: SQLSTATE, mapping and step in the log; backoff_until
# while backing off; retry_now().  (A row a view cannot read fails alone;
# a view its owner can no longer even name fails the cycle.)
$node->safe_psql('postgres', q{
CREATE ROLE integ LOGIN IN ROLE erpcrm_admin;
CREATE SCHEMA shared;
GRANT USAGE, CREATE ON SCHEMA shared TO integ;
GRANT USAGE ON SCHEMA erp TO integ;
GRANT SELECT, TRIGGER ON erp.products TO integ;
});
my ($iok, $iout, $ierr) = $node->psql('postgres', q{
CREATE VIEW shared.hs_tools AS
SELECT sku AS erp_id, name FROM erp.products WHERE sku LIKE 'T-%';
SELECT erpcrm.map('tools', 'shared.hs_tools', 'products');
SELECT erpcrm.watch('tools', 'erp.products', 'sku');
}, extra_params => [ '-U', 'integ' ], on_error_stop => 1);
is($iok, 0, 'an admin maps a view of its own') or diag($ierr);
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{
REVOKE USAGE ON SCHEMA shared FROM integ;
INSERT INTO erp.products VALUES ('T-1', 'Klucz', 12.50);
});
ok(poll_until('the worker backing off', sub {
	$node->safe_psql('postgres', 'SELECT state FROM erpcrm.worker') eq 'backing off' }, 30),
	'a mapping whose owner lost the right to name its view makes the worker back off');
my ($detail, $until_set) = split /\|/, $node->safe_psql('postgres',
	'SELECT detail, backoff_until IS NOT NULL AND backoff_until > now() FROM erpcrm.worker');
is($until_set, 't', 'erpcrm.worker.backoff_until says until when');
is($detail, 'mapping "tools", reading its view: permission denied for schema shared (SQLSTATE 42501)',
	'erpcrm.worker.detail names the mapping, the step and the SQLSTATE');
ok(poll_until('the log line', sub {
	substr(slurp_file($node->logfile), $log_offset) =~ /LOG:  42501: permission denied for schema shared/ }, 10),
	'the server log has the error as it was raised, with its SQLSTATE');
like(substr(slurp_file($node->logfile), $log_offset),
	qr/LOG:  42501: permission denied for schema shared[^\n]*\n(?:[^\n]*\n){0,2}?[^\n]*CONTEXT:  (?:[^\n]*\n\t)*erpcrm worker, mapping "tools", reading its view\n/,
	'and a CONTEXT line naming the mapping and the step');

# the fix, then "retry now" (the back-off is 30 s or more)
$node->safe_psql('postgres', 'GRANT USAGE ON SCHEMA shared TO integ');
is($node->safe_psql('postgres', 'SELECT erpcrm.retry_now()'), 't', 'erpcrm.retry_now() wakes the worker');
ok(wait_synced($node, 20), 'which delivers at once, without waiting out its back-off');
is($node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('tools', 'T-1')"), 'synced',
	'the key of the repaired mapping is in HubSpot');
is($node->safe_psql('postgres', 'SELECT backoff_until FROM erpcrm.worker'), '',
	'backoff_until is empty again');

# --- erpcrm.status: a stable order (targets first, by name)
# (a mapping defined last, whose name sorts first)
$node->safe_psql('postgres', "SELECT erpcrm.map('accounts', 'erp.hs_companies', 'companies')");
is($node->safe_psql('postgres', "SELECT string_agg(mapping, ',') FROM erpcrm.status"),
	'accounts,companies,contacts,products,tools', 'erpcrm.status lists the mappings by name');

$node->stop;
done_testing();

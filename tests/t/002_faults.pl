# HubSpot misbehaving: 429 storms, outages, 5xx, broken answers, slow
# answers, 401 with a fixed token and reload.  After each: every committed
# change is in HubSpot, nothing is duplicated, nothing failed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use JSON::PP;

start_mock();
my $node = erpcrm_node('faults', conf => "erpcrm.batch_size = 10\n");
load_erp($node);

sub worker_state
{
	return $node->safe_psql('postgres', 'SELECT state FROM erpcrm.worker');
}

sub no_failures
{
	my ($name) = @_;
	is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', $name);
}

# --- a 429 storm: HubSpot allows 4 calls per second and answers 429 to the
# next 6 upserts (Retry-After: 1); erpcrm's own limit is off
ErpcrmTest::mock_post('/_mock/config', { max_per_window => 4, window_ms => 1000, retry_after => JSON::PP::true });
ErpcrmTest::mock_post('/_mock/faults',
	{ force_status => { count => 6, status => 429, path_contains => 'batch/upsert', retry_after => 1 } });
$node->safe_psql('postgres', q{
INSERT INTO erp.products SELECT 'R-' || g, 'Produkt ' || g, g FROM generate_series(1, 150) g;
});
ok(wait_synced($node, 120), '429 storm: everything is delivered');
my $stats = ErpcrmTest::mock_get('/_mock/stats');
cmp_ok($stats->{rateLimited}, '>', 0, "429 storm: HubSpot answered 429 ($stats->{rateLimited} times)");
cmp_ok($stats->{maxWindowCalls}, '<=', 4, 'HubSpot never saw more calls than its window allows');
no_failures('429s never fail a key');
is($node->safe_psql('postgres',
	"SELECT max(attempts) FROM erpcrm.sync_state"), '0', '429s never count as attempts');
cmp_ok($node->safe_psql('postgres', 'SELECT rate_limited FROM erpcrm.worker'), '>', 0,
	'erpcrm.worker counts the 429s');
state_ok($node, '429 storm: HubSpot holds exactly the ERP');

# --- the client-side limit keeps erpcrm under HubSpot's window without any 429
ErpcrmTest::mock_post('/_mock/reset', ErpcrmTest::default_mock_config());
ErpcrmTest::mock_post('/_mock/config', { max_per_window => 6, window_ms => 10000 });
$node->append_conf('postgresql.conf', "erpcrm.max_calls_per_10s = 5\n");
$node->reload;
$node->safe_psql('postgres', 'SELECT erpcrm.resync(\'products\')');
# (polled, not slept: under load the worker may need more than a few seconds
# to reach its limit)
ok(poll_until('rate limited', sub { worker_state() eq 'rate limited' }),
	'erpcrm.worker says it waits for the rate limit');
$stats = ErpcrmTest::mock_get('/_mock/stats');
is($stats->{rateLimited}, 0, 'client-side limit: no 429 received');
ErpcrmTest::mock_post('/_mock/config', { max_per_window => 0 });
$node->append_conf('postgresql.conf', "erpcrm.max_calls_per_10s = 10000\n");
$node->reload;
ok(wait_synced($node, 60), 'client-side limit lifted: resync completes');
state_ok($node, 'resync after a reset HubSpot: everything re-created once');

# --- HubSpot down (connection refused), then back
ErpcrmTest::mock_post('/_mock/faults', { down => 'refuse' });
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip) SELECT g, 'Firma ' || g, lpad(g::text, 10, '0') FROM generate_series(1, 30) g;
INSERT INTO erp.persons SELECT 100 + g, g, 'osoba' || g || '@firma.pl', 'Imię', 'Nazwisko' FROM generate_series(1, 30) g;
});
ok(poll_until('backing off', sub {
	$node->safe_psql('postgres', "SELECT state = 'backing off' AND detail LIKE '%no answer from HubSpot%' FROM erpcrm.worker") eq 't' }),
	'HubSpot down: the worker backs off and erpcrm.worker says why');
# between two attempts the key waits as pending; during one it is in flight
my $err = '';
poll_until('the key waiting between attempts', sub {
	$err = $node->safe_psql('postgres',
		"SELECT state, error_category, attempts > 0 FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'companies' AND erp_id = '1'");
	$err ne 'in_flight|NETWORK|t' });
is($err, 'pending|NETWORK|t', 'HubSpot down: keys stay pending with the network error');
my $n503 = ErpcrmTest::mock_get('/_mock/stats')->{byStatus}{503} // 0;
ErpcrmTest::mock_post('/_mock/faults', { down => '503' });
ok(poll_until('a 503', sub { (ErpcrmTest::mock_get('/_mock/stats')->{byStatus}{503} // 0) > $n503 }),
	'HubSpot answers 503: the worker meets it');
ErpcrmTest::mock_post('/_mock/faults', {});
ok(wait_synced($node, 60), 'HubSpot back: the queue drains');
no_failures('an outage fails nothing');
state_ok($node, 'after the outage HubSpot holds exactly the ERP');

# --- 5xx, malformed, truncated and reset answers to calls HubSpot did apply
ErpcrmTest::mock_post('/_mock/faults',
	{ error_share => 0.2, malformed_share => 0.15, truncated_share => 0.1, reset_share => 0.1 });
$node->safe_psql('postgres', q{
UPDATE erp.customers SET name = name || ' sp. z o.o.';
INSERT INTO erp.products SELECT 'S-' || g, 'Część ' || g, g / 10.0 FROM generate_series(1, 100) g;
UPDATE erp.persons SET last_name = 'Kowalska' WHERE id % 2 = 0;
});
ok(wait_synced($node, 120), 'broken answers: everything is delivered in the end');
ErpcrmTest::mock_post('/_mock/faults', {});
no_failures('broken answers fail nothing');
state_ok($node, 'broken answers: no duplicates, nothing stale');
my $bad = $node->safe_psql('postgres',
	"SELECT count(*) FROM erpcrm.api_log WHERE http_status >= 500 OR http_status IS NULL OR error_category IN ('NETWORK')");
cmp_ok($bad, '>', 0, "erpcrm.api_log shows the failed calls ($bad)");

# --- a company deleted by hand in HubSpot is recreated by the next upsert,
# and its contacts follow it
my ($c5) = grep { ($_->{properties}{erp_id} // '') eq '5' }
  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
ErpcrmTest::mock_delete("/_mock/objects/companies/$c5->{id}");
$node->safe_psql('postgres', "UPDATE erp.customers SET name = 'Firma 5 (odtworzona)' WHERE id = 5");
ok(wait_synced($node, 60), 'a change of a company deleted in HubSpot is delivered');
state_ok($node, 'the company is recreated once and its contact associated to it again');

# --- a 409 for a whole batch is split until the inputs go through
ErpcrmTest::mock_post('/_mock/faults',
	{ force_status => { count => 1, status => 409, path_contains => 'companies/batch/upsert' } });
$node->safe_psql('postgres', "UPDATE erp.customers SET nip = '1111111111' WHERE id <= 8");
ok(wait_synced($node, 60), 'a batch answered 409 is delivered after splitting it');
no_failures('a whole-batch 409 without named inputs fails no key');
state_ok($node, 'after the 409 HubSpot holds exactly the ERP');

# --- HubSpot refuses every input of one mapping for a long time: the ERP
# goes on, the other mappings are delivered, the failure views say why
ErpcrmTest::mock_post('/_mock/faults',
	{ force_status => { count => 100000, status => 400, path_contains => 'products/batch/upsert',
		message => 'Property values were not valid: price' } });
$node->safe_psql('postgres', q{
UPDATE erp.products SET price = price + 1 WHERE sku LIKE 'S-%' AND sku < 'S-2';
UPDATE erp.customers SET name = name || '!' WHERE id = 1;
});
ok(poll_until('products failed', sub {
	$node->safe_psql('postgres', "SELECT failed > 0 AND pending + in_flight = 0 FROM erpcrm.status WHERE mapping = 'products'") eq 't' }, 60),
	'every product input refused: the products are failed');
like($node->safe_psql('postgres', "SELECT DISTINCT error_message FROM erpcrm.failures WHERE mapping = 'products'"),
	qr/Property values were not valid/, 'erpcrm.failures gives HubSpot\'s reason');
is($node->safe_psql('postgres', "SELECT pending + in_flight FROM erpcrm.status WHERE mapping = 'companies'"), '0',
	'the other mappings are delivered meanwhile');
ErpcrmTest::mock_post('/_mock/faults', {});
$node->safe_psql('postgres', "SELECT erpcrm.requeue_failed('products')");
ok(wait_synced($node, 60), 'fixed in HubSpot and requeued: delivered');
no_failures('nothing stays failed');

# --- slow answers past the timeout
$node->append_conf('postgresql.conf', "erpcrm.request_timeout = '500ms'\n");
$node->reload;
ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1500 });
$node->safe_psql('postgres', "UPDATE erp.products SET price = price + 1 WHERE sku = 'S-1'");
ok(poll_until('a timeout', sub {
	$node->safe_psql('postgres',
		"SELECT error_message FROM erpcrm.key_status('products', 'S-1')") =~ /timed out|Timeout/i }),
	'a slow answer times out and is recorded');
ErpcrmTest::mock_post('/_mock/faults', {});
$node->append_conf('postgresql.conf', "erpcrm.request_timeout = '5s'\n");
$node->reload;
ok(wait_synced($node, 60), 'after the timeouts the change is delivered');
state_ok($node, 'after timeouts HubSpot holds exactly the ERP');

# --- 401: the worker stops, says why, and resumes at once after a reload
$node->append_conf('postgresql.conf', "erpcrm.auth_retry = '10min'\n");
$node->reload;
ErpcrmTest::mock_post('/_mock/config', { tokens => ['rotated-token'] });
$node->safe_psql('postgres', "UPDATE erp.customers SET nip = '9999999999' WHERE id = 5");
ok(poll_until('auth failed', sub { worker_state() eq 'auth failed' }), '401: the worker stops sending');
like($node->safe_psql('postgres', 'SELECT detail FROM erpcrm.worker'), qr/refused the access token \(401/,
	'erpcrm.worker says the token was refused');
is($node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('companies', '5')"), 'pending',
	'401: the key is pending, not failed');
# a commit wakes the worker; it stays away from HubSpot
my $calls = ErpcrmTest::mock_get('/_mock/stats')->{calls};
my $woken = $node->safe_psql('postgres', 'SELECT now()');
$node->safe_psql('postgres', "UPDATE erp.customers SET nip = '9999999998' WHERE id = 5");
ok(poll_until('the worker woken', sub {
	$node->safe_psql('postgres', "SELECT last_wake > '$woken' FROM erpcrm.worker") eq 't' }),
	'401: a commit still wakes the worker');
is(ErpcrmTest::mock_get('/_mock/stats')->{calls}, $calls, '401: no more calls while the token is refused');
my $offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "erpcrm.token = 'rotated-token'\n");
$node->reload;
ok(wait_synced($node, 20), 'a new token and a reload: delivery resumes at once');
state_ok($node, 'after the token change HubSpot holds exactly the ERP');
my $log = slurp_file($node->logfile);
like($log, qr/erpcrm worker stops sending: HubSpot refused the access token/, 'the log says why it stopped');
unlike($log, qr/test-token|rotated-token/, 'no token in the server log');

# --- a 403 for missing scopes behaves the same
ErpcrmTest::mock_post('/_mock/faults', { missing_scopes => ['products'] });
$node->safe_psql('postgres', "UPDATE erp.products SET name = 'Śruba' WHERE sku = 'S-2'");
ok(poll_until('auth failed', sub { worker_state() eq 'auth failed' }), '403: the worker stops sending');
like($node->safe_psql('postgres', 'SELECT detail FROM erpcrm.worker'), qr/403 MISSING_SCOPES/, '403: says which');
ErpcrmTest::mock_post('/_mock/faults', {});
$node->reload;
ok(wait_synced($node, 20), '403 fixed and reloaded: delivered');
no_failures('401 and 403 fail nothing');

$node->stop;
done_testing();

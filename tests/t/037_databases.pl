# Many ERP databases in one cluster: the launcher starts one worker per
# database that has erpcrm, each database may have its own HubSpot portal
# (erpcrm.portal), databases that share a portal share its rate limit, and
# one database's broken mapping, refused token or HubSpot outage does not
# keep the others from delivering.
#
#   north, south: portal A (the cluster's erpcrm.hubspot_url and token)
#   west:         portal B (a second HubSpot mock, its own token file)
use strict;
use warnings;
use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use ErpcrmTest;

my $json = JSON::PP->new->canonical;
my $http = HTTP::Tiny->new(timeout => 30);

# --- portal A: the suite's mock; portal B: a second one, another token
my $port_a = start_mock();
my $dir = PostgreSQL::Test::Utils::tempdir();
my $token_b = 'pat-eu1-west-0123456789abcdef';
my $b_pid = fork();
die "fork failed" unless defined $b_pid;
if ($b_pid == 0)
{
	open(STDOUT, '>', "$dir/mock_b.out");
	open(STDERR, '>', "$dir/mock_b.err");
	exec('python3', dirname(__FILE__) . '/../mock/hubspot_mock.py', '--port', '0',
		'--port-file', "$dir/port_b", '--seed', '7', '--token', $token_b)
	  or die "cannot start the second mock: $!";
}
poll_until('the second mock', sub { -s "$dir/port_b" }, 10);
my $port_b = slurp_file("$dir/port_b");
chomp $port_b;

sub mock_b
{
	my ($method, $path, $body) = @_;
	my $r = $http->request($method, "http://127.0.0.1:$port_b$path",
		{ headers => { 'Content-Type' => 'application/json' },
		  defined $body ? (content => $json->encode($body)) : () });
	die "mock B $method $path: $r->{status} $r->{content}" unless $r->{success};
	return $r->{content} ? $json->decode($r->{content}) : undef;
}
my $config_b = ErpcrmTest::default_mock_config();
$config_b->{tokens} = [$token_b];
$config_b->{log_bodies} = JSON::PP::true if $ENV{ERPCRM_CONTRACT_DIR};
mock_b('POST', '/_mock/reset', $config_b);

END
{
	if ($b_pid && $port_b && $ENV{ERPCRM_CONTRACT_DIR})
	{
		# portal B's calls go to the contract check too
		my $r = $http->get("http://127.0.0.1:$port_b/_mock/requests");
		if ($r->{success} && open(my $fh, '>', "$ENV{ERPCRM_CONTRACT_DIR}/037_portal_b.$$.json"))
		{
			print $fh $r->{content};
			close $fh;
		}
	}
	kill 'TERM', $b_pid if $b_pid;
}

open(my $tf, '>', "$dir/west.token") or die;
print $tf "$token_b\n";
close $tf;
chmod 0600, "$dir/west.token";

# every database that has the extension: erpcrm.database set to empty
my $node = erpcrm_node('databases', conf => "erpcrm.database = ''\n");

sub erp
{
	my ($db, $first, $portal) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION erpcrm');
	# a portal of its own, before anything is sent
	$node->safe_psql($db, $portal) if $portal;
	$node->safe_psql($db, qq{
CREATE SCHEMA erp;
CREATE TABLE erp.customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE erp.products (sku text PRIMARY KEY, name text NOT NULL, price numeric(12,2));
CREATE VIEW erp.hs_companies AS SELECT id AS erp_id, name FROM erp.customers;
CREATE VIEW erp.hs_products AS SELECT sku AS erp_id, name, price FROM erp.products;
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.map('products', 'erp.hs_products', 'products', batch_size => 1);
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
SELECT erpcrm.watch('products', 'erp.products', 'sku');
INSERT INTO erp.customers SELECT g, '$db ' || g FROM generate_series($first, $first + 9) g;
});
}

# portal B for west
erp('west', 201, qq{
INSERT INTO erpcrm.portal (hubspot_url, token_file)
VALUES ('http://127.0.0.1:$port_b', '$dir/west.token');
});
erp('north', 1);
erp('south', 101);

sub synced
{
	my ($db, $timeout) = @_;
	return $node->safe_psql($db, "SELECT erpcrm.wait_for_sync('" . ($timeout // 60) . " seconds')") eq 't';
}

sub erp_ids
{
	my ($results, $lo, $hi) = @_;
	return scalar grep {
		my $k = $_->{properties}{erp_id} // '';
		!$_->{archived} && $k =~ /^\d+$/ && $k >= $lo && $k <= $hi
	} @$results;
}

ok(synced('north') && synced('south') && synced('west'),
	'a worker per database, started without a restart, delivers each');
my $a_companies = ErpcrmTest::mock_get('/_mock/objects/companies')->{results};
my $b_companies = mock_b('GET', '/_mock/objects/companies')->{results};
is(erp_ids($a_companies, 1, 10) . '/' . erp_ids($a_companies, 101, 110) . '/' . erp_ids($a_companies, 201, 210),
	'10/10/0', 'portal A holds north\'s and south\'s companies, none of west\'s');
is(erp_ids($b_companies, 201, 210) . '/' . scalar(@$b_companies), '10/10',
	'portal B holds west\'s companies only (its URL and token from erpcrm.portal)');

is($node->safe_psql('west', 'SELECT database || \' \' || (pid IS NOT NULL)::text FROM erpcrm.worker'),
	'west true', 'erpcrm.worker shows the worker of the current database');
is($node->safe_psql('north', q{
SELECT string_agg(database::text, ',' ORDER BY database) FROM erpcrm.workers}),
	'north,south,west', 'erpcrm.workers lists every worker of the cluster');
is($node->safe_psql('north', q{
SELECT count(DISTINCT pid) FROM erpcrm.workers}), '3', 'one process each');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm launcher'"), '1',
	'and one launcher');

# --- secrets stay secret: the portal table and the list of workers are
# for superusers only
$node->safe_psql('north', 'CREATE ROLE watcher LOGIN IN ROLE erpcrm_monitor, erpcrm_admin');
for my $what ('erpcrm.portal', 'erpcrm.workers')
{
	my ($ret, $out, $err) = $node->psql('west', "SELECT * FROM $what",
		extra_params => [ '-U', 'watcher' ]);
	like($err, qr/permission denied/, "$what: not for an erpcrm_admin or erpcrm_monitor");
}
is($node->safe_psql('west', 'SELECT database FROM erpcrm.worker', extra_params => [ '-U', 'watcher' ]),
	'west', 'erpcrm.worker stays readable by the monitor');

# --- isolation: south has a broken mapping, west's token is refused; north
# delivers all the same
$node->safe_psql('south', q{
CREATE FUNCTION erp.boom(integer) RETURNS text LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'broken view'; END$$;
CREATE VIEW erp.hs_broken AS
  SELECT id AS erp_id, CASE WHEN id % 2 = 0 THEN erp.boom(id) ELSE 'ok' END AS firstname
    FROM erp.customers;
SELECT erpcrm.map('broken', 'erp.hs_broken', 'contacts');
SELECT erpcrm.watch('broken', 'erp.customers', 'id');
});
mock_b('POST', '/_mock/config', { tokens => ['a-new-token'] });
for my $db ('north', 'south', 'west')
{
	my $first = { north => 11, south => 111, west => 211 }->{$db};
	$node->safe_psql($db, "INSERT INTO erp.customers SELECT g, '$db ' || g FROM generate_series($first, $first + 9) g");
}
ok(poll_until('west refused', sub {
	$node->safe_psql('west', 'SELECT state FROM erpcrm.worker') eq 'auth failed' }, 60),
	'west: its portal refuses the token, its worker stops sending');
ok(synced('north'), 'north delivers meanwhile');
$a_companies = ErpcrmTest::mock_get('/_mock/objects/companies')->{results};
is(erp_ids($a_companies, 1, 20), 20, 'all of north\'s companies are in portal A');
ok(poll_until('south\'s companies', sub {
	erp_ids(ErpcrmTest::mock_get('/_mock/objects/companies')->{results}, 101, 120) == 20 }, 60),
	'south delivers its good mappings beside the broken one');
ok(poll_until('south\'s broken keys', sub {
	$node->safe_psql('south', q{SELECT count(*) FROM erpcrm.failures WHERE mapping = 'broken'}) eq '5' }, 60),
	'and parks the broken mapping\'s bad rows as failed');
is($node->safe_psql('north', 'SELECT count(*) FROM erpcrm.failures'), '0',
	'north fails nothing');

# portal B down (no answer at all): west backs off, north goes on
mock_b('POST', '/_mock/config', { tokens => [$token_b] });
mock_b('POST', '/_mock/faults', { down => 'refuse' });
$node->safe_psql('west', 'SELECT erpcrm.retry_now()');
ok(poll_until('west backing off', sub {
	$node->safe_psql('west', 'SELECT state FROM erpcrm.worker') eq 'backing off' }, 60),
	'west: its portal is down, its worker backs off');
$node->safe_psql('north', "INSERT INTO erp.customers VALUES (21, 'north 21')");
ok(synced('north'), 'north delivers while portal B is down');
is($node->safe_psql('west', q{
SELECT count(*) FROM erpcrm.sync_state WHERE state = 'failed'}), '0',
	'west loses and fails nothing');
mock_b('POST', '/_mock/faults', {});
$node->safe_psql('west', 'SELECT erpcrm.retry_now()');
ok(synced('west'), 'portal B back: west delivers what waited');
$b_companies = mock_b('GET', '/_mock/objects/companies')->{results};
is(erp_ids($b_companies, 201, 220), 20, 'portal B holds all of west\'s companies, once');

# --- databases that share a portal share its rate limit: at most
# erpcrm.max_calls_per_10s calls to portal A in any 10 seconds, from north
# and south together
is($node->safe_psql('north', q{
SELECT count(DISTINCT limiter) FILTER (WHERE database IN ('north', 'south'))
	|| '/' || count(DISTINCT limiter) FROM erpcrm.workers}), '1/2',
	'north and south share one limiter (one token), west has its own');
$node->append_conf('postgresql.conf', "erpcrm.max_calls_per_10s = 4\n");
$node->reload;
poll_until('the reload', sub {
	$node->safe_psql('north', 'SHOW erpcrm.max_calls_per_10s') eq '4' }, 10);
usleep(1_100_000);		# the workers have read it by the time they send
my $since = ErpcrmTest::mock_get('/_mock/requests?since=0')->{lastSeq};
$node->safe_psql('north', "INSERT INTO erp.products VALUES ('N-1', 'n', 1), ('N-2', 'n', 2), ('N-3', 'n', 3), ('N-4', 'n', 4)");
$node->safe_psql('south', "INSERT INTO erp.products VALUES ('S-1', 's', 1), ('S-2', 's', 2), ('S-3', 's', 3), ('S-4', 's', 4)");
ok(synced('north', 90) && synced('south', 90), 'both deliver their products');
my @times = map { $_->{time} } grep { $_->{path} =~ m{/objects/products/batch} }
  @{ ErpcrmTest::mock_get("/_mock/requests?since=$since")->{results} };
is(scalar(@times), 8, 'one call per product (batch_size 1)');
my $most = 0;
for my $i (0 .. $#times)
{
	my $n = grep { $_ >= $times[$i] && $_ < $times[$i] + 10 } @times;
	$most = $n if $n > $most;
}
cmp_ok($most, '<=', 4, "portal A never got more than 4 calls in 10 s from both databases ($most)");
$node->append_conf('postgresql.conf', "erpcrm.max_calls_per_10s = 10000\n");
$node->reload;

# --- a database created later gets a worker; DROP DATABASE is not kept
# waiting by it; DROP EXTENSION ends a worker
erp('east', 301);
ok(synced('east'), 'a new database with erpcrm gets a worker, no restart');
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE east');
is($ret, 0, 'DROP DATABASE of a served database succeeds') or diag($err);
ok(poll_until('east\'s worker gone', sub {
	$node->safe_psql('north', "SELECT count(*) FROM erpcrm.workers WHERE database = 'east'") eq '0' }, 30),
	'and its worker is gone');
$node->safe_psql('south', 'DROP EXTENSION erpcrm CASCADE');
ok(poll_until('south\'s worker gone', sub {
	$node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm worker' AND datname = 'south'") eq '0' }, 30),
	'DROP EXTENSION: the worker of that database leaves');

# --- too few background workers: the launcher says so
my $log_offset = -s $node->logfile;
$node->safe_psql('south', 'CREATE EXTENSION erpcrm');
$node->append_conf('postgresql.conf', "max_worker_processes = 4\n");
$node->restart;
# (two background workers are left for erpcrm: one is the launcher's,
# one PostgreSQL's logical replication launcher's)
ok(poll_until('a database refused', sub {
	$node->safe_psql('north', q{
SELECT count(*) FILTER (WHERE pid IS NULL AND detail LIKE '%max_worker_processes (4) is too small%') > 0
	AND count(*) FILTER (WHERE pid IS NOT NULL) = 2 FROM erpcrm.workers}) eq 't' }, 60),
	'erpcrm.workers names the databases that found no background worker, and why');
like(substr(slurp_file($node->logfile), $log_offset),
	qr/erpcrm launcher cannot start a worker for database "\w+": no background worker slot is free/,
	'and the log says it too');

unlike(slurp_file($node->logfile), qr/\Q$token_b\E/, 'the server log never holds west\'s token');
$node->stop;
done_testing();

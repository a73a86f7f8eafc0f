# Overlap of the network with the database (worker/pipeline.c) keeps the
# order of dependent mappings: while a batch of companies is on the wire,
# a batch of products (no association to companies) is claimed ahead, but
# not a batch of contacts (associated to companies): those are read only
# once the companies' HubSpot ids are recorded.  And when a batch makes the
# worker back off (503, 429, 401), the keys claimed ahead are given back,
# not lost in flight.
#
# The mock holds every request for a while (slow_ms); each check is one
# query that sees the worker waiting for an answer and the keys in flight
# at the same moment, polled until it holds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('overlap_order', conf => "erpcrm.batch_size = 20\n");
load_erp($node);

# While the worker waits for the answer to an upsert of $type, do the
# mappings have these many keys in flight ({ mapping => n })?
sub while_on_the_wire
{
	my ($what, $type, $want) = @_;
	my $cond = join(' AND ', map {
		"(SELECT in_flight FROM erpcrm.status WHERE mapping = '$_') = $want->{$_}"
	} sort keys %$want);
	return poll_until($what, sub {
		$node->safe_psql('postgres', qq{
SELECT EXISTS (SELECT FROM pg_stat_activity
				WHERE backend_type = 'erpcrm worker' AND state = 'active'
				  AND wait_event_type = 'Extension'
				  AND query LIKE '%/$type/batch/upsert%')
	   AND $cond}) eq 't' }, 90);
}

sub no_failures
{
	my ($name) = @_;
	is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', $name);
}

my $next = 1;
# n customers, and (with persons) a contact of each, and n products
sub add_erp_rows
{
	my ($n, %with) = @_;
	my $from = $next;
	my $to = $next + $n - 1;
	$next += $n;
	# one transaction: the worker sees all of it at once
	$node->safe_psql('postgres', qq{
BEGIN;
INSERT INTO erp.customers (id, name, nip)
	SELECT g, 'Firma ' || g, lpad(g::text, 10, '0') FROM generate_series($from, $to) g;
} . ($with{persons} ? qq{
INSERT INTO erp.persons SELECT g, g, 'p' || g || '\@firma.pl', 'Jan', 'Nowak'
	FROM generate_series($from, $to) g;
} : '') . ($with{products} ? qq{
INSERT INTO erp.products SELECT 'P-' || g, 'Towar ' || g, g FROM generate_series($from, $to) g;
} : '') . "COMMIT;\n");
}

ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1500 });

# --- contacts depend on companies: never claimed while companies are sent
# (the worker passes products, with nothing due, and stops at contacts)
add_erp_rows(20, persons => 1);
ok(while_on_the_wire('companies on the wire, contacts not claimed', 'companies',
		{ companies => 20, products => 0, contacts => 0 }),
	'while companies are on the wire, no batch of their contacts is claimed');
ok(while_on_the_wire('contacts on the wire', 'contacts',
		{ companies => 0, contacts => 20 }),
	'the contacts are sent once the companies are recorded');
ok(wait_synced($node, 120), 'companies and contacts delivered');
state_ok($node, 'contacts are associated to their companies');

# --- products do not depend on companies: claimed while companies are sent;
# contacts are claimed while products are sent (their companies recorded)
add_erp_rows(20, persons => 1, products => 1);
ok(while_on_the_wire('companies on the wire, products claimed', 'companies',
		{ companies => 20, products => 20, contacts => 0 }),
	'while companies are on the wire, the next batch (products) is claimed');
ok(while_on_the_wire('products on the wire, contacts claimed', 'products',
		{ companies => 0, products => 20, contacts => 20 }),
	'while products are on the wire, the companies are recorded and the contacts claimed');
ok(wait_synced($node, 120), 'everything delivered');
no_failures('nothing failed');
state_ok($node, 'HubSpot holds exactly the ERP, associations included');

# --- a batch that makes the worker back off (503: HubSpot unavailable; 401:
# the token refused): the batch claimed ahead is given back (pending again),
# not left in flight until a restart.  A short 429 is waited out within the
# call, as without overlap, and the batch claimed ahead is sent after it.
my $pid = worker_pid($node);
for my $case (
	[ '503', { status => 503 } ],
	[ '429', { status => 429, policy => 'TEN_SECONDLY_ROLLING', retry_after => 1 } ],
	[ '401', { status => 401 } ])
{
	my ($name, $rule) = @$case;
	ErpcrmTest::mock_post('/_mock/faults', { slow_ms => 1500,
		force_status => { count => 1, path_contains => 'companies/batch/upsert', %$rule } });
	my $seq = ErpcrmTest::mock_last_seq();
	add_erp_rows(60);
	ok(while_on_the_wire("$name: two batches of companies in flight", 'companies',
			{ companies => 40 }),
		"$name: a batch of companies is on the wire, the next one is claimed");
	ok(poll_until("$name answered", sub {
		grep { $_->{status} == $rule->{status} }
		  @{ ErpcrmTest::mock_get("/_mock/requests?since=$seq")->{results} } }, 60),
		"$name: HubSpot answered $name");
	ErpcrmTest::mock_post('/_mock/faults', {});
	ok(wait_synced($node, 120), "$name: the keys claimed ahead are sent after the pause");
	no_failures("$name: nothing failed");
	is(worker_pid($node), $pid, "$name: by the same worker (no recovery needed)");
}
state_ok($node, 'after the pauses: HubSpot holds exactly the ERP');

$node->stop;
done_testing();

# Values HubSpot cannot hold fail visibly, never clear a property: numeric
# NaN and infinities, dates and timestamps at +-infinity or beyond year 9999,
# text over HubSpot's 65,536 characters.  A view row without an erp_id is
# reported, not skipped.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('values');
load_erp($node);
my $metrics = q{
CREATE TABLE erp.metrics (
	id integer,
	score numeric,
	ratio double precision,
	since date,
	seen timestamptz,
	local_seen timestamp,
	notes text
);
CREATE VIEW erp.hs_metrics AS
SELECT 'M-' || id AS erp_id, 'Metryka ' || id AS name, score AS annualrevenue,
	   ratio AS numberofemployees, since AS customer_since, seen AS last_order_at,
	   local_seen AS hs_lastmodifieddate_erp, notes AS description
  FROM erp.metrics;
SELECT erpcrm.map('metrics', 'erp.hs_metrics', 'companies');
SELECT erpcrm.watch('metrics', 'erp.metrics', '''M-'' || id');
};
$node->safe_psql('postgres', $metrics);
ErpcrmTest::mock_post('/_mock/config', { properties => { companies => [
	{ name => 'nip', type => 'string' },
	{ name => 'price_level', type => 'string' },
	{ name => 'credit_limit', type => 'number' },
	{ name => 'customer_since', type => 'date' },
	{ name => 'last_order_at', type => 'datetime' },
	{ name => 'hs_lastmodifieddate_erp', type => 'datetime' },
	{ name => 'vip', type => 'bool' } ] } });

sub company
{
	my ($key) = @_;
	my ($o) = grep { ($_->{properties}{erp_id} // '') eq $key && !$_->{archived} }
	  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
	return $o;
}

sub status_of
{
	my ($key, $on) = @_;
	return ($on // $node)->safe_psql('postgres',
		"SELECT state || ' ' || coalesce(error_category, '') || ' ' || coalesce(error_message, '') FROM erpcrm.key_status('metrics', '$key')");
}

# first every row is good, and in HubSpot
$node->safe_psql('postgres', q{
INSERT INTO erp.metrics SELECT g, 1000 + g, 2.5, '2024-05-01', '2024-05-01 10:00+00', '2024-05-01 10:00', 'uwagi'
  FROM generate_series(1, 10) g;
});
ok(wait_synced($node), 'good values are delivered');
is(company('M-1')->{properties}{annualrevenue}, '1001', 'a number as it is');

# then each row gets a value HubSpot cannot hold
$node->safe_psql('postgres', q{
UPDATE erp.metrics SET score = 'NaN' WHERE id = 1;
UPDATE erp.metrics SET score = 'Infinity' WHERE id = 2;
UPDATE erp.metrics SET ratio = '-Infinity' WHERE id = 3;
UPDATE erp.metrics SET since = 'infinity' WHERE id = 4;
UPDATE erp.metrics SET seen = '-infinity' WHERE id = 5;
UPDATE erp.metrics SET local_seen = 'infinity' WHERE id = 6;
UPDATE erp.metrics SET since = '20000-01-01' WHERE id = 7;
UPDATE erp.metrics SET notes = repeat('x', 65537) WHERE id = 8;
UPDATE erp.metrics SET notes = repeat('y', 65536), score = 7 WHERE id = 9;
UPDATE erp.metrics SET notes = repeat('😀', 32769) WHERE id = 10;
});
ok(wait_synced($node), 'the queue drains (failed keys do not count)');

my %want = (
	'M-1' => 'failed ERP_VALUE_NOT_REPRESENTABLE property "annualrevenue": the number NaN has no HubSpot value',
	'M-2' => 'failed ERP_VALUE_NOT_REPRESENTABLE property "annualrevenue": the number Infinity has no HubSpot value',
	'M-3' => 'failed ERP_VALUE_NOT_REPRESENTABLE property "numberofemployees": the number -Infinity has no HubSpot value',
	'M-4' => 'failed ERP_VALUE_NOT_REPRESENTABLE property "customer_since": the date infinity has no HubSpot value',
	'M-5' => 'failed ERP_VALUE_NOT_REPRESENTABLE property "last_order_at": the timestamp -infinity has no HubSpot value',
	'M-6' => 'failed ERP_VALUE_NOT_REPRESENTABLE property "hs_lastmodifieddate_erp": the timestamp infinity has no HubSpot value',
	'M-7' => 'failed ERP_VALUE_NOT_REPRESENTABLE property "customer_since": the date is outside the years 1 to 9999, which HubSpot cannot hold',
	'M-8' => 'failed ERP_VALUE_TOO_LONG property "description" is 65537 characters long; HubSpot takes at most 65536',
	'M-10' => 'failed ERP_VALUE_TOO_LONG property "description" is 65538 characters long; HubSpot takes at most 65536',
);
for my $k (sort keys %want)
{
	is(status_of($k), $want{$k}, "$k fails with its reason");
}
is(status_of('M-9'), 'synced  ', 'a text of exactly 65,536 characters is delivered');
is(length(company('M-9')->{properties}{description}), 65536, 'HubSpot holds all of it');

# nothing of a failed row was sent: HubSpot keeps the last good values
is(company('M-1')->{properties}{annualrevenue}, '1001', 'NaN did not clear the number in HubSpot');
is(company('M-4')->{properties}{customer_since}, '2024-05-01', 'infinity did not clear the date');
is(company('M-5')->{properties}{last_order_at}, '2024-05-01T10:00:00.000Z', 'nor the timestamp');
is(company('M-8')->{properties}{description}, 'uwagi', 'nor the text');
is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.failures WHERE mapping = 'metrics'"),
	'9', 'erpcrm.failures lists the nine rows');

# a fixed value is sent as soon as the row changes
$node->safe_psql('postgres', "UPDATE erp.metrics SET score = 55 WHERE id = 1");
ok(poll_until('M-1 synced', sub { status_of('M-1') eq 'synced  ' }), 'a fixed row is delivered');
is(company('M-1')->{properties}{annualrevenue}, '55', 'with its new value');

# text that is not UTF-8 (possible in an SQL_ASCII database) is never sent
{
	my $ascii = erpcrm_node('values_ascii',
		init => { extra => [ '--encoding=SQL_ASCII', '--locale=C' ] });
	is($ascii->safe_psql('postgres', 'SHOW server_encoding'), 'SQL_ASCII', 'a cluster in SQL_ASCII');
	load_erp($ascii);
	$ascii->safe_psql('postgres', $metrics);
	$ascii->safe_psql('postgres', q{INSERT INTO erp.metrics (id, notes) VALUES (11, E'za\\xbf\\xf3\\xb3\\xe6')});
	ok(poll_until('M-11 failed', sub { status_of('M-11', $ascii) =~ /^failed/ }), 'a text that is not UTF-8 fails');
	is(status_of('M-11', $ascii),
		'failed ERP_VALUE_NOT_REPRESENTABLE property "description": the text is not valid UTF-8 (the database encoding is SQL_ASCII)',
		'with its reason');
	$ascii->stop;
}

# a row without erp_id: reported by a resync, in the server log by the worker's fold
$node->safe_psql('postgres', "INSERT INTO erp.metrics (id, score) VALUES (NULL, 1)");
my ($rc, $out, $err) = $node->psql('postgres', "SELECT erpcrm.resync('metrics')");
like($err, qr/WARNING:  rows of erp\.hs_metrics have a NULL erp_id and cannot be sent to HubSpot/,
	'resync warns about rows without erp_id');
is($node->safe_psql('postgres', "SELECT error_category || ' ' || error_message FROM erpcrm.failures WHERE mapping = 'metrics' AND erp_id = ''"),
	'ERP_NULL_ID rows of erp.hs_metrics have a NULL erp_id: they cannot be sent to HubSpot',
	'erpcrm.failures shows them');

done_testing();

# One bad row fails alone: a row the mapping view cannot read (division by
# zero, a failed cast, a function that raises), a key over the 2048-byte
# limit, an input HubSpot answers with a 5xx every time, an association
# HubSpot keeps refusing.  Each is parked as failed with its reason; every
# other key and mapping goes on.  erpcrm.discard() stops one key.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('badrows', conf => "erpcrm.batch_size = 10\nerpcrm.max_attempts = 3\n");
load_erp($node);

# A mapping whose view can fail on single rows.  It is defined before the
# others are fed, and its keys sort between the companies and the contacts
# in the worker's order: an error that stopped the cycle would stop them.
$node->safe_psql('postgres', q{
CREATE TABLE erp.parts (
	id integer PRIMARY KEY,
	name text NOT NULL,
	pack integer NOT NULL,
	weight text,
	note text
);
CREATE FUNCTION erp.checked(t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	IF t = 'broken' THEN
		RAISE EXCEPTION 'note "%" is not allowed', t USING DETAIL = 'erp.checked refuses it.';
	END IF;
	RETURN t;
END $$;
CREATE VIEW erp.hs_parts AS
SELECT 'P-' || id AS erp_id, name, (1200 / pack)::numeric AS price,
	   weight::numeric AS hs_cost_of_goods_sold, erp.checked(note) AS description
  FROM erp.parts;
SELECT erpcrm.map('parts', 'erp.hs_parts', 'products');
SELECT erpcrm.watch('parts', 'erp.parts', '''P-'' || id');
});

sub failures
{
	my ($mapping) = @_;
	return $node->safe_psql('postgres', qq{
SELECT string_agg(erp_id || ' ' || error_category || ' ' || error_message, E'\n' ORDER BY erp_id)
  FROM erpcrm.failures WHERE mapping = '$mapping'});
}

sub in_hubspot
{
	my ($type, $prefix) = @_;
	return scalar grep { !$_->{archived} && ($_->{properties}{erp_id} // '') =~ /^\Q$prefix\E/ }
	  @{ ErpcrmTest::mock_get("/_mock/objects/$type")->{results} };
}

# --- 10.7: three bad rows among 30, with companies and contacts around them
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(1, 12) g;
INSERT INTO erp.parts SELECT g, 'Część ' || g, 1 + g % 5, (g * 0.5)::text, 'ok' FROM generate_series(1, 30) g;
UPDATE erp.parts SET pack = 0 WHERE id = 7;				-- division by zero
UPDATE erp.parts SET weight = 'ciężka' WHERE id = 18;	-- a failed cast
UPDATE erp.parts SET note = 'broken' WHERE id = 25;		-- a function that raises
INSERT INTO erp.persons SELECT 100 + g, g, 'osoba' || g || '@firma.pl', 'Imię', 'Nazwisko' FROM generate_series(1, 12) g;
});
ok(wait_synced($node, 60), 'bad rows: everything else is delivered (failed keys do not count)');
is(in_hubspot('products', 'P-'), 27, 'bad rows: the 27 good parts are in HubSpot');
my %sample = ErpcrmTest::sample_mappings();
state_ok($node, 'bad rows: the other mappings hold exactly the ERP',
	mappings => [ grep { $_->{name} ne 'products' } @{ $sample{mappings} } ],
	associations => $sample{associations});
my $f = failures('parts');
like($f, qr/^P-18 ERP_ROW_ERROR reading erp\.hs_parts failed for this row: invalid input syntax for type numeric: "ciężka" \(SQLSTATE 22P02\)$/m,
	'a failed cast: the key is parked with the SQL error and its SQLSTATE');
like($f, qr/^P-25 ERP_ROW_ERROR reading erp\.hs_parts failed for this row: note "broken" is not allowed \(SQLSTATE P0001\)\. erp\.checked refuses it\.$/m,
	'a function that raises: parked with its message, SQLSTATE and detail');
like($f, qr/^P-7 ERP_ROW_ERROR reading erp\.hs_parts failed for this row: division by zero \(SQLSTATE 22012\)$/m,
	'a division by zero: parked');
is(scalar(split /\n/, $f), 3, 'exactly the three bad rows failed');
isnt($node->safe_psql('postgres', 'SELECT state FROM erpcrm.worker'), 'backing off',
	'the worker does not back off for a bad row');
ok($node->log_contains(qr/key "P-7" of mapping "parts" is parked as failed: division by zero/),
	'the server log names the mapping and the key');

# a fixed row is sent again by itself
$node->safe_psql('postgres', "UPDATE erp.parts SET pack = 3 WHERE id = 7");
ok(poll_until('P-7 synced', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('parts', 'P-7')") eq 'synced' }),
	'the fixed row is delivered when it changes');

# a view broken as a whole (a function it calls is gone): its keys retry,
# then are parked after erpcrm.max_attempts; the other mappings go on
$node->safe_psql('postgres', q{
CREATE FUNCTION erp.fragile(t text) RETURNS text LANGUAGE sql AS 'SELECT t';
CREATE VIEW erp.hs_fragile AS SELECT 'F-' || id AS erp_id, erp.fragile(name) AS name FROM erp.parts WHERE id <= 2;
SELECT erpcrm.map('fragile', 'erp.hs_fragile', 'products');
REVOKE EXECUTE ON FUNCTION erp.fragile(text) FROM PUBLIC;
CREATE ROLE fragile_admin IN ROLE erpcrm_admin;
GRANT USAGE ON SCHEMA erp TO fragile_admin;
GRANT SELECT ON erp.hs_fragile TO fragile_admin;
});
# map() as a role that can read the view but not execute the function
$node->safe_psql('postgres', q{
SET ROLE fragile_admin;
SELECT erpcrm.map('fragile', 'erp.hs_fragile', 'products');
RESET ROLE;
SELECT erpcrm.requeue('fragile', 'F-1'), erpcrm.requeue('fragile', 'F-2');
INSERT INTO erp.customers (id, name) VALUES (13, 'Firma 13');
});
ok(poll_until('fragile keys parked', sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.failures WHERE mapping = 'fragile'") eq '2' }, 90),
	'a view that cannot be read at all: its keys are parked after erpcrm.max_attempts');
like(failures('fragile'), qr/^F-1 ERP_VIEW_ERROR reading erp\.hs_fragile failed for this row: permission denied for function fragile \(SQLSTATE 42501\) \(given up after 3 attempts\)$/m,
	'the reason says what failed and that erpcrm gave up');
ok(poll_until('company 13', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('companies', '13')") eq 'synced' }),
	'meanwhile the other mappings go on');

# --- 10.8: keys over 2048 bytes never block the fold; the ERP's write succeeds
$node->safe_psql('postgres', q{
CREATE TABLE erp.labels (code text, name text);
CREATE VIEW erp.hs_labels AS SELECT code AS erp_id, name FROM erp.labels;
SELECT erpcrm.map('labels', 'erp.hs_labels', 'products');
SELECT erpcrm.watch('labels', 'erp.labels', 'code');
});
my ($rc, $out, $err) = $node->psql('postgres', q{
INSERT INTO erp.labels VALUES ('L-1', 'krótki'), (repeat('A', 3000), 'długi'), (repeat('B', 2048), 'na granicy');
INSERT INTO erp.labels SELECT repeat('C', 100000) || g, 'ogromny ' || g FROM generate_series(1, 10) g;
INSERT INTO erp.customers (id, name) VALUES (14, 'Firma 14');
});
is($rc, 0, 'long keys: the ERP writes succeed') or diag($err);
ok(wait_synced($node, 60), 'long keys: the fold goes on and the rest is delivered');
is(in_hubspot('products', 'L-'), 1, 'the short label is in HubSpot');
is($node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('labels', repeat('B', 2048))"),
	'synced', 'a key of exactly 2048 bytes is delivered');
is($node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('companies', '14')"),
	'synced', 'other mappings go on');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM erpcrm.failures
 WHERE mapping = 'labels' AND error_category = 'ERP_KEY_TOO_LONG'}), '11',
	'every long key is parked, visibly');
like($node->safe_psql('postgres', q{
SELECT state || ' ' || error_message FROM erpcrm.key_status('labels', repeat('A', 3000))}),
	qr/^failed the key is 3000 bytes long, and erpcrm keys are at most 2048 bytes; it begins with: A{64}$/,
	'key_status finds a long key by the key itself');

# --- 10.7: HubSpot answers 500 to every batch that holds one input
ErpcrmTest::mock_post('/_mock/faults', { fail_ids => { ids => ['R-5'], status => 500 } });
$node->safe_psql('postgres', q{
INSERT INTO erp.products SELECT 'R-' || g, 'Produkt ' || g, g FROM generate_series(1, 10) g;
});
ok(poll_until('R-5 parked', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('products', 'R-5')") eq 'failed' }, 90),
	'an input HubSpot always fails with a 5xx is parked after erpcrm.max_attempts');
like($node->safe_psql('postgres', "SELECT http_status || ' ' || error_message FROM erpcrm.key_status('products', 'R-5')"),
	qr/^500 .*internal error \(mock fail_ids\) \(given up after 3 attempts\)$/,
	'with HubSpot\'s answer as the reason');
ok(wait_synced($node, 30), 'the other nine products are delivered');
is(in_hubspot('products', 'R-'), 9, 'nine of ten products are in HubSpot');
ErpcrmTest::mock_post('/_mock/faults', {});

# an outage is not the fault of an input: nothing is parked for it
ErpcrmTest::mock_post('/_mock/faults', { down => '503' });
$node->safe_psql('postgres', q{UPDATE erp.products SET price = price + 1 WHERE sku IN ('R-1', 'R-2', 'R-3')});
ok(poll_until('attempts', sub {
	$node->safe_psql('postgres', "SELECT min(attempts) >= 4 FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'products' AND erp_id IN ('R-1', 'R-2', 'R-3')") eq 't' }, 90),
	'an outage: keys retry beyond erpcrm.max_attempts');
is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.failures WHERE erp_id IN ('R-1', 'R-2', 'R-3')"),
	'0', 'an outage parks nothing');
ErpcrmTest::mock_post('/_mock/faults', {});
ok(wait_synced($node, 60), 'after the outage the keys are delivered');

# --- 10.7: an association HubSpot keeps refusing
my $company = $node->safe_psql('postgres', "SELECT hubspot_id FROM erpcrm.key_status('companies', '3')");
ErpcrmTest::mock_post('/_mock/faults', { reject_ids => [$company] });
$node->safe_psql('postgres', q{
INSERT INTO erp.persons VALUES (200, 3, 'nowa@firma.pl', 'Nowa', 'Osoba'), (201, 4, 'inna@firma.pl', 'Inna', 'Osoba');
});
ok(poll_until('contact 200 parked', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('contacts', '200')") eq 'failed' }, 90),
	'a refused association is parked after erpcrm.max_attempts');
like($node->safe_psql('postgres', "SELECT error_category || ' ' || error_message FROM erpcrm.key_status('contacts', '200')"),
	qr/^ASSOCIATION association to companies "3" was refused: .*rejected.* \(given up after 3 attempts\)$/,
	'with the refusal as the reason');
is($node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('contacts', '201')"), 'synced',
	'a contact whose association is accepted is delivered');
ErpcrmTest::mock_post('/_mock/faults', {});

# --- a 400 for a whole association call, caused by one pair: split until it stands alone
$company = $node->safe_psql('postgres', "SELECT hubspot_id FROM erpcrm.key_status('companies', '5')");
ErpcrmTest::mock_post('/_mock/faults', { fail_ids => { ids => [$company], status => 400 } });
$node->safe_psql('postgres', q{
INSERT INTO erp.persons VALUES (202, 5, 'piata@firma.pl', 'Piąta', 'Osoba'), (203, 6, 'szosta@firma.pl', 'Szósta', 'Osoba'),
	(204, 7, 'siodma@firma.pl', 'Siódma', 'Osoba');
});
ok(poll_until('contact 202 failed', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('contacts', '202')") eq 'failed' }),
	'an association call refused whole for one pair: that key fails');
like($node->safe_psql('postgres', "SELECT error_message FROM erpcrm.key_status('contacts', '202')"),
	qr/^association to companies "5": invalid input \(mock fail_ids\)$/, 'with HubSpot\'s reason');
is($node->safe_psql('postgres', "SELECT string_agg(state, ',' ORDER BY erp_id) FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'contacts' AND erp_id IN ('203', '204')"),
	'synced,synced', 'the other pairs of the call are made');
ErpcrmTest::mock_post('/_mock/faults', {});

# --- erpcrm.discard(): stops one key, recorded, undone by a change or a requeue
is($node->safe_psql('postgres', "SELECT erpcrm.discard('parts', 'P-18')"), 't', 'discard a failed key');
is($node->safe_psql('postgres', "SELECT state || ' ' || error_category || ' ' || error_message FROM erpcrm.key_status('parts', 'P-18')"),
	'discarded DISCARDED discarded by ' . $node->safe_psql('postgres', 'SELECT current_user')
	  . ' (it was failed: reading erp.hs_parts failed for this row: invalid input syntax for type numeric: "ciężka" (SQLSTATE 22P02))',
	'key_status shows who discarded it and what it was');
is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.failures WHERE erp_id = 'P-18'"), '0',
	'a discarded key is not a failure');
is($node->safe_psql('postgres', "SELECT erpcrm.discard('parts', 'P-99')"), 'f',
	'discarding an unknown key says so');
$node->safe_psql('postgres', "UPDATE erp.parts SET weight = '2.5' WHERE id = 18");
ok(poll_until('P-18 synced', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('parts', 'P-18')") eq 'synced' }),
	'a change of a discarded key sends it again');
$node->safe_psql('postgres', "SELECT erpcrm.discard('parts', 'P-1')");
$node->safe_psql('postgres', "UPDATE erp.parts SET name = 'Zmieniona' WHERE id = 1");
# the change above comes after the discard: it is sent
ok(poll_until('P-1 synced', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('parts', 'P-1')") eq 'synced' }),
	'a discarded key that changes again is sent');
my $p2_name = sub {
	my ($p2) = grep { ($_->{properties}{erp_id} // '') eq 'P-2' }
	  @{ ErpcrmTest::mock_get('/_mock/objects/products')->{results} };
	return $p2->{properties}{name};
};
my $p2_before = $p2_name->();
ok(defined $p2_before, 'P-2 is in HubSpot before the discard');
$node->safe_psql('postgres', "SELECT erpcrm.pause('parts')");
$node->safe_psql('postgres', "UPDATE erp.parts SET name = 'Niechciana' WHERE id = 2");
$node->safe_psql('postgres', "SELECT erpcrm.discard('parts', 'P-2')");
$node->safe_psql('postgres', "SELECT erpcrm.resume('parts')");
# a later change of another part is delivered; the discarded one is not
$node->safe_psql('postgres', "UPDATE erp.parts SET name = 'Po wznowieniu' WHERE id = 3");
ok(poll_until('P-3 synced', sub {
	$node->safe_psql('postgres', "SELECT state = 'synced' AND NOT unfolded FROM erpcrm.key_status('parts', 'P-3')") eq 't' }),
	'the mapping delivers again after the resume');
is($node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('parts', 'P-2')"), 'discarded',
	'a change captured before the discard is discarded with it');
is($p2_name->(), $p2_before, 'HubSpot keeps what it had: the discarded change never reached it');
$node->safe_psql('postgres', "SELECT erpcrm.requeue('parts', 'P-2')");
ok(poll_until('P-2 synced', sub {
	$node->safe_psql('postgres', "SELECT state FROM erpcrm.key_status('parts', 'P-2')") eq 'synced' }),
	'a requeue undoes a discard');

done_testing();

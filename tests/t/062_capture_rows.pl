# Captured UPDATEs where regress cannot look: concurrent UPDATEs (the
# waiting one is rechecked on the row as the other left it, EvalPlanQual),
# rows moved between partitions, a table rewritten by ALTER TABLE, prepared
# transactions, a large UPDATE in a savepoint.  Every key a committed UPDATE
# changed is recorded, and the keys of what is rolled back never.
#
# The ERP lives in its own database, which the worker does not serve, so
# the outbox holds what each transaction captured until the test reads it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use IPC::Run;

start_mock();
my $node = erpcrm_node('capture_rows', conf => "max_prepared_transactions = 5\n");
$node->safe_psql('postgres', 'CREATE DATABASE erp');
$node->safe_psql('erp', 'CREATE EXTENSION erpcrm');
$node->safe_psql('erp', ErpcrmTest::erp_tables());
$node->safe_psql('erp', q{
CREATE VIEW erp.hs_companies AS SELECT id AS erp_id, name FROM erp.customers;
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(1, 10) g;
});

# the keys captured since the last call, sorted, and the outbox emptied
sub drained
{
	return $node->safe_psql('erp', q{
WITH d AS (DELETE FROM erpcrm.outbox RETURNING *)
SELECT COALESCE(string_agg(k, ',' ORDER BY k COLLATE "C"), '')
  FROM d CROSS JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS u(k)});
}

drained();

# a session that holds rows while another UPDATE waits for them
sub session
{
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('erp') ],
		'<', \$in, '>', \$out, '2>', \$err);
	return { h => $h, in => \$in, out => \$out, err => \$err };
}

sub send_sql
{
	my ($s, $sql, $until, $what) = @_;
	${ $s->{in} } .= $sql;
	ok(poll_until($what, sub { $s->{h}->pump_nb; ${ $s->{out} } =~ $until }), $what);
}

# feeds the session its input until it waits for a row lock
sub waiting_for_lock
{
	my ($s) = @_;
	return poll_until('a session waits for a lock', sub {
		$s->{h}->pump_nb;
		$node->safe_psql('erp', q{
SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = 'erp' AND wait_event_type = 'Lock')}) eq 't';
	});
}

# 1. The key moves while another UPDATE waits for the row: the waiting
# UPDATE runs on the row as the first one left it, and records that key.
{
	my $a = session();
	send_sql($a, "BEGIN;\nUPDATE erp.customers SET id = 501 WHERE id = 5;\nSELECT 'a updated';\n",
		qr/a updated/, 'session A moves key 5 to 501 and holds the row');
	my $b = session();
	${ $b->{in} } .= "UPDATE erp.customers SET name = name || ' (B)' WHERE name = 'Firma 5';\nSELECT 'b done';\n";
	ok(waiting_for_lock($b), 'session B waits for the row');
	send_sql($a, "COMMIT;\nSELECT 'a committed';\n", qr/a committed/, 'session A commits');
	ok(poll_until('B is done', sub { $b->{h}->pump_nb; ${ $b->{out} } =~ /b done/ }),
		'session B goes on');
	is(drained(), '5,501,501',
		"A's keys, the old and the new, and B's: its UPDATE, rechecked on the moved row, records the key as it is now");
	is($node->safe_psql('erp', "SELECT name FROM erp.customers WHERE id = 501"), 'Firma 5 (B)',
		'B updated the moved row');

	# the row changes so that the waiting UPDATE no longer matches it:
	# nothing written, at most a key that did not change
	send_sql($a, "BEGIN;\nUPDATE erp.customers SET name = 'Firma 6 renamed' WHERE id = 6;\nSELECT 'a2';\n",
		qr/a2/, 'session A renames customer 6 and holds the row');
	${ $b->{in} } .= "UPDATE erp.customers SET nip = '6' WHERE name = 'Firma 6';\nSELECT 'b2 done';\n";
	ok(waiting_for_lock($b), 'session B waits for it');
	send_sql($a, "COMMIT;\nSELECT 'a2 committed';\n", qr/a2 committed/, 'session A commits');
	ok(poll_until('B is done', sub { $b->{h}->pump_nb; ${ $b->{out} } =~ /b2 done/ }),
		'session B goes on');
	is(drained(), '6', 'the key changed by A only once; B updated nothing');
	is($node->safe_psql('erp', "SELECT nip IS NULL FROM erp.customers WHERE id = 6"), 't',
		'B skipped the row that no longer matched');

	# the waiting UPDATE is rolled back: A's key only
	send_sql($a, "BEGIN;\nUPDATE erp.customers SET name = 'Firma 7 renamed' WHERE id = 7;\nSELECT 'a3';\n",
		qr/a3/, 'session A renames customer 7 and holds the row');
	${ $b->{in} } .= "BEGIN;\nUPDATE erp.customers SET id = 701 WHERE id = 7;\nSELECT 'b3 updated';\n";
	ok(waiting_for_lock($b), 'session B waits for it');
	send_sql($a, "COMMIT;\nSELECT 'a3 committed';\n", qr/a3 committed/, 'session A commits');
	ok(poll_until('B updated', sub { $b->{h}->pump_nb; ${ $b->{out} } =~ /b3 updated/ }),
		'session B updates the row');
	${ $b->{in} } .= "ROLLBACK;\nSELECT 'b3 rolled back';\n";
	ok(poll_until('B rolled back', sub { $b->{h}->pump_nb; ${ $b->{out} } =~ /b3 rolled back/ }),
		'session B rolls back');
	is(drained(), '7', 'the rolled-back UPDATE left no key');

	${ $a->{in} } .= "\\q\n";
	${ $b->{in} } .= "\\q\n";
	$a->{h}->finish;
	$b->{h}->finish;
}

# 2. A row moved to another partition: the old key and the new one.
$node->safe_psql('erp', q{
CREATE TABLE erp.stock (warehouse text, sku text, qty integer) PARTITION BY LIST (warehouse);
CREATE TABLE erp.stock_waw PARTITION OF erp.stock FOR VALUES IN ('WAW');
CREATE TABLE erp.stock_krk PARTITION OF erp.stock FOR VALUES IN ('KRK');
CREATE VIEW erp.hs_stock AS SELECT warehouse || '/' || sku AS erp_id, qty AS quantity FROM erp.stock;
SELECT erpcrm.map('stock', 'erp.hs_stock', 'line_items');
SELECT erpcrm.watch('stock', 'erp.stock', 'warehouse || ''/'' || sku');
INSERT INTO erp.stock VALUES ('WAW', 'P-1', 1), ('KRK', 'P-2', 2);
});
drained();
$node->safe_psql('erp', "UPDATE erp.stock SET warehouse = 'KRK' WHERE sku = 'P-1'");
is(drained(), 'KRK/P-1,WAW/P-1', 'a row moved between partitions: both keys');
$node->safe_psql('erp', "UPDATE erp.stock_krk SET qty = qty + 1");
is(drained(), 'KRK/P-1,KRK/P-2', 'an UPDATE of a partition itself');

# 3. The key's column retyped (the table rewritten) and renamed: the
# triggers stay, and compute the key from the new column.
$node->safe_psql('erp', q{
CREATE TABLE erp.regions (code integer PRIMARY KEY, name text);
SELECT erpcrm.watch('companies', 'erp.regions', 'code');
INSERT INTO erp.regions VALUES (1, 'North'), (2, 'South');
ALTER TABLE erp.regions ALTER COLUMN code TYPE bigint;
ALTER TABLE erp.regions RENAME COLUMN code TO region_code;
});
is($node->safe_psql('erp', "SELECT key_expr FROM erpcrm.watch WHERE source = 'erp.regions'::regclass"),
	'(region_code)::text', 'the key follows the retyped and renamed column');
drained();
$node->safe_psql('erp', q{
UPDATE erp.regions SET name = 'x' WHERE region_code = 1;
UPDATE erp.regions SET region_code = 1000000000000 WHERE region_code = 2;
});
is(drained(), '1,1000000000000,2', 'UPDATEs after the rewrite record the right keys');

# 4. A prepared transaction: the keys are written at PREPARE, and stay only
# if it commits.
$node->safe_psql('erp', q{
BEGIN;
UPDATE erp.customers SET name = 'p' WHERE id = 3;
PREPARE TRANSACTION 'p1';
BEGIN;
UPDATE erp.customers SET name = 'q' WHERE id = 4;
PREPARE TRANSACTION 'p2';
COMMIT PREPARED 'p1';
ROLLBACK PREPARED 'p2';
});
is(drained(), '3', 'a committed prepared UPDATE records its key, a rolled-back one none');

# 5. A large UPDATE (more keys than the buffer holds) in a subtransaction
# rolled back, next to one kept.
$node->safe_psql('erp', q{
INSERT INTO erp.customers (id, name) SELECT g, 'Bulk ' || g FROM generate_series(10001, 20000) g;
});
drained();
$node->safe_psql('erp', q{
BEGIN;
SAVEPOINT s;
UPDATE erp.customers SET name = name || '!' WHERE id > 10000;
ROLLBACK TO SAVEPOINT s;
UPDATE erp.customers SET name = name || '?' WHERE id BETWEEN 10001 AND 15000;
COMMIT;
});
is($node->safe_psql('erp', q{
SELECT count(*) || ' ' || min(k::bigint) || '-' || max(k::bigint)
  FROM erpcrm.outbox o CROSS JOIN LATERAL unnest(COALESCE(o.erp_ids, ARRAY[o.erp_id])) AS u(k)}),
	'5000 10001-15000', 'only the UPDATE that was kept is recorded');
drained();

$node->stop;
done_testing();

# Watches made by 1.2 capture UPDATEs with this library before and after
# ALTER EXTENSION UPDATE, and after a dump and restore: every changed key,
# the key a BEFORE trigger changes included (whether it fires before or
# after erpcrm's triggers, in name order), nothing for a row that did not
# change, and a disabled capture trigger stays disabled.
#
# The ERP lives in databases the worker does not serve, so the outbox holds
# what each statement captured until the test reads it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('capture_restore');
$node->safe_psql('postgres', 'CREATE DATABASE erp');
$node->safe_psql('erp', "CREATE EXTENSION erpcrm VERSION '1.2'");
$node->safe_psql('erp', ErpcrmTest::erp_tables());
$node->safe_psql('erp', q{
CREATE VIEW erp.hs_companies AS SELECT id AS erp_id, name FROM erp.customers;
CREATE VIEW erp.hs_products AS SELECT sku AS erp_id, name, price FROM erp.products;
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.map('products', 'erp.hs_products', 'products');
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
SELECT erpcrm.watch('products', 'erp.products', 'sku');
-- prices: a trigger that fires after erpcrm's (name order) upper-cases the key
CREATE TABLE erp.prices (sku text PRIMARY KEY, price numeric, changed_at timestamptz);
CREATE FUNCTION erp.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.sku := upper(NEW.sku);
	NEW.changed_at := now();
	RETURN NEW;
END $$;
CREATE TRIGGER zz_touch BEFORE UPDATE ON erp.prices FOR EACH ROW EXECUTE FUNCTION erp.touch();
SELECT erpcrm.watch('products', 'erp.prices', 'sku');
ALTER TABLE erp.products DISABLE TRIGGER erpcrm_watch_2_u;
INSERT INTO erp.customers (id, name) VALUES (1, 'Alfa'), (2, 'Beta');
INSERT INTO erp.products VALUES ('P-1', 'Pen', 1);
INSERT INTO erp.prices VALUES ('q-1', 1), ('q-2', 2), ('q-4', 4);
});

# "table: timing level[, disabled]" of every watch's UPDATE trigger
my $forms = q{
SELECT string_agg(w.source::regclass || ': '
		|| CASE WHEN t.tgtype & 2 = 2 THEN 'before' ELSE 'after' END
		|| CASE WHEN t.tgtype & 1 = 1 THEN ' each row' ELSE ' each statement' END
		|| CASE t.tgenabled WHEN 'D' THEN ', disabled' ELSE '' END, '; ' ORDER BY w.watch_id)
  FROM erpcrm.watch w JOIN pg_trigger t ON t.tgrelid = w.source AND t.tgname = w.trigger_name || '_u'};

sub drained
{
	my ($db) = @_;
	return $node->safe_psql($db, q{
WITH d AS (DELETE FROM erpcrm.outbox RETURNING *)
SELECT COALESCE(string_agg(m.name || ':' || k, ',' ORDER BY m.name, k COLLATE "C"), '')
  FROM d JOIN erpcrm.mapping m USING (mapping_id)
 CROSS JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS u(k)});
}

is($node->safe_psql('erp', $forms),
	'erp.customers: after each statement; erp.products: after each statement, disabled; erp.prices: after each statement',
	'1.2 captures UPDATEs once per statement');
drained('erp');
$node->safe_psql('erp', q{
UPDATE erp.customers SET name = 'Alfa sp. z o.o.' WHERE id = 1;
UPDATE erp.prices SET price = price + 1 WHERE sku = 'q-2';
UPDATE erp.customers SET name = name;
});
is(drained('erp'), 'companies:1,products:Q-2,products:q-2',
	'1.2 watches capture with this library');

$node->safe_psql('erp', 'ALTER EXTENSION erpcrm UPDATE');
is($node->safe_psql('erp', $forms),
	'erp.customers: after each statement; erp.products: after each statement, disabled; erp.prices: after each statement',
	'after the upgrade: the same triggers, a disabled one still disabled');

$node->safe_psql('erp', q{
ALTER TABLE erp.products ENABLE TRIGGER erpcrm_watch_2_u;
UPDATE erp.customers SET name = 'Alfa S.A.' WHERE id = 1;
UPDATE erp.products SET price = 2;
UPDATE erp.prices SET price = price + 1 WHERE sku = 'q-1';
});
is(drained('erp'), 'companies:1,products:P-1,products:Q-1,products:q-1',
	'after the upgrade every changed key is recorded, the one a later trigger changed included');

# dump and restore into a new database
my $dump = $node->basedir . '/erp.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('erp') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE erp2');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '--single-transaction', '-d', $node->connstr('erp2'), $dump ],
	'pg_restore');
is($node->safe_psql('erp2', $forms),
	'erp.customers: after each statement; erp.products: after each statement; erp.prices: after each statement',
	'restored: the same triggers');
drained('erp2');
$node->safe_psql('erp2', q{
UPDATE erp.customers SET id = 3 WHERE id = 2;
UPDATE erp.prices SET price = price + 1 WHERE sku = 'q-4';
UPDATE erp.products SET name = name;
});
is(drained('erp2'), 'companies:2,companies:3,products:Q-4,products:q-4',
	'restored: every changed key, nothing for a row that did not change');

# the trigger renamed to fire before erpcrm's: the same keys
$node->safe_psql('erp2', 'ALTER TRIGGER zz_touch ON erp.prices RENAME TO a_touch');
$node->safe_psql('erp2', q{
INSERT INTO erp.prices VALUES ('q-3', 3);
});
drained('erp2');
$node->safe_psql('erp2', "UPDATE erp.prices SET price = 4 WHERE sku = 'q-3'");
is(drained('erp2'), 'products:Q-3,products:q-3', 'the key it changed is recorded');

$node->stop;
done_testing();

# pg_dump / pg_restore of a database whose watched table once had a dropped
# column: the restored triggers capture the right keys, and HubSpot ends as
# the ERP says.  A mapping's view dropped and created again: the mapping
# says what is wrong by name while it is gone, and delivers once it is back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use IPC::Run;

start_mock();
my $old = erpcrm_node('before_dump');
load_erp($old);

# regions become deals; the table lost a column before its key column
$old->safe_psql('postgres', q{
CREATE TABLE erp.regions (legacy integer, code text PRIMARY KEY, name text NOT NULL);
CREATE VIEW erp.hs_regions AS SELECT code AS erp_id, name AS dealname FROM erp.regions;
SELECT erpcrm.map('regions', 'erp.hs_regions', 'deals');
SELECT erpcrm.watch('regions', 'erp.regions', 'code');
INSERT INTO erp.regions VALUES (1, 'R1', 'North'), (2, 'R2', 'South');
ALTER TABLE erp.regions DROP COLUMN legacy;
INSERT INTO erp.regions VALUES ('R3', 'East');
INSERT INTO erp.customers (id, name, domain) VALUES (1, 'Alfa', 'alfa.pl'), (2, 'Beta', 'beta.pl');
INSERT INTO erp.persons VALUES (1, 1, 'anna@alfa.pl', 'Anna', 'Nowak');
INSERT INTO erp.products VALUES ('P-1', 'Pen', 2.50);
});
$old->safe_psql('postgres', "SELECT erpcrm.resync(name) FROM erpcrm.mapping");
ok(wait_synced($old), 'before the dump: synced');

my %mappings = ErpcrmTest::sample_mappings();
push @{ $mappings{mappings} },
  { name => 'regions', view => 'erp.hs_regions', type => 'deals', archive => 1 };
state_ok($old, 'before the dump: HubSpot holds what the ERP says', %mappings);

# dump, and restore into a new cluster (the old one is gone)
my $dump = $old->basedir . '/erp.dump';
$old->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $old->connstr('postgres') ],
	'pg_dump');
$old->stop;

my $new = erpcrm_node('restored');
$new->command_ok([ 'pg_restore', '--exit-on-error', '-d', $new->connstr('postgres'), $dump ],
	'pg_restore');
is($new->safe_psql('postgres',
	"SELECT count(*) FROM erpcrm.sync_state WHERE state = 'synced'"),
	'7', 'the sync state came along');

# writes after the restore are captured with the right keys
$new->safe_psql('postgres', q{
UPDATE erp.regions SET name = 'North-West' WHERE code = 'R1';
INSERT INTO erp.regions VALUES ('R4', 'West');
DELETE FROM erp.regions WHERE code = 'R2';
UPDATE erp.customers SET name = 'Alfa sp. z o.o.' WHERE id = 1;
});
ok(wait_synced($new), 'after the restore: synced');
is($new->safe_psql('postgres',
	"SELECT string_agg(erp_id, ',' ORDER BY erp_id) FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'regions'"),
	'R1,R2,R3,R4', 'no key made of another column');
state_ok($new, 'after the restore: HubSpot holds what the ERP says', %mappings);

# the view of a mapping dropped: named, by mapping, while it is gone
$new->safe_psql('postgres', q{
DROP VIEW erp.hs_regions;
UPDATE erp.regions SET name = 'North' WHERE code = 'R1';
});
ok(poll_until('the worker names the mapping',
	sub {
		$new->safe_psql('postgres', 'SELECT detail FROM erpcrm.worker') =~
		  /mapping "regions": its source erp\.hs_regions does not exist/;
	}), 'erpcrm.worker names the mapping whose view is gone');
is($new->safe_psql('postgres',
	"SELECT source || ' | ' || problem FROM erpcrm.status WHERE mapping = 'regions'"),
	'erp.hs_regions | its source erp.hs_regions does not exist; changes wait until it is created again',
	'erpcrm.status names the view and the problem');
ok(!wait_synced($new, 2), 'its keys wait');

# created again: delivered, no map() needed
$new->safe_psql('postgres', q{
CREATE VIEW erp.hs_regions AS SELECT code AS erp_id, name AS dealname FROM erp.regions;
});
ok(wait_synced($new), 'the view is back: synced');
is($new->safe_psql('postgres', "SELECT problem IS NULL FROM erpcrm.status WHERE mapping = 'regions'"),
	't', 'no problem left');
state_ok($new, 'HubSpot holds what the ERP says', %mappings);

# the view of an association's target dropped: the mappings associated to
# it wait, by name, and every other mapping goes on
$new->safe_psql('postgres', q{
DROP VIEW erp.hs_companies;
UPDATE erp.persons SET first_name = 'Anna Maria' WHERE id = 1;
UPDATE erp.products SET price = 3.10 WHERE sku = 'P-1';
UPDATE erp.regions SET name = 'Far East' WHERE code = 'R3';
});
ok(poll_until('the other mappings are delivered',
	sub { $new->safe_psql('postgres',
		"SELECT erpcrm.wait_for_sync('1 second', 'products') AND erpcrm.wait_for_sync('1 second', 'regions')") eq 't' }),
	'the other mappings go on');
ok(poll_until('the worker says why contacts wait',
	sub { $new->safe_psql('postgres', 'SELECT state || \': \' || detail FROM erpcrm.worker') =~
		  /^idle: .*mapping "contacts": waits for mapping "companies"/ }),
	'the worker is not backing off, and says why contacts wait');
like($new->safe_psql('postgres', "SELECT problem FROM erpcrm.status WHERE mapping = 'contacts'"),
	qr/waits for mapping "companies", whose source does not exist/, 'contacts say what they wait for');
$new->safe_psql('postgres', q{
CREATE VIEW erp.hs_companies AS
SELECT id AS erp_id, name, nip, domain, price_level, credit_limit,
	   customer_since, last_order_at, vip
  FROM erp.customers WHERE active;
});
ok(wait_synced($new), 'the target view is back: synced');
state_ok($new, 'HubSpot holds what the ERP says', %mappings);

# a watched table dropped with CASCADE leaves no watch behind
$new->safe_psql('postgres', 'DROP TABLE erp.regions CASCADE');
is($new->safe_psql('postgres',
	"SELECT count(*) FROM erpcrm.watch w WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = w.source)"),
	'0', 'no watch points at nothing');
like($new->safe_psql('postgres', "SELECT problem FROM erpcrm.status WHERE mapping = 'regions'"),
	qr/its source erp\.hs_regions does not exist/, 'the mapping says its view is gone');

# DDL while long-lived ERP sessions write: every session compiles the key
# again after each change, no write fails, nothing is captured wrong
$new->safe_psql('postgres', q{
CREATE TABLE erp.moves (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE erp.move_lines (note text, move_id integer NOT NULL, line integer NOT NULL,
	qty integer NOT NULL, PRIMARY KEY (move_id, line));
CREATE FUNCTION erp.move_qty(integer) RETURNS bigint LANGUAGE plpgsql STABLE
	AS $$ BEGIN RETURN (SELECT COALESCE(sum(qty), 0) FROM erp.move_lines WHERE move_id = $1); END $$;
CREATE VIEW erp.hs_moves AS SELECT m.id AS erp_id, m.name, erp.move_qty(m.id) AS quantity FROM erp.moves m;
INSERT INTO erp.moves SELECT g, 'Move ' || g FROM generate_series(1, 20) g;
SELECT erpcrm.map('moves', 'erp.hs_moves', 'line_items');
SELECT erpcrm.watch('moves', 'erp.moves', 'id');
SELECT erpcrm.watch('moves', 'erp.move_lines', 'move_id');
SELECT erpcrm.resync('moves');
});
my $script = $new->basedir . '/moves.sql';
PostgreSQL::Test::Utils::append_to_file($script, q{
\set m random(1, 20)
\set l random(1, 30)
INSERT INTO erp.move_lines (move_id, line, qty) VALUES (:m, :l, 1)
  ON CONFLICT (move_id, line) DO UPDATE SET qty = erp.move_lines.qty + 1;
});
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-T', '40', '-f', $script, $new->connstr('postgres') ],
	'>', \$bench_out, '2>', \$bench_err);
# the ERP's sessions write between every two DDL commands (a rewriting
# ALTER TABLE is not MVCC-safe: the worker locks the watched tables before
# it reads the view, so that no batch is read from a table a DDL rewrote
# after the read's snapshot, and recorded as synced; t/043 holds the race
# still)
my $written = sub {
	$new->safe_psql('postgres', 'SELECT count(*) + coalesce(sum(qty), 0) FROM erp.move_lines') };
my $before = $written->();
ok(poll_until('ERP writes', sub { $written->() > $before }), 'the ERP sessions write');
for my $ddl (
	'ALTER TABLE erp.move_lines ADD COLUMN price numeric',
	'ALTER TABLE erp.move_lines DROP COLUMN note',
	'ALTER TABLE erp.move_lines ALTER COLUMN move_id TYPE bigint',
	'VACUUM FULL erp.move_lines',
	'CLUSTER erp.move_lines USING move_lines_pkey',
	'ALTER TABLE erp.move_lines ALTER COLUMN move_id TYPE integer',
	'ALTER TABLE erp.move_lines DROP COLUMN price')
{
	$new->safe_psql('postgres', $ddl);
	$before = $written->();
	ok(poll_until("ERP writes after $ddl", sub { $written->() > $before }),
		"the ERP sessions write on after $ddl");
}
$bench->finish;
is($bench->result(0), 0, 'every ERP session wrote on through the DDL');
unlike($bench_err, qr/ERROR/, 'no ERP write failed');
ok(wait_synced($new), 'synced');
my %moves = ErpcrmTest::sample_mappings();
push @{ $moves{mappings} },
  { name => 'moves', view => 'erp.hs_moves', type => 'line_items', archive => 1 };
state_ok($new, 'HubSpot holds every move with its quantity', %moves);

# a partitioned table watched by 1.1 (statement triggers on the parent):
# after the upgrade, rows written straight into a partition are captured
$new->safe_psql('postgres', 'CREATE DATABASE upgraded');
$new->safe_psql('upgraded', q{
CREATE EXTENSION erpcrm VERSION '1.1';
CREATE TABLE stock (warehouse text, sku text, qty int) PARTITION BY LIST (warehouse);
CREATE TABLE stock_waw PARTITION OF stock FOR VALUES IN ('WAW');
CREATE VIEW hs_stock AS SELECT sku AS erp_id, sum(qty) AS quantity FROM stock GROUP BY sku;
SELECT erpcrm.map('stock', 'public.hs_stock', 'products');
SELECT erpcrm.watch('stock', 'public.stock', 'sku');
ALTER EXTENSION erpcrm UPDATE;
INSERT INTO stock_waw VALUES ('WAW', 'S-1', 1);
TRUNCATE stock_waw;
});
is($new->safe_psql('upgraded',
	"SELECT string_agg(COALESCE(erp_id, array_to_string(erp_ids, ','), '(every key)'), ' ' ORDER BY erp_id NULLS LAST) FROM erpcrm.outbox"),
	'S-1 (every key)', 'after the upgrade, a partition written and truncated on its own is captured');

done_testing();

# Long DDL run (make check-long): ROUNDS (default 20) rounds, each with
# pgbench writing to watched tables from four long-lived sessions while a
# DBA's DDL runs on them: columns added, dropped, renamed and retyped (the
# key column too), VACUUM FULL, CLUSTER, indexes, partitions attached and
# detached, the mapping view dropped and created again.  No ERP write may
# fail, and after each round HubSpot must hold what the ERP says.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use ErpcrmTest;

my $rounds = $ENV{ROUNDS} // 20;
srand($ENV{SEED} // time());

start_mock();
my $node = erpcrm_node('ddl_rounds');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE erp.moves (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE erp.move_lines (note text, move_id integer NOT NULL, line integer NOT NULL,
	qty integer NOT NULL, PRIMARY KEY (move_id, line));
CREATE TABLE erp.stock (warehouse text NOT NULL, sku text NOT NULL, qty integer NOT NULL)
	PARTITION BY LIST (warehouse);
CREATE TABLE erp.stock_waw PARTITION OF erp.stock FOR VALUES IN ('WAW');
CREATE TABLE erp.stock_krk PARTITION OF erp.stock FOR VALUES IN ('KRK');
CREATE FUNCTION erp.move_qty(integer) RETURNS bigint LANGUAGE plpgsql STABLE
	AS $$ BEGIN RETURN (SELECT COALESCE(sum(qty), 0) FROM erp.move_lines WHERE move_id = $1); END $$;
CREATE FUNCTION erp.stock_qty(text) RETURNS bigint LANGUAGE plpgsql STABLE
	AS $$ BEGIN RETURN (SELECT COALESCE(sum(qty), 0) FROM erp.stock WHERE sku = $1); END $$;
CREATE VIEW erp.hs_moves AS SELECT m.id AS erp_id, m.name, erp.move_qty(m.id) AS quantity FROM erp.moves m;
CREATE VIEW erp.hs_stock AS SELECT 'ST-' || sku AS erp_id, 'Stock ' || sku AS dealname,
	erp.stock_qty(sku) AS amount FROM (SELECT DISTINCT sku FROM erp.stock) s;
INSERT INTO erp.moves SELECT g, 'Move ' || g FROM generate_series(1, 50) g;
SELECT erpcrm.map('moves', 'erp.hs_moves', 'line_items');
SELECT erpcrm.watch('moves', 'erp.moves', 'id');
SELECT erpcrm.watch('moves', 'erp.move_lines', 'move_id');
SELECT erpcrm.map('stock', 'erp.hs_stock', 'deals');
SELECT erpcrm.watch('stock', 'erp.stock', '''ST-'' || sku');
SELECT erpcrm.resync('moves');
});
my $script = $node->basedir . '/writes.sql';
append_to_file($script, q{
\set m random(1, 50)
\set l random(1, 40)
\set s random(1, 30)
BEGIN;
INSERT INTO erp.move_lines (move_id, line, qty) VALUES (:m, :l, 1)
  ON CONFLICT (move_id, line) DO UPDATE SET qty = erp.move_lines.qty + 1;
INSERT INTO erp.stock (warehouse, sku, qty) VALUES (CASE WHEN :s % 2 = 0 THEN 'WAW' ELSE 'KRK' END, 'S' || :s, 1);
COMMIT;
});

my %mappings = ErpcrmTest::sample_mappings();
push @{ $mappings{mappings} },
  { name => 'moves', view => 'erp.hs_moves', type => 'line_items', archive => 1 },
  { name => 'stock', view => 'erp.hs_stock', type => 'deals', archive => 1 };

my $key_type = 'integer';
my $extra = 0;
my @ddl = (
	sub { $extra++; "ALTER TABLE erp.move_lines ADD COLUMN extra$extra numeric" },
	sub { $extra ? 'ALTER TABLE erp.move_lines DROP COLUMN extra' . $extra-- : 'SELECT 1' },
	sub { $key_type = $key_type eq 'integer' ? 'bigint' : 'integer';
		  "ALTER TABLE erp.move_lines ALTER COLUMN move_id TYPE $key_type" },
	sub { 'ALTER TABLE erp.move_lines RENAME COLUMN note TO remark; '
		  . 'ALTER TABLE erp.move_lines RENAME COLUMN remark TO note' },
	sub { 'ALTER TABLE erp.move_lines ALTER COLUMN note TYPE varchar(200)' },
	sub { 'VACUUM FULL erp.move_lines' },
	sub { 'CLUSTER erp.move_lines USING move_lines_pkey' },
	sub { 'CREATE INDEX IF NOT EXISTS move_lines_qty ON erp.move_lines (qty)' },
	sub { 'DROP INDEX IF EXISTS erp.move_lines_qty' },
	sub { 'BEGIN; ALTER TABLE erp.stock DETACH PARTITION erp.stock_krk; '
		  . "ALTER TABLE erp.stock ATTACH PARTITION erp.stock_krk FOR VALUES IN ('KRK'); COMMIT" },
	sub { 'ALTER TABLE erp.stock ALTER COLUMN qty TYPE bigint' },
	sub { 'VACUUM FULL erp.stock' },
	sub { 'DROP VIEW erp.hs_moves; '
		  . 'CREATE VIEW erp.hs_moves AS SELECT m.id AS erp_id, m.name, erp.move_qty(m.id) AS quantity FROM erp.moves m' },
);

my $failed = 0;
for my $round (1 .. $rounds)
{
	my ($out, $err) = ('', '');
	my $bench = IPC::Run::start(
		[ 'pgbench', '-n', '-c', '4', '-T', '6', '-f', $script, $node->connstr('postgres') ],
		'>', \$out, '2>', \$err);
	my @done;
	for (1 .. 3)
	{
		sleep 1;
		my $stmt = $ddl[ int(rand(@ddl)) ]->();
		sql($stmt);
		push @done, $stmt;
	}
	$bench->finish;
	my $ok = $bench->result(0) == 0 && $err !~ /ERROR/;
	$failed++ unless $ok;
	ok($ok, "round $round: no ERP write failed (" . join('; ', @done) . ')')
	  or diag($err);
	ok(wait_synced($node, 120), "round $round: synced");
	state_ok($node, "round $round: HubSpot holds what the ERP says", %mappings);
}
diag("$rounds rounds of DDL under four writing sessions; rounds with a failed ERP write: $failed");

done_testing();

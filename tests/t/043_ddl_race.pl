# A watched table rewritten (ALTER TABLE ... TYPE) while the worker reads
# the rows of a batch: the worker waits for the DDL, and reads what the ERP
# holds after it, never the table as an older snapshot sees it once
# rewritten (empty).  HubSpot ends as the ERP says, with no ERP write after
# the DDL to put it right.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use IPC::Run;

start_mock();
my $node = erpcrm_node('ddl_race');
load_erp($node);

# the quantity of a move is read through a function (its table is locked
# only when the function runs) or straight from the view (locked when the
# view's saved plan is executed)
$node->safe_psql('postgres', q{
CREATE TABLE erp.moves (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE erp.move_lines (move_id integer NOT NULL, line integer NOT NULL,
	qty integer NOT NULL, PRIMARY KEY (move_id, line));
CREATE FUNCTION erp.move_qty(integer) RETURNS bigint LANGUAGE plpgsql STABLE
	AS $$ BEGIN RETURN (SELECT COALESCE(sum(qty), 0) FROM erp.move_lines WHERE move_id = $1); END $$;
CREATE VIEW erp.hs_moves AS
SELECT m.id AS erp_id, m.name, erp.move_qty(m.id) AS quantity FROM erp.moves m;
CREATE TABLE erp.lots (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE erp.lot_lines (lot_id integer NOT NULL, line integer NOT NULL,
	qty integer NOT NULL, PRIMARY KEY (lot_id, line));
CREATE VIEW erp.hs_lots AS
SELECT l.id AS erp_id, l.name AS dealname,
	   (SELECT COALESCE(sum(x.qty), 0) FROM erp.lot_lines x WHERE x.lot_id = l.id) AS amount
  FROM erp.lots l;
INSERT INTO erp.moves SELECT g, 'Move ' || g FROM generate_series(1, 5) g;
INSERT INTO erp.move_lines SELECT g, 1, 7 * g FROM generate_series(1, 5) g;
INSERT INTO erp.lots SELECT g, 'Lot ' || g FROM generate_series(1, 5) g;
INSERT INTO erp.lot_lines SELECT g, 1, 11 * g FROM generate_series(1, 5) g;
SELECT erpcrm.map('moves', 'erp.hs_moves', 'line_items');
SELECT erpcrm.watch('moves', 'erp.moves', 'id');
SELECT erpcrm.watch('moves', 'erp.move_lines', 'move_id');
SELECT erpcrm.map('lots', 'erp.hs_lots', 'deals');
SELECT erpcrm.watch('lots', 'erp.lots', 'id');
SELECT erpcrm.watch('lots', 'erp.lot_lines', 'lot_id');
SELECT erpcrm.resync('moves');
SELECT erpcrm.resync('lots');
});
ok(wait_synced($node), 'synced');
my %state = (mappings => [
	{ name => 'moves', view => 'erp.hs_moves', type => 'line_items', archive => 1 },
	{ name => 'lots', view => 'erp.hs_lots', type => 'deals', archive => 1 } ]);
state_ok($node, 'HubSpot holds every quantity', %state);

for my $case (
	[ 'moves', 'move_lines', 'ALTER COLUMN qty TYPE bigint', 'a table its view reads through a function' ],
	[ 'lots', 'lot_lines', 'ALTER COLUMN line TYPE bigint', 'a table its view reads itself' ])
{
	my ($head, $lines, $alter, $what) = @$case;

	# the DDL holds its lock, not yet committed
	my ($in, $out, $err) = ('', '', '');
	my $ddl = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
		'<', \$in, '>', \$out, '2>', \$err);
	$in .= "BEGIN;\nALTER TABLE erp.$lines $alter;\nSELECT 'altered';\n";
	ok(poll_until('the DDL holds its lock', sub { $ddl->pump_nb; $out =~ /altered/ }),
		"$what: ALTER TABLE holds its lock");

	# the heads change (their lines do not): the worker claims them, and
	# its read of the lines waits for the DDL
	$node->safe_psql('postgres', "UPDATE erp.$head SET name = name || '!'");
	ok(poll_until('the worker waits to read',
		sub { $node->safe_psql('postgres', q{
SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
 WHERE a.backend_type = 'erpcrm worker' AND NOT l.granted
   AND l.relation = 'erp.} . $lines . q{'::regclass}) eq '1' }),
		"$what: the worker waits for the DDL");

	$in .= "COMMIT;\n\\q\n";
	$ddl->finish;
	is($ddl->result(0), 0, "$what: the DDL committed");
	ok(wait_synced($node), "$what: synced");
	state_ok($node, "$what: HubSpot holds every quantity, as after the DDL", %state);
}

done_testing();

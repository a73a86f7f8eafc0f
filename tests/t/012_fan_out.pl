# One-to-many dependencies: a line item's name comes from its product, so a
# product rename must reach every line of that product.  The watch on
# products has a key query, resolved by the worker when it folds (never in
# the ERP's transaction), as the role that defined the watch.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('fan_out');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE erp.order_lines (
	id integer PRIMARY KEY,
	order_no text NOT NULL,
	sku text NOT NULL REFERENCES erp.products,
	qty integer NOT NULL
);
CREATE VIEW erp.hs_lines AS
SELECT l.id AS erp_id, p.name, l.qty AS quantity, p.price
  FROM erp.order_lines l JOIN erp.products p USING (sku);
SELECT erpcrm.map('lines', 'erp.hs_lines', 'line_items');
SELECT erpcrm.watch('lines', 'erp.order_lines', 'id');
SELECT erpcrm.watch('lines', 'erp.products', 'sku',
	key_query => 'SELECT l.id FROM erp.order_lines l WHERE l.sku = ANY ($1)');
INSERT INTO erp.products VALUES ('P-1', 'Pen', 2.50), ('P-2', 'Pencil', 1.00);
INSERT INTO erp.order_lines SELECT g, 'O-' || (g % 7), CASE WHEN g % 3 = 0 THEN 'P-2' ELSE 'P-1' END, g
  FROM generate_series(1, 250) g;
});
sql("SELECT erpcrm.resync(name) FROM erpcrm.mapping");
ok(wait_synced($node), 'synced');

my %mappings = ErpcrmTest::sample_mappings();
push @{ $mappings{mappings} },
  { name => 'lines', view => 'erp.hs_lines', type => 'line_items', archive => 1 };
state_ok($node, 'HubSpot holds every line', %mappings);

# a product rename (and a price change) reaches every line of that product
sql("UPDATE erp.products SET name = 'Fountain pen', price = 9.90 WHERE sku = 'P-1'");
ok(wait_synced($node), 'the rename is delivered');
state_ok($node, 'every line of the product has its new name and price', %mappings);
is(sql("SELECT count(*) FROM erpcrm.outbox") + sql("SELECT count(*) FROM erpcrm.fan_out"), '0',
	'nothing left to fold');

# another product's lines follow too
sql("UPDATE erp.products SET name = 'Pencil HB' WHERE sku = 'P-2'");
ok(wait_synced($node), 'resolved by the worker');
state_ok($node, 'the other product\'s lines follow', %mappings);

# a key query that fails keeps its keys and says why; the others go on
sql(q{
CREATE FUNCTION erp.lines_of(skus text[]) RETURNS SETOF integer LANGUAGE sql STABLE
	AS $$ SELECT l.id / (SELECT count(*) FROM erp.order_lines WHERE qty < 0)::int
			FROM erp.order_lines l WHERE l.sku = ANY (skus) $$;
SELECT erpcrm.unwatch('lines', 'erp.products');
SELECT erpcrm.watch('lines', 'erp.products', 'sku', key_query => 'SELECT erp.lines_of($1)');
UPDATE erp.products SET name = 'Pen' WHERE sku = 'P-1';
UPDATE erp.customers SET name = name || '!' ;
});
ok(poll_until('the failure is named',
	sub { sql("SELECT problem FROM erpcrm.status WHERE mapping = 'lines'") =~
		  /its key query failed: division by zero \(SQLSTATE 22012\)/ }),
	'erpcrm.status says the key query failed, and why');
is(sql("SELECT count(*) FROM erpcrm.fan_out"), '1', 'its keys are kept');
ok(wait_synced($node), 'the other mappings go on');

# fixed: the kept keys are resolved
sql("CREATE OR REPLACE FUNCTION erp.lines_of(skus text[]) RETURNS SETOF integer LANGUAGE sql STABLE
	AS \$\$ SELECT l.id FROM erp.order_lines l WHERE l.sku = ANY (skus) \$\$");
sql("UPDATE erp.customers SET name = name");
ok(poll_until('resolved', sub { sql("SELECT count(*) FROM erpcrm.fan_out") eq '0' }), 'resolved after the fix');
ok(wait_synced($node), 'synced');
state_ok($node, 'every line has the product\'s name again', %mappings);

# a key query is checked when the watch is defined
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT erpcrm.watch('lines', 'erp.persons', 'id', key_query => 'DELETE FROM erp.order_lines')");
like($err, qr/the key query of a watch must be one SELECT/, 'a key query must be a SELECT');
($ret, $out, $err) = $node->psql('postgres',
	"SELECT erpcrm.watch('lines', 'erp.persons', 'id', key_query => 'SELECT id FROM order_lines')");
like($err, qr/relation "order_lines" does not exist/, 'names in a key query are schema-qualified');

# it runs as the role that defined the watch, in a security-restricted operation
sql(q{
CREATE ROLE fan_admin LOGIN IN ROLE erpcrm_admin;
GRANT USAGE ON SCHEMA erp TO fan_admin;
GRANT SELECT ON erp.order_lines TO fan_admin;
CREATE TABLE erp.audit_trail (who text);
CREATE FUNCTION erp.whoami(skus text[]) RETURNS SETOF integer LANGUAGE plpgsql STABLE AS $$
BEGIN
	RETURN QUERY SELECT l.id FROM erp.order_lines l
	  WHERE l.sku = ANY (skus) AND current_user = 'fan_admin';
END $$;
ALTER TABLE erp.products OWNER TO fan_admin;
SELECT erpcrm.unwatch('lines', 'erp.products');
});
$node->safe_psql('postgres', q{
SET ROLE fan_admin;
SELECT erpcrm.watch('lines', 'erp.products', 'sku', key_query => 'SELECT erp.whoami($1)');
});
sql("UPDATE erp.products SET name = 'Quill' WHERE sku = 'P-1'");
ok(wait_synced($node), 'synced');
state_ok($node, 'the key query ran as fan_admin', %mappings);

done_testing();

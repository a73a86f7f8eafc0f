# Links to objects that are not in HubSpot (issue 11, points 4 and 5): a line
# item whose product is not in the products view is sent without
# hs_product_id and listed in erpcrm.unlinked, whichever came first, the line
# or the product leaving the view; and a key that is already archived is
# never archived a second time.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('links');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE erp.lines (id text PRIMARY KEY, sku text, qty numeric, price numeric);
CREATE VIEW erp.hs_lines AS
SELECT id AS erp_id, 'line ' || id AS name, qty AS quantity, price, sku AS product_erp_id
  FROM erp.lines;
SELECT erpcrm.map('lines', 'erp.hs_lines', 'line_items');
SELECT erpcrm.associate('lines', 'product_erp_id', 'products', as_property => 'hs_product_id');
SELECT erpcrm.watch('lines', 'erp.lines', 'id');
INSERT INTO erp.products VALUES ('P-1', 'Śruba M8', 0.35, true), ('P-9', 'Stary model', 9.99, false);
});
ok(wait_synced($node), 'products synced');

sub hs_object
{
	my ($type, $key) = @_;
	my ($o) = grep { !$_->{archived} && ($_->{properties}{erp_id} // '') eq $key }
	  @{ ErpcrmTest::mock_get("/_mock/objects/$type")->{results} };
	return $o;
}
sub archive_calls
{
	return scalar grep { $_->{path} eq '/crm/v3/objects/products/batch/archive' }
	  @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
}
sub unlinked
{
	return sql("SELECT string_agg(mapping || ' ' || erp_id || ' ' || \"column\" || ' -> ' || target || ' '"
		  . " || target_erp_id || ': ' || reason, E'\\n' ORDER BY erp_id) FROM erpcrm.unlinked");
}

# --- first order of events: the product left the view before the line came
sql("INSERT INTO erp.lines VALUES ('L-1', 'P-9', 2, 9.99)");
ok(wait_synced($node), 'a line whose product is not in the view is delivered');
my $l1 = hs_object('line_items', 'L-1');
ok($l1, 'the line item is in HubSpot');
is($l1->{properties}{hs_product_id} // '', '', 'it has no hs_product_id');
is(unlinked(), 'lines L-1 product_erp_id -> products P-9: the target is not in erp.hs_products',
	'erpcrm.unlinked names the missing link and why');
is(sql("SELECT state FROM erpcrm.key_status('lines', 'L-1')"), 'synced', 'the line is synced');

# the product comes back: the line gets its link
sql("UPDATE erp.products SET active = true WHERE sku = 'P-9'");
ok(wait_synced($node), 'the product is back');
ok(poll_until('the line to get its product',
	sub { (hs_object('line_items', 'L-1')->{properties}{hs_product_id} // '') eq hs_object('products', 'P-9')->{id} }),
	'a product that enters the view is linked to the lines sent without it');
ok(wait_synced($node), 'synced');
is(unlinked(), '', 'nothing is unlinked any more');

# --- second order of events: the line was linked, then the product left
sql("INSERT INTO erp.lines VALUES ('L-2', 'P-1', 5, 0.35)");
ok(wait_synced($node), 'a line with its product');
my $p1 = hs_object('products', 'P-1')->{id};
is(hs_object('line_items', 'L-2')->{properties}{hs_product_id}, $p1, 'it is linked to the product');
sql("UPDATE erp.products SET active = false WHERE sku = 'P-1'");
ok(wait_synced($node), 'the product left the view');
ok(!hs_object('products', 'P-1'), 'the product is archived in HubSpot');
ok(poll_until('the line to lose the archived product',
	sub { (hs_object('line_items', 'L-2')->{properties}{hs_product_id} // '') eq '' }),
	'a line whose product was archived loses hs_product_id (the same as the other order)');
ok(wait_synced($node), 'synced');
is(unlinked(), 'lines L-2 product_erp_id -> products P-1: the target left erp.hs_products and was archived in HubSpot',
	'erpcrm.unlinked says the product was archived');

# --- the archived product is not archived again
is(archive_calls(), 1, 'one archive call so far');
sql("UPDATE erp.products SET price = price * 1.1");	# a bulk price update
ok(wait_synced($node), 'the bulk price update is synced');
sql("SELECT erpcrm.resync('products')");
ok(wait_synced($node), 'a resync is synced');
is(archive_calls(), 1, 'an archived product is never archived a second time');
is(sql("SELECT state FROM erpcrm.key_status('products', 'P-1')"), 'archived', 'it stays archived');

# it comes back and leaves again: archived once more, as it should be
sql("UPDATE erp.products SET active = true WHERE sku = 'P-1'");
ok(wait_synced($node), 'P-1 is back');
ok(poll_until('L-2 to be linked again',
	sub { my $p = hs_object('products', 'P-1'); $p && (hs_object('line_items', 'L-2')->{properties}{hs_product_id} // '') eq $p->{id} }),
	'the line is linked to the product again');
sql("UPDATE erp.products SET active = false WHERE sku = 'P-1'");
ok(wait_synced($node), 'P-1 left again');
is(archive_calls(), 2, 'a product that came back and left again is archived again');
ok(wait_synced($node), 'synced');
is(sql("SELECT count(*) FROM erpcrm.failures"), '0', 'no failures');

done_testing();

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
use JSON::PP;

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

# --- HubSpot as it is (point 9): an archived object's unique value, either way
for my $reuse (1, 0)
{
	my $sku = "P-R$reuse";
	ErpcrmTest::mock_post('/_mock/config',
		{ unique_reuse_after_archive => $reuse ? JSON::PP::true : JSON::PP::false });
	sql("INSERT INTO erp.products VALUES ('$sku', 'Wraca', 1, true)");
	ok(wait_synced($node), "$sku synced");
	my $first = hs_object('products', $sku)->{id};
	sql("UPDATE erp.products SET active = false WHERE sku = '$sku'");
	ok(wait_synced($node), "$sku archived");
	sql("UPDATE erp.products SET active = true WHERE sku = '$sku'");
	ok(wait_synced($node), "$sku is back");
	my $again = hs_object('products', $sku);
	ok($again && $again->{id} ne $first,
		($reuse ? 'archived values reusable' : 'archived objects keep their unique values')
		  . ': a product that comes back is a new object');
	is(sql("SELECT state FROM erpcrm.key_status('products', '$sku')"), 'synced', 'and synced, not failed');
}

# --- required properties (a portal's validation rules): refused keys are parked, visibly
ErpcrmTest::mock_post('/_mock/config', { required_properties => { companies => ['industry'] } });
sql("INSERT INTO erp.customers (id, name, domain) VALUES (50, 'Omikron', 'omikron.pl')");
ok(poll_until('the refusal', sub { sql("SELECT count(*) FROM erpcrm.failures WHERE erp_id = '50'") eq '1' }),
	'a company the portal refuses is failed');
like(sql("SELECT mapping || '|' || http_status || '|' || error_category || '|' || error_message FROM erpcrm.failures WHERE erp_id = '50'"),
	qr/^companies\|400\|VALIDATION_ERROR\|.*industry.*required/, 'erpcrm.failures says which property the portal requires');
ErpcrmTest::mock_post('/_mock/config', { required_properties => {} });
sql("SELECT erpcrm.requeue_failed('companies')");
ok(wait_synced($node), 'once the rule is lifted, a requeue delivers it');
ok(hs_object('companies', '50'), 'the company is in HubSpot');

# --- search finds new records only after a delay: matching must not duplicate
ErpcrmTest::mock_post('/_mock/config', { search_index_delay_ms => 2000 });
sql("SELECT erpcrm.set_match('companies', 'domain')");
my $hand = ErpcrmTest::mock_post('/_mock/objects/companies',
	{ properties => { name => 'Sigma (by hand)', domain => 'sigma.pl' } });
sql("INSERT INTO erp.customers (id, name, domain) VALUES (51, 'Sigma', 'sigma.pl')");
ok(wait_synced($node), 'a company sales made by hand a moment ago');
my @sigma = grep { !$_->{archived} && ($_->{properties}{domain} // '') eq 'sigma.pl' }
  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
is(scalar(@sigma), 1, 'is not duplicated although search did not see it at first');
is($sigma[0]{id}, $hand->{id}, 'it is adopted');
is($sigma[0]{properties}{erp_id}, '51', 'and gets its erp_id');
sql("INSERT INTO erp.customers (id, name, domain) VALUES (52, 'Tau', 'tau.pl')");
ok(wait_synced($node), 'a company HubSpot does not have');
is(scalar(grep { ($_->{properties}{domain} // '') eq 'tau.pl' } @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} }),
	1, 'is created once, after a second search');
is(sql("SELECT count(*) FROM erpcrm.failures"), '0', 'no failures');

# search answers one page: a value whose record is beyond it is searched again
ErpcrmTest::mock_post('/_mock/config', { search_index_delay_ms => 0 });
ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => "Wielu $_", domain => 'wielu.pl' } })
  for 1 .. 120;
my $rare = ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => 'Rzadki', domain => 'rzadki.pl' } });
sql("INSERT INTO erp.customers (id, name, domain) VALUES (53, 'Wielu', 'wielu.pl'), (54, 'Rzadki', 'rzadki.pl')");
ok(wait_synced($node), 'two companies whose search answer is longer than a page');
my @rare = grep { !$_->{archived} && ($_->{properties}{domain} // '') eq 'rzadki.pl' }
  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
is(scalar(@rare), 1, 'the record beyond the first page is not duplicated');
is($rare[0]{properties}{erp_id}, '54', 'it is adopted');
is(sql("SELECT count(*) FROM erpcrm.failures"), '0', 'no failures');

# --- set-up and the connection check against real portals (point 8)
sub rows { return sql("SELECT $_[0] FROM $_[1]"); }
ErpcrmTest::mock_post('/_mock/config', { granular_scopes => JSON::PP::true });
my $check = rows(q{"check" || '|' || ok || '|' || detail}, 'erpcrm.check_connection()');
like($check, qr/^scope crm.objects.products.write\|true\|granted; mappings products need it$/m,
	'check: the granular products scope is accepted');
like($check, qr/^scope crm.objects.line_items.write\|true\|granted; mappings lines need it$/m,
	'check: so is the granular line items scope');
unlike($check, qr/\|false\|/, 'and nothing is missing without the legacy e-commerce scope');
ErpcrmTest::mock_post('/_mock/config', { granular_scopes => JSON::PP::false });
like(rows(q{"check" || '|' || ok}, 'erpcrm.check_connection()'), qr/^scope e-commerce\|true$/m,
	'check: the legacy e-commerce scope still is');

# a free portal: one deal pipeline, and it exists
ErpcrmTest::mock_post('/_mock/config', { deal_pipeline_limit => 1 });
my $setup = rows(q{object_type || '|' || kind || '|' || name || '|' || result}, 'erpcrm.setup_hubspot()');
like($setup, qr/^deals\|pipeline\|Invoices \(ERP\)\|error: the portal has 1 of the 1 deal pipelines its subscription allows/m,
	'set-up: a portal at its pipeline limit is told so');
my @creates = grep { $_->{method} eq 'POST' && $_->{path} eq '/crm/v3/pipelines/deals' }
  @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
is(scalar(@creates), 0, 'before trying to create the pipeline');
my $before = scalar(@{ ErpcrmTest::mock_get('/_mock/requests')->{results} });
$setup = rows(q{object_type || '|' || kind || '|' || name || '|' || result}, 'erpcrm.setup_hubspot(pipeline => NULL)');
unlike($setup, qr/pipeline/, 'set-up without a pipeline: pipeline => NULL');
is(scalar(grep { $_->{path} =~ m{pipelines} } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} }[$before .. $#{ ErpcrmTest::mock_get('/_mock/requests')->{results} }]),
	0, 'and no pipeline call');
like($setup, qr/^line_items\|unique property\|erp_id\|exists$/m, 'a unique id property that exists is reported as existing');

# an id property that exists without unique values
ErpcrmTest::mock_post('/_mock/config',
	{ properties => { line_items => [ { name => 'erp_id', type => 'string', hasUniqueValue => JSON::PP::false } ] } });
$setup = rows(q{object_type || '|' || kind || '|' || name || '|' || result}, 'erpcrm.setup_hubspot(pipeline => NULL)');
like($setup, qr/^line_items\|unique property\|erp_id\|error: the property exists in HubSpot without unique values \(hasUniqueValue false\).*cannot make an existing property unique; give the mappings of line_items another id_property/m,
	'set-up: an id property without unique values is not reported as existing, and the way out is said');

# --- the daily budget runs out: wait for the portal's midnight, not UTC's
ErpcrmTest::mock_post('/_mock/config', { daily_limit => 100000, daily_used => 99998 });
sql("INSERT INTO erp.products VALUES ('P-D1', 'Ostatni', 1, true)");
ok(wait_synced($node), 'a product sent with the last calls of the day');
sql("INSERT INTO erp.products VALUES ('P-D2', 'Jutro', 1, true)");
ok(poll_until('the key to wait for the reset', sub {
	sql("SELECT error_category FROM erpcrm.key_status('products', 'P-D2')") eq 'RATE_LIMIT' }),
	'the next product waits for the daily budget');
my $portal_midnight = "date_trunc('day', now() AT TIME ZONE 'Europe/Warsaw' + interval '1 day') AT TIME ZONE 'Europe/Warsaw'";
is(sql("SELECT abs(extract(epoch FROM next_attempt_at - ($portal_midnight))) < 60"
	  . " FROM erpcrm.key_status('products', 'P-D2')"), 't',
	'until midnight in the portal\'s time zone (Europe/Warsaw, from the account details)');
isnt(sql("SELECT abs(extract(epoch FROM next_attempt_at - date_trunc('day', now() AT TIME ZONE 'UTC' + interval '1 day') AT TIME ZONE 'UTC')) < 60"
	  . " FROM erpcrm.key_status('products', 'P-D2')"), 't', 'not midnight UTC');
is(sql("SELECT state FROM erpcrm.key_status('products', 'P-D2')"), 'pending', 'pending, not failed');

done_testing();

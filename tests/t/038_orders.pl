# ERP orders as HubSpot's native orders (0-123): examples/orders_native.sql
# next to the deal variant of examples/mappings.sql.  The order pipeline
# setup_hubspot() creates, order properties and stages by label, line
# items of the order, associations to the company, the buyer and the sales
# deal the order came from; then the same through HubSpot's date-versioned
# paths (erpcrm.api_version = '2026-03').
#
# HubSpot's reference spells the paths /crm/v3/objects/orders, its guide
# /crm/v3/objects/order, and a type id (0-123) is accepted wherever a type
# is; the mock takes one spelling only (order_type_name), so each run
# proves that every call spells orders as the mapping does: first
# map(..., 'orders'), then the same example with map(..., '0-123').
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock(config => { max_per_window => 0, daily_limit => 0, order_type_name => 'orders' });
my $node = erpcrm_node('orders');
my $examples = dirname(__FILE__) . '/../../examples';
$node->safe_psql('postgres', 'CREATE EXTENSION erpcrm');
$node->safe_psql('postgres', slurp_file("$examples/erp.sql"));
$node->safe_psql('postgres', slurp_file("$examples/mappings.sql"));
$node->safe_psql('postgres', slurp_file("$examples/orders_native.sql"));

sub sql { return $node->safe_psql('postgres', $_[0]); }

like(sql("SELECT \"check\" || '|' || ok || '|' || detail FROM erpcrm.check_connection()"),
	qr/^scope crm.objects.orders.write\|true\|granted; mappings orders need it/m,
	'check_connection names the scope native orders need');
my $setup = sql("SELECT object_type, kind, name, result FROM erpcrm.setup_hubspot() ORDER BY 1, 2, 3");
like($setup, qr/^orders\|unique property\|erp_id\|created$/m,
	'set-up creates the unique id property of orders');
like($setup, qr/^orders\|pipeline\|Orders \(ERP\)\|created$/m,
	'set-up creates the order pipeline');
like($setup, qr/^orders\|pipeline stage\|Awaiting payment\|created$/m,
	'with the ERP\'s statuses as stages');
unlike($setup, qr/error/, 'set-up reports no error');
is(sql(q{SELECT count(*) || '|' || string_agg(DISTINCT object_type, ',') FROM erpcrm.pipeline_stage
	WHERE pipeline = 'Orders (ERP)'}), '5|orders', 'its five stage ids are recorded, as orders\'');
my ($hs_pipeline) = grep { $_->{label} eq 'Orders (ERP)' }
  @{ ErpcrmTest::hubspot_get('/crm/v3/pipelines/orders')->{results} };
ok($hs_pipeline, 'HubSpot has the order pipeline');
my %stage_of = map { $_->{label} => $_->{id} } @{ $hs_pipeline->{stages} };
is(sql("SELECT erpcrm.stage_id('Orders (ERP)', 'Fulfilled')"), $stage_of{Fulfilled},
	'erpcrm.stage_id() gives HubSpot\'s id of an order stage');
is(sql(q{SELECT string_agg(result, ',' ORDER BY name) FROM erpcrm.setup_hubspot()
	WHERE object_type = 'orders' AND kind LIKE 'pipeline%'}), join(',', ('exists') x 6),
	'set-up run again finds the pipeline and its stages by label');
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT result FROM erpcrm.setup_hubspot(order_pipeline => 'Invoices (ERP)') WHERE kind = 'pipeline' AND object_type = 'orders'});
like($out, qr/^error: "Invoices \(ERP\)" already names a pipeline of deals/,
	'an order pipeline may not take the invoice pipeline\'s label');

my $deal_hs = ErpcrmTest::mock_post('/_mock/objects/deals',
	{ properties => { dealname => 'Gamma: regały', pipeline => 'default',
		dealstage => 'qualifiedtobuy', amount => '3000' } })->{id};
sql(qq{
INSERT INTO erp.customers VALUES
	(2, 'Beta S.A.', '113-000-00-00', 'beta.pl', 'B', 10000, true),
	(3, 'Gamma sp.j.', '777-000-00-01', 'gamma.pl', 'C', 5000, true);
INSERT INTO erp.persons VALUES (2, 3, 'ola\@gamma.pl', 'Aleksandra', 'Lis', NULL);
INSERT INTO erp.products VALUES
	('P-1', 'Regał magazynowy', 1200, 1100, 1150, 1190, 800, true),
	('P-2', 'Półka', 150, 130, 140, 145, 90, true),
	('P-3', 'Wózek paletowy', 2500, 2300, 2400, 2450, 1900, true);
INSERT INTO erp.orders VALUES
	(10, 'ZAM/10/2026', 3, '2026-11-02', 'in_progress', 3000, 'sales', '$deal_hs'),
	(11, 'ZAM/11/2026', 2, '2026-11-03', 'awaiting_payment', 300, 'b2b', NULL);
INSERT INTO erp.order_lines VALUES
	(10, 1, 'P-1', 2, 1200), (10, 2, 'P-2', 4, 150), (11, 1, 'P-2', 2, 150);
});
ok(wait_synced($node), 'orders, their lines and everything they link to are delivered');
is(sql('SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed');

my $o10 = hs_object('orders', 'ZAM-10');
my $o11 = hs_object('orders', 'ZAM-11');
ok($o10 && $o11, 'both orders are native HubSpot orders');
is(join('|', map { $o10->{properties}{$_} // '' } qw(hs_order_name hs_currency_code hs_total_price hs_pipeline_stage)),
	"ZAM/10/2026|PLN|3000.00|$stage_of{'In progress'}", 'with their properties and order stage');
is($o10->{properties}{hs_pipeline}, $hs_pipeline->{id}, 'in the order pipeline of set-up');
is($o11->{properties}{hs_pipeline_stage}, $stage_of{'Awaiting payment'}, 'an order awaiting payment has its own stage');
ok(hs_associated('orders', $o10->{id}, 'companies', hs_object('companies', '3')->{id}),
	'the order is associated to its company');
ok(hs_associated('orders', $o10->{id}, 'contacts', hs_object('contacts', '2')->{id}),
	'and to the buyer');
ok(hs_associated('orders', $o10->{id}, 'deals', $deal_hs),
	'and to the sales deal it came from');
is(hs_object('deals', 'ZAM-10')->{id}, $deal_hs,
	'the sales deal is updated, never created again under the order\'s key');
my $l1 = hs_object('line_items', 'ZAM-10/1');
ok($l1 && hs_associated('line_items', $l1->{id}, 'orders', $o10->{id}),
	'an order line is a line item of the order');
is($l1->{properties}{hs_product_id}, hs_object('products', 'P-1')->{id},
	'pointing at its product');
ok(hs_object('deals', 'ZAM-11'), 'the B2B order is also a deal (the deal variant runs beside)');

my @paths = map { $_->{path} } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
ok((grep { m{^/crm/v3/objects/orders/batch/upsert} } @paths),
	'erpcrm.api_version v3 (the default): /crm/v3/objects/orders');

# --- the date-versioned paths
($ret, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET erpcrm.api_version = '2026-13'");
like($err, qr/erpcrm.api_version must be v3 or a date version such as 2026-03/,
	'an API version that is no date is refused');
my $since = ErpcrmTest::mock_get('/_mock/requests?since=0')->{lastSeq};
sql("ALTER SYSTEM SET erpcrm.api_version = '2026-03'");
sql('SELECT pg_reload_conf()');
# a new session sees the new value once the postmaster has read it and
# signalled the worker: the worker's next wake-up after that reads it first
ok(poll_until('the new setting', sub { sql('SHOW erpcrm.api_version') eq '2026-03' }, 10),
	'the setting is reloaded');
my $seen = sql('SELECT clock_timestamp()');
ok(poll_until('the worker awake since', sub {
	sql("SELECT last_wake > '$seen' FROM erpcrm.worker") eq 't' }, 30),
	'the worker woke up since');
sql(q{
UPDATE erp.orders SET status = 'fulfilled' WHERE id = 10;
INSERT INTO erp.order_lines VALUES (10, 3, 'P-3', 1, 2500);
});
ok(wait_synced($node), 'changes are delivered through the date-versioned paths');
my @new = map { $_->{path} } @{ ErpcrmTest::mock_get("/_mock/requests?since=$since")->{results} };
ok((grep { m{^/crm/objects/2026-03/orders/batch/} } @new),
	'orders are written to /crm/objects/2026-03/orders');
ok((grep { m{^/crm/associations/2026-03/line_items/orders/batch/} } @new),
	'associations go to /crm/associations/2026-03');
is(join(', ', grep { m{^/crm/v[34]/} } @new), '',
	'and nothing goes to /crm/v3 or /crm/v4 any more');
is(hs_object('orders', 'ZAM-10')->{properties}{hs_pipeline_stage}, $stage_of{Fulfilled},
	'the order moved to its new stage');
my $l3 = hs_object('line_items', 'ZAM-10/3');
ok($l3 && hs_associated('line_items', $l3->{id}, 'orders', $o10->{id}),
	'the new line is a line item of the same order');
is(scalar(grep { ($_->{properties}{erp_id} // '') =~ /^ZAM-/ } @{ hs_objects('orders') }), 2,
	'no order was created twice');
sql('ALTER SYSTEM RESET erpcrm.api_version');
sql('SELECT pg_reload_conf()');
$node->stop;

# --- the same example, orders named by their type id, on a mock that
# takes only that spelling
ErpcrmTest::mock_post('/_mock/reset', { max_per_window => 0, daily_limit => 0, order_type_name => '0-123' });
my $by_id = erpcrm_node('orders_by_id');
my $native = slurp_file("$examples/orders_native.sql");
ok($native =~ s/erpcrm\.map\('orders', 'erp\.hs_orders', 'orders'\)/erpcrm.map('orders', 'erp.hs_orders', '0-123')/,
	'the example maps orders by name; this run by type id');
$by_id->safe_psql('postgres', 'CREATE EXTENSION erpcrm');
$by_id->safe_psql('postgres', slurp_file("$examples/erp.sql"));
$by_id->safe_psql('postgres', slurp_file("$examples/mappings.sql"));
$by_id->safe_psql('postgres', $native);
sub sql2 { return $by_id->safe_psql('postgres', $_[0]); }
like(sql2("SELECT \"check\" || '|' || ok FROM erpcrm.check_connection()"),
	qr/^scope crm.objects.orders.write\|true$/m, 'check_connection knows 0-123 needs the orders scope');
$setup = sql2("SELECT object_type, kind, name, result FROM erpcrm.setup_hubspot() ORDER BY 1, 2, 3");
like($setup, qr/^0-123\|unique property\|erp_id\|created$/m, 'set-up makes the id property of 0-123');
like($setup, qr/^orders\|pipeline\|Orders \(ERP\)\|created$/m, 'and its order pipeline');
unlike($setup, qr/error/, 'with no error');
sql2(q{
INSERT INTO erp.customers VALUES (3, 'Gamma sp.j.', '777-000-00-01', 'gamma.pl', 'C', 5000, true);
INSERT INTO erp.products VALUES ('P-1', 'Regał magazynowy', 1200, 1100, 1150, 1190, 800, true);
INSERT INTO erp.orders VALUES (20, 'ZAM/20/2026', 3, '2026-11-04', 'delayed', 2400, 'shop', NULL);
INSERT INTO erp.order_lines VALUES (20, 1, 'P-1', 2, 1200);
});
ok(wait_synced($by_id), 'orders mapped as 0-123 are delivered');
is(sql2('SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed (no call spelled orders otherwise)');
my $o20 = hs_object('orders', 'ZAM-20');
is($o20 && $o20->{properties}{hs_pipeline_stage},
	sql2("SELECT erpcrm.stage_id('Orders (ERP)', 'Delayed')"), 'the order is in its stage');
my $l20 = hs_object('line_items', 'ZAM-20/1');
ok($l20 && hs_associated('line_items', $l20->{id}, 'orders', $o20->{id}), 'with its line item');
ok(hs_associated('orders', $o20->{id}, 'companies', hs_object('companies', '3')->{id}),
	'and its company');
@paths = map { $_->{path} } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
ok((grep { m{^/crm/v3/objects/0-123/batch/upsert} } @paths), 'through /crm/v3/objects/0-123');
$by_id->stop;
done_testing();

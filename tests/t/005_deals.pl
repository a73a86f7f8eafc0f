# Invoices, orders and offers as deals, with line items; HubSpot set-up from
# SQL; adopting records sales made by hand; owner inheritance; waiting for
# dependencies; a backfill with progress.  The views are the mapping guide's
# (examples/mappings.sql).
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use JSON::PP;

# a portal with nothing of erpcrm's yet
start_mock(config => { max_per_window => 0, daily_limit => 0 });
my $node = erpcrm_node('deals');
my $examples = dirname(__FILE__) . '/../../examples';
$node->safe_psql('postgres', 'CREATE EXTENSION erpcrm');
$node->safe_psql('postgres', slurp_file("$examples/erp.sql"));
$node->safe_psql('postgres', slurp_file("$examples/mappings.sql"));

sub sql { return $node->safe_psql('postgres', $_[0]); }

# --- the connection check, in plain words
my $check = sql("SELECT \"check\" || '|' || ok || '|' || detail FROM erpcrm.check_connection()");
like($check, qr/^token\|true\|/m, 'check: the token is set');
like($check, qr/^token valid\|true\|/m, 'check: HubSpot accepts it');
like($check, qr/^portal\|true\|portal \d+, time zone Europe\/Warsaw/m, 'check: portal id and time zone');
like($check, qr/^scope e-commerce\|true\|granted; mappings invoice_lines, offer_lines, products need it/m,
	'check: the scopes the mappings need');
ErpcrmTest::mock_post('/_mock/faults', { missing_scopes => ['deals'] });
like(sql("SELECT \"check\" || '|' || ok || '|' || detail FROM erpcrm.check_connection()"),
	qr/^scope crm.objects.deals.write\|false\|missing: mappings b2b_orders, invoices, offers, sales_orders need it/m,
	'check: a missing scope is named with the mappings that need it');
ErpcrmTest::mock_post('/_mock/faults', { auth_fail => JSON::PP::true });
like(sql("SELECT \"check\" || '|' || ok || '|' || detail FROM erpcrm.check_connection()"),
	qr/^token valid\|false\|HubSpot refused the token/m, 'check: a refused token is said plainly');
ErpcrmTest::mock_post('/_mock/faults', {});

# --- HubSpot set-up from SQL, twice
my $setup = sql("SELECT object_type, kind, name, result FROM erpcrm.setup_hubspot() ORDER BY 1, 2, 3");
like($setup, qr/^deals\|unique property\|erp_id\|created$/m, 'set-up creates the unique id property of deals');
like($setup, qr/^companies\|property\|nip\|created$/m, 'set-up creates custom company properties');
like($setup, qr/^deals\|property\|net_amount\|created$/m, 'set-up creates custom deal properties');
like($setup, qr/^companies\|property\|name\|exists$/m, 'set-up leaves HubSpot\'s own properties alone');
like($setup, qr/^deals\|pipeline\|Invoices \(ERP\)\|created$/m, 'set-up creates the invoice pipeline');
is(scalar(() = $setup =~ /\|pipeline stage\|.*\|created$/mg), 5, 'with its five stages');
unlike($setup, qr/error/, 'set-up reports no error');
my $again = sql("SELECT count(*) FILTER (WHERE result = 'exists'), count(*) FROM erpcrm.setup_hubspot()");
my ($exists, $all) = split /\|/, $again;
is($exists, $all, 'set-up run twice: everything already exists, nothing created twice');
my $types = ErpcrmTest::mock_get('/_mock/stats');
is(sql("SELECT count(*) FROM erpcrm.pipeline_stage WHERE pipeline = 'Invoices (ERP)'"), '5',
	'stage ids are recorded for the views');
my ($unique) = grep { $_->{name} eq 'erp_id' } @{ ErpcrmTest::hubspot_get('/crm/v3/properties/deals')->{results} };
ok($unique && $unique->{hasUniqueValue}, 'erp_id of deals has unique values');
my ($amount) = grep { $_->{name} eq 'net_amount' } @{ ErpcrmTest::hubspot_get('/crm/v3/properties/deals')->{results} };
is($amount->{type}, 'number', 'a numeric column becomes a number property');

# --- what sales made by hand before the ERP was connected
my $gamma_hs = ErpcrmTest::mock_post('/_mock/objects/companies',
	{ properties => { name => 'Gamma (ręcznie)', domain => 'gamma.pl', hubspot_owner_id => '75000002' } })->{id};
my $ola_hs = ErpcrmTest::mock_post('/_mock/objects/contacts',
	{ properties => { email => 'ola@gamma.pl', firstname => 'Ola' } })->{id};
my $deal_hs = ErpcrmTest::mock_post('/_mock/objects/deals',
	{ properties => { dealname => 'Gamma: dostawa regałów', pipeline => 'default',
		dealstage => 'qualifiedtobuy', amount => '10000' } })->{id};

# --- the ERP
sql(qq{
INSERT INTO erp.customers VALUES
	(1, 'Alfa sp. z o.o.', '526-000-12-46', 'alfa.pl', 'A', 50000, true),
	(2, 'Beta S.A.', '113-000-00-00', 'beta.pl', 'B', 10000, true),
	(3, 'Gamma sp.j.', '777-000-00-01', 'gamma.pl', 'C', 5000, true);
INSERT INTO erp.persons VALUES (1, 1, 'adam\@alfa.pl', 'Adam', 'Nowak', NULL),
	(2, 3, 'ola\@gamma.pl', 'Aleksandra', 'Lis', '+48 600 000 000');
INSERT INTO erp.products VALUES
	('P-1', 'Regał magazynowy', 1200, 1100, 1150, 1190, 800, true),
	('P-2', 'Półka', 150, 130, 140, 145, 90, true),
	('P-3', 'Wózek paletowy', 2500, 2300, 2400, 2450, 1900, true);
INSERT INTO erp.orders VALUES
	(10, 'ZAM/10/2026', 3, '2026-11-02', 'in_progress', 12000, 'sales', '$deal_hs'),
	(11, 'ZAM/11/2026', 2, '2026-11-03', 'awaiting_payment', 300, 'b2b', NULL);
INSERT INTO erp.invoices VALUES
	(100, 'FV/100/2026', 1, NULL, NULL, '2026-11-01', '2026-11-15', 1500, 1845, 'PLN', '75000001'),
	(101, 'FV/101/2026', 3, 10, NULL, '2026-11-05', '2099-12-31', 6000, 7380, 'PLN', NULL),
	(102, 'FV/102/2026', 3, 10, NULL, '2026-11-06', '2099-12-31', 4000, 4920, 'PLN', NULL),
	(103, 'FV/103/2026', 2, 11, NULL, '2026-11-07', '2099-12-31', 300, 369, 'PLN', NULL);
INSERT INTO erp.invoice_lines VALUES
	(100, 1, 'P-1', 'Regał magazynowy', 1, 1200, 0),
	(100, 2, 'P-2', 'Półka', 2, 150, 0),
	(101, 1, 'P-1', 'Regał magazynowy', 5, 1200, 0),
	(102, 1, 'P-3', 'Wózek paletowy', 1, 2500, 0),
	(102, 2, 'P-2', 'Półka', 10, 150, 0),
	(103, 1, 'P-2', 'Półka', 2, 150, 0);
INSERT INTO erp.payments (invoice_id, customer_id, amount, paid_on) VALUES (100, 1, 1845, '2026-11-10'),
	(101, 3, 1000, '2026-11-12');
INSERT INTO erp.offers VALUES (200, 'OF/200/2026', 1, '2026-12-31', 'open');
INSERT INTO erp.offer_lines VALUES (200, 1, 'P-3', 2, 2350), (200, 2, 'P-1', 4, 1100);
});
ok(wait_synced($node), 'the ERP is synced');
is(sql('SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed');

# companies and contacts: the hand-made ones adopted, not duplicated
my @gamma = hs_object('companies', '3');
is(scalar(@gamma), 1, 'one Gamma company');
is($gamma[0]{id}, $gamma_hs, 'the company sales made by hand is adopted by domain');
is($gamma[0]{properties}{name}, 'Gamma sp.j.', 'and takes the ERP\'s values');
is($gamma[0]{properties}{nip}, '7770000001', 'NIP without dashes');
is(scalar(@{ hs_objects('companies') }), 3, 'three companies in all');
my $ola = hs_object('contacts', '2');
is($ola->{id}, $ola_hs, 'the contact sales made by hand is adopted by e-mail');
is(scalar(@{ hs_objects('contacts') }), 2, 'two contacts in all');

# products with price levels
my $p1 = hs_object('products', 'P-1');
is(join(',', map { $p1->{properties}{$_} } qw(price price_level_a price_level_b price_level_c hs_cost_of_goods_sold)),
	'1200.00,1100.00,1150.00,1190.00,800.00', 'product with standard price, price levels and cost');

# invoices: deals in the invoice pipeline
my $pipeline = sql("SELECT erpcrm.pipeline_id('Invoices (ERP)')");
my %stage = map { split /\|/ } split /\n/, sql("SELECT stage, stage_id FROM erpcrm.pipeline_stage");
my $fv100 = hs_object('deals', 'FV-100');
my $alfa = hs_object('companies', '1');
is($fv100->{properties}{pipeline}, $pipeline, 'invoice deal in the invoice pipeline');
is($fv100->{properties}{dealstage}, $stage{Paid}, 'a paid invoice is in stage Paid');
is($fv100->{properties}{amount}, '1845.00', 'gross amount');
is($fv100->{properties}{net_amount}, '1500.00', 'net amount');
is($fv100->{properties}{invoice_number}, 'FV/100/2026', 'invoice number');
is($fv100->{properties}{hubspot_owner_id}, '75000001', 'the ERP\'s salesperson is the owner');
ok(hs_associated('deals', $fv100->{id}, 'companies', $alfa->{id}, 5), 'invoice deal associated to its company (primary)');
my $fv101 = hs_object('deals', 'FV-101');
is($fv101->{properties}{dealstage}, $stage{'Partially paid'}, 'a partly paid invoice is Partially paid');
is($fv101->{properties}{hubspot_owner_id}, '75000002', 'no owner in the ERP: the company\'s owner');

# line items
my @lines100 = grep { $_->{properties}{erp_id} =~ m{^FV-100/} } @{ hs_objects('line_items') };
is(scalar(@lines100), 2, 'two line items on FV-100');
my ($l1) = grep { $_->{properties}{erp_id} eq 'FV-100/1' } @lines100;
is($l1->{properties}{hs_product_id}, $p1->{id}, 'line item carries hs_product_id of the synced product');
is($l1->{properties}{quantity}, '1.000', 'quantity');
ok(hs_associated('line_items', $l1->{id}, 'deals', $fv100->{id}, 20), 'line item associated to its deal');

# orders: on the sales deal; B2B as a new deal; invoices linked to orders
my @deals = @{ hs_objects('deals') };
my ($sales_deal) = grep { $_->{id} eq $deal_hs } @deals;
is($sales_deal->{properties}{order_number}, 'ZAM/10/2026', 'the order updates the deal it came from');
is($sales_deal->{properties}{order_status}, 'in_progress', 'with the order status');
is($sales_deal->{properties}{dealstage}, 'qualifiedtobuy', 'and leaves the sales team\'s stage alone');
is(scalar(grep { ($_->{properties}{order_number} // '') eq 'ZAM/10/2026' } @deals), 1,
	'no second deal for an order on an existing deal');
ok(hs_associated('deals', hs_object('deals', 'FV-101')->{id}, 'deals', $deal_hs)
	  && hs_associated('deals', hs_object('deals', 'FV-102')->{id}, 'deals', $deal_hs),
	'two invoices of one order are linked to the order\'s deal');
my $b2b = hs_object('deals', 'ZAM-11');
ok($b2b && $b2b->{properties}{pipeline} eq 'default', 'a B2B order becomes a new deal in the sales pipeline');
ok(hs_associated('deals', hs_object('deals', 'FV-103')->{id}, 'deals', $b2b->{id}), 'its invoice is linked to it');

# offers
my $offer = hs_object('deals', 'OF-200');
is($offer->{properties}{amount}, '9100.00', 'ERP offer as a deal with its value');
is(scalar(grep { $_->{properties}{erp_id} =~ m{^OF-200/} } @{ hs_objects('line_items') }), 2,
	'with its line items');

# --- an invoice whose lines change, are removed and are added; a correction
my $l1_id = $l1->{id};
sql(q{
UPDATE erp.invoice_lines SET qty = 3 WHERE invoice_id = 100 AND line_no = 1;
DELETE FROM erp.invoice_lines WHERE invoice_id = 100 AND line_no = 2;
INSERT INTO erp.invoice_lines VALUES (100, 3, 'P-3', 'Wózek paletowy', 1, 2500, 100);
UPDATE erp.invoices SET net = 6000, gross = 7380 WHERE id = 100;
});
ok(wait_synced($node), 'line changes are synced');
@lines100 = grep { $_->{properties}{erp_id} =~ m{^FV-100/} } @{ hs_objects('line_items') };
is(join(',', sort map { $_->{properties}{erp_id} } @lines100), 'FV-100/1,FV-100/3',
	'removed line archived, new line added');
($l1) = grep { $_->{properties}{erp_id} eq 'FV-100/1' } @lines100;
is($l1->{id}, $l1_id, 'a changed line is updated, not duplicated');
is($l1->{properties}{quantity}, '3.000', 'with its new quantity');

# a correction invoice: one unit of line 1 returned, line 3 cheaper by 100
sub lines_of
{
	my ($deal) = @_;
	my %on_deal = map { $_->{fromId} => 1 } grep {
		$_->{fromType} eq 'line_items' && $_->{toType} eq 'deals' && $_->{toId} eq $deal->{id}
	} @{ ErpcrmTest::mock_get('/_mock/associations')->{results} };
	return sort { $a->{properties}{erp_id} cmp $b->{properties}{erp_id} }
	  grep { $on_deal{ $_->{id} } } @{ hs_objects('line_items') };
}
sub line_sum
{
	my $sum = 0;
	$sum += $_->{properties}{amount} for @_;
	return sprintf('%.2f', $sum);
}
sql(q{
INSERT INTO erp.invoices VALUES (105, 'KOR/1/2026', 1, NULL, 100, '2026-11-20', '2026-11-20', -1300, -1599, 'PLN', NULL);
INSERT INTO erp.invoice_lines VALUES (105, 1, 'P-1', 'Regał magazynowy', 2, 1200, 0, 100),
	(105, 3, 'P-3', 'Wózek paletowy', 1, 2400, 100, 100);
});
ok(wait_synced($node), 'the correction is synced');
$fv100 = hs_object('deals', 'FV-100');
is($fv100->{properties}{amount}, '5781.00', 'a correction invoice corrects the invoice deal\'s amount');
is($fv100->{properties}{net_amount}, '4700.00', 'and its net amount');
is(scalar(grep { $_->{properties}{erp_id} =~ /^FV-105/ } @{ hs_objects('deals') }), 0,
	'a correction is not a deal of its own');
is(scalar(grep { $_->{properties}{erp_id} =~ /^FV-105/ } @{ hs_objects('line_items') }), 0,
	'and has no line items of its own');
my @corrected = lines_of($fv100);
is(join(' ', map { "$_->{properties}{erp_id}:$_->{properties}{quantity}x$_->{properties}{price}" } @corrected),
	'FV-100/1:2.000x1200.00 FV-100/3:1.000x2400.00', 'the corrected lines replace the lines of the deal');
is($corrected[0]{id}, $l1_id, 'updated in place, not duplicated');
is(line_sum(@corrected), $fv100->{properties}{net_amount}, 'the line items add up to the corrected net amount');

# a second correction cancels line 3: its line item leaves the deal
sql(q{
INSERT INTO erp.invoices VALUES (107, 'KOR/2/2026', 1, NULL, 100, '2026-11-22', '2026-11-22', -2300, -2829, 'PLN', NULL);
INSERT INTO erp.invoice_lines VALUES (107, 3, 'P-3', 'Wózek paletowy', 0, 2400, 100, 100);
});
ok(wait_synced($node), 'the second correction is synced');
$fv100 = hs_object('deals', 'FV-100');
@corrected = lines_of($fv100);
is(join(' ', map { $_->{properties}{erp_id} } @corrected), 'FV-100/1', 'a cancelled line is archived');
is(line_sum(@corrected), $fv100->{properties}{net_amount}, 'the line items still add up to the net amount');
is($fv100->{properties}{amount}, '2952.00', 'and the deal shows the amount after both corrections');
is(scalar(grep { $_->{properties}{price} < 0 || $_->{properties}{quantity} < 0 } @{ hs_objects('line_items') }), 0,
	'HubSpot holds no negative price or quantity');
is(scalar(grep { !$_->{archived} } @{ ErpcrmTest::mock_get('/_mock/objects/line_items')->{results} }),
	scalar(() = sql("SELECT erp_id FROM erp.hs_invoice_lines UNION ALL SELECT erp_id FROM erp.hs_offer_lines") =~ /^/mg),
	'every line item in HubSpot is a line of the ERP: none orphaned');
is(sql('SELECT count(*) FROM erpcrm.failures'), '0', 'HubSpot refused nothing');

# --- a deal waiting for its company (the company is in the ERP, not yet in
# HubSpot: its delivery is paused)
sql("SELECT erpcrm.pause('companies')");
sql(q{
INSERT INTO erp.customers VALUES (4, 'Delta', NULL, 'delta.pl', 'B', 0, true);
INSERT INTO erp.invoices VALUES (106, 'FV/106/2026', 4, NULL, NULL, '2026-11-21', '2099-12-31', 100, 123, 'PLN', NULL);
INSERT INTO erp.invoice_lines VALUES (106, 1, 'P-2', 'Półka', 1, 100, 0);
});
ok(poll_until('waiting', sub {
	sql("SELECT error_category FROM erpcrm.key_status('invoices', 'FV-106')") eq 'WAITING_FOR_DEPENDENCY' }),
	'an invoice of a company not in HubSpot waits');
is(sql("SELECT state FROM erpcrm.key_status('invoices', 'FV-106')"), 'pending', 'pending, not failed');
is(hs_object('deals', 'FV-106'), undef, 'and is not sent without its company');
sql("SELECT erpcrm.resume('companies')");
ok(wait_synced($node), 'once the company exists the invoice follows');
ok(hs_associated('deals', hs_object('deals', 'FV-106')->{id}, 'companies', hs_object('companies', '4')->{id}, 5),
	'with its association');
is(sql('SELECT count(*) FROM erpcrm.failures'), '0', 'ordering made nothing fail');

# --- an inactive product is archived
sql("UPDATE erp.products SET active = false WHERE sku = 'P-2'");
ok(wait_synced($node), 'deactivation synced');
is(hs_object('products', 'P-2'), undef, 'an inactive product is archived');

# --- a backfill of two thousand invoices at the rate limit, progress in SQL
ErpcrmTest::mock_post('/_mock/config', { max_per_window => 100, window_ms => 10000 });
$node->append_conf('postgresql.conf', "erpcrm.max_calls_per_10s = 90\n");
$node->reload;
sql(q{
SELECT erpcrm.pause();
INSERT INTO erp.invoices SELECT 1000 + g, 'FV/' || g || '/B', 1 + g % 3, NULL, NULL, '2026-10-01', '2099-12-31', 100, 123, 'PLN', NULL
  FROM generate_series(1, 2000) g;
INSERT INTO erp.invoice_lines SELECT 1000 + g, l, 'P-1', 'Regał', l, 10, 0
  FROM generate_series(1, 2000) g, generate_series(1, 2) l;
SELECT erpcrm.resume();
});
ok(poll_until('progress', sub {
	sql("SELECT synced > 600 FROM erpcrm.status WHERE mapping = 'invoices'") eq 't' }, 120),
	'the backfill is under way');
my $progress = sql("SELECT pending + in_flight > 0, per_second > 0, time_left IS NOT NULL FROM erpcrm.status WHERE mapping = 'invoice_lines'");
is($progress, 't|t|t', 'progress mid-way: remaining, rate and time left are visible');
ok(wait_synced($node, 300), 'the backfill completes');
is(sql('SELECT count(*) FROM erpcrm.failures'), '0', 'the backfill failed nothing');
my $stats = ErpcrmTest::mock_get('/_mock/stats');
is($stats->{rateLimited}, 0, 'the backfill got no 429');
is(scalar(grep { $_->{properties}{erp_id} =~ /^FV-(\d+)$/ && $1 > 1000 } @{ hs_objects('deals') }), 2000,
	'every backfilled invoice is a deal');

$node->stop;
done_testing();

# The HubSpot contract: every request erpcrm sends and every answer the mock
# gives, checked against the models of HubSpot's official Node client
# (tests/contract/check.js, @hubspot/api-client pinned in
# tests/contract/package-lock.json).
#
# A representative sync of the mapping guide's ERP (examples/) touches every
# endpoint erpcrm uses: the connection check and the portal set-up, matching
# by search, batch upsert, update by HubSpot id, batch read of owners,
# archive, v4 associations made and removed, a 207 partial failure and
# error answers.  The mock records each call with its body and its answer;
# the checker then validates all of it.  A doctored copy of the same
# traffic shows the checker catches a wrong type and an unknown field.
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use JSON::PP;

my $contract = dirname(__FILE__) . '/../contract';
unless (-d "$contract/node_modules/\@hubspot/api-client")
{
	fail('HubSpot\'s client is installed (make test installs it as root; or npm ci in tests/contract)');
	done_testing();
	exit;
}

start_mock(config => { max_per_window => 0, daily_limit => 0,
	log_bodies => JSON::PP::true });
my $node = erpcrm_node('contract');
my $examples = dirname(__FILE__) . '/../../examples';
$node->safe_psql('postgres', 'CREATE EXTENSION erpcrm');
$node->safe_psql('postgres', slurp_file("$examples/erp.sql"));
$node->safe_psql('postgres', slurp_file("$examples/mappings.sql"));
sub sql { return $node->safe_psql('postgres', $_[0]); }

# --- the connection check and the portal's set-up
like(sql(q{SELECT string_agg("check" || ':' || ok, ',') FROM erpcrm.check_connection()}),
	qr/token valid:true/, 'check_connection() reaches HubSpot');
unlike(sql('SELECT string_agg(result, \',\') FROM erpcrm.setup_hubspot()'), qr/error/,
	'setup_hubspot() prepares properties, groups and the pipeline');

# --- records sales made by hand: matching finds them by search
my $deal_hs = ErpcrmTest::mock_post('/_mock/objects/deals',
	{ properties => { dealname => 'Gamma: regały', pipeline => 'default',
		dealstage => 'qualifiedtobuy', amount => '10000' } })->{id};
ErpcrmTest::mock_post('/_mock/objects/companies',
	{ properties => { name => 'Gamma (ręcznie)', domain => 'gamma.pl', hubspot_owner_id => '75000002' } });
ErpcrmTest::mock_post('/_mock/objects/contacts',
	{ properties => { email => 'ola@gamma.pl', firstname => 'Ola' } });

# --- the ERP; one invoice line HubSpot refuses (a 207)
ErpcrmTest::mock_post('/_mock/faults', { reject_ids => ['FV-101/2'] });
sql(qq{
INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit) VALUES
	(1, 'Alfa sp. z o.o.', '526-000-12-46', 'alfa.pl', 'A', 50000),
	(3, 'Gamma sp.j.', '777-000-00-01', 'gamma.pl', 'C', 5000);
INSERT INTO erp.persons (id, customer_id, email, first_name, last_name) VALUES
	(1, 1, 'adam\@alfa.pl', 'Adam', 'Nowak'), (2, 3, 'ola\@gamma.pl', 'Aleksandra', 'Lis');
INSERT INTO erp.products (sku, name, price, price_a, price_b, price_c, cost) VALUES
	('P-1', 'Regał magazynowy', 1200, 1100, 1150, 1190, 800),
	('P-2', 'Półka', 150, 130, 140, 145, 90);
INSERT INTO erp.orders (id, number, customer_id, ordered_on, status, total, source, hubspot_deal_id) VALUES
	(10, 'ZAM/10/2026', 3, '2026-11-02', 'in_progress', 12000, 'sales', '$deal_hs'),
	(11, 'ZAM/11/2026', 1, '2026-11-03', 'awaiting_payment', 300, 'b2b', NULL);
INSERT INTO erp.invoices (id, number, customer_id, order_id, issued_on, due_on, net, gross, salesperson) VALUES
	(100, 'FV/100/2026', 1, 11, '2026-11-01', '2026-11-15', 1500, 1845, '75000001'),
	(101, 'FV/101/2026', 3, 10, '2026-11-05', '2099-12-31', 6000, 7380, NULL);
INSERT INTO erp.invoice_lines (invoice_id, line_no, sku, name, qty, unit_price) VALUES
	(100, 1, 'P-1', 'Regał magazynowy', 1, 1200), (100, 2, 'P-2', 'Półka', 2, 150),
	(101, 1, 'P-1', 'Regał magazynowy', 5, 1200), (101, 2, 'P-2', 'Półka', 1, 150);
INSERT INTO erp.payments (invoice_id, customer_id, amount, paid_on) VALUES (100, 1, 1845, '2026-11-10');
INSERT INTO erp.offers (id, number, customer_id, valid_until, status) VALUES (200, 'OF/200/2026', 1, '2026-12-31', 'open');
INSERT INTO erp.offer_lines (offer_id, line_no, sku, qty, unit_price) VALUES (200, 1, 'P-2', 2, 140);
});
ok(wait_synced($node), 'the ERP is synced');
is(sql("SELECT erp_id FROM erpcrm.failures"), 'FV-101/2', 'the refused line is the one failure');

# --- changes: a moved contact (association removed and made), a removed
# line (archive), a deactivated product (archive), HubSpot errors
ErpcrmTest::mock_post('/_mock/faults', { force_status => [
	{ count => 1, status => 429, path_contains => '/batch/upsert' },
	{ count => 1, status => 500, path_contains => '/batch/upsert' } ] });
sql(q{
UPDATE erp.persons SET customer_id = 3 WHERE id = 1;
DELETE FROM erp.invoice_lines WHERE invoice_id = 100 AND line_no = 2;
DELETE FROM erp.offer_lines WHERE sku = 'P-2';
UPDATE erp.invoice_lines SET sku = 'P-1' WHERE sku = 'P-2';
UPDATE erp.products SET active = false WHERE sku = 'P-2';
UPDATE erp.products SET price = 1250 WHERE sku = 'P-1';
});
ok(wait_synced($node), 'the changes are synced');
ErpcrmTest::mock_post('/_mock/faults', {});
sql("SELECT erpcrm.requeue_failed()");
ok(wait_synced($node), 'the refused line, requeued, is synced');

# --- every call recorded, checked
my $dir = PostgreSQL::Test::Utils::tempdir();
my $log = ErpcrmTest::mock_get('/_mock/requests');
my $json = JSON::PP->new->canonical;
open(my $fh, '>', "$dir/traffic.json") or die;
print $fh $json->encode($log);
close $fh;

my ($out, $err) = ('', '');
my $rc = IPC::Run::run([ 'node', "$contract/check.js", "$dir/traffic.json" ], '>', \$out, '2>', \$err);
note($out);
diag($err) if $err;
ok($rc, 'every request erpcrm sent and every answer the mock gave conforms to HubSpot\'s client models')
  or diag(join("\n", grep { /^CONTRACT/ } split /\n/, $out));

# the check covered each endpoint erpcrm uses, in each way it is answered
for my $call (
	'POST /crm/v3/objects/{objectType}/batch/upsert: .*answers 200 x\d+.*207 x\d+.*429 x1.*500 x1',
	'POST /crm/v3/objects/{objectType}/batch/update: ',
	'POST /crm/v3/objects/{objectType}/batch/archive: .*answers 204',
	'POST /crm/v3/objects/{objectType}/batch/read: .*answers 200',
	'POST /crm/v3/objects/{objectType}/search: .*answers 200',
	'POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/(create|associate/default): ',
	'POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/archive: .*answers 204',
	'GET /crm/v3/properties/{objectType}: ',
	'POST /crm/v3/properties/{objectType}: .*answers 201',
	'POST /crm/v3/properties/{objectType}/groups: .*answers 201',
	'GET /crm/v3/pipelines/{objectType}: ',
	'POST /crm/v3/pipelines/{objectType}: .*answers 201')
{
	my $re = $call =~ s/([{}])/\\$1/gr;
	like($out, qr/^  $re/m, "checked: " . ($call =~ s/:.*//r));
}

# --- the checker itself: a doctored copy of the same traffic fails
my ($upsert) = grep { $_->{path} =~ m{/batch/upsert$} && $_->{status} == 200 && $_->{answer} }
  @{ $log->{results} };
my %bad = %$upsert;
$bad{body} = $json->decode($json->encode($upsert->{body}));
$bad{answer} = $json->decode($json->encode($upsert->{answer}));
$bad{body}{inputs}[0]{properties}{amount_as_number} = 12.5;
$bad{body}{inputs}[0]{idProperties} = 'erp_id';
$bad{answer}{results}[0]{id} = 1234;
delete $bad{answer}{status};
open($fh, '>', "$dir/doctored.json") or die;
print $fh $json->encode({ results => [ \%bad ] });
close $fh;
$rc = IPC::Run::run([ 'node', "$contract/check.js", "$dir/doctored.json" ], '>', \$out, '2>', \$err);
ok(!$rc, 'the checker fails doctored traffic');
like($out, qr/properties\.amount_as_number: expected a string, got number/, 'a number where HubSpot wants a string');
like($out, qr/inputs\[0\]\.idProperties: unknown field of SimplePublicObjectBatchInputUpsert/, 'an unknown field');
like($out, qr/answer 200\.results\[0\]\.id: expected a string/, 'a wrong type in an answer');
like($out, qr/answer 200: required field status of BatchResponseSimplePublicUpsertObject missing/,
	'a missing required field');

$node->stop;
done_testing();

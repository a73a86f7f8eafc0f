# Drift (issue 13, point 3): erpcrm.reconcile(mapping) reads HubSpot back,
# and erpcrm.drift names every object deleted or merged by hand, every
# ERP-owned property edited by hand, every association removed, and every
# HubSpot record with an ERP id the ERP does not know.  repair => true sends
# again what erpcrm owns and leaves the unknown records alone.  Everything
# happens "by hand" in HubSpot through the mock, and the worker makes the
# calls, within the run's budget.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('drift');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit, customer_since, last_order_at, vip)
SELECT i, 'Firm ' || i, '52' || i, 'firm' || i || '.example', 'A', 1000.50 + i,
	   date '2020-01-01' + i, timestamptz '2026-01-01 10:00:00+01' + i * interval '1 hour', i % 2 = 0
  FROM generate_series(1, 150) i;
INSERT INTO erp.persons (id, email, first_name, last_name, customer_id) SELECT i, 'p' || i || '@firm.example', 'Ann', 'Lee' || i, i FROM generate_series(1, 20) i;
INSERT INTO erp.products VALUES ('P-1', 'Widget', 12.50), ('P-2', 'Gadget', 7);
SELECT erpcrm.resync('companies');
SELECT erpcrm.resync('contacts');
SELECT erpcrm.resync('products');
});
ok(wait_synced($node), 'the ERP is delivered');

sub hs_id { return sql("SELECT hubspot_id FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = '$_[0]' AND s.erp_id = '$_[1]'"); }

# wait for a run to end, and return its state
sub run_ends
{
	my ($run) = @_;
	my $state;
	poll_until("reconcile run $run", sub {
		$state = sql("SELECT state FROM erpcrm.reconcile_runs WHERE run_id = $run");
		$state ne 'queued' && $state ne 'running' }, 90);
	return $state;
}

# 1. Nothing drifted: a run reads HubSpot and finds nothing
my $calls_before = sql("SELECT count(*) FROM erpcrm.api_log WHERE mapping = 'companies'");
my $run = sql("SELECT erpcrm.reconcile('companies')");
is(run_ends($run), 'done', 'a reconcile of a mapping that did not drift ends');
is(sql("SELECT count(*) FROM erpcrm.drift"), '0', 'it finds no drift');
is(sql("SELECT keys_checked || '/' || keys_total || ' ' || records_scanned || ' ' || calls FROM erpcrm.reconcile_runs WHERE run_id = $run"),
	'150/150 150 3', 'it checked 150 keys with two batch reads, and 150 records with one search');
my $reads = ErpcrmTest::mock_get('/_mock/requests')->{results};
my @batch_reads = grep { $_->{path} eq '/crm/v3/objects/companies/batch/read' } @$reads;
is(scalar(@batch_reads), 2, 'two batch reads of companies');
is(join(',', map { $_->{inputs} } @batch_reads), '100,50', '100 keys a call');
is(sql("SELECT count(*) FROM erpcrm.api_log WHERE mapping = 'companies'") - $calls_before, 3,
	'the calls are in erpcrm.api_log under the mapping');

# 2. Each kind of drift, by hand in HubSpot (the mock's control API)
ErpcrmTest::mock_patch('/_mock/objects/companies/' . hs_id('companies', '5'),
	{ properties => { name => 'Firm Five (renamed by sales)', credit_limit => '1005.5' } });
ErpcrmTest::mock_patch('/_mock/objects/companies/' . hs_id('companies', '6'),
	{ properties => { customer_since => '2020-01-07', vip => '', domain => 'FIRM6.example' } });
ErpcrmTest::mock_delete('/_mock/objects/companies/' . hs_id('companies', '107'));
my ($old108, $old109) = (hs_id('companies', '108'), hs_id('companies', '109'));
my $merged = ErpcrmTest::mock_post('/_mock/merge/companies', { primaryObjectId => $old109, objectIdToMerge => $old108 })->{id};
ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => 'Stranger', erp_id => '9999' } });
ErpcrmTest::mock_delete('/_mock/associations/contacts/' . hs_id('contacts', '3') . '/companies/' . hs_id('companies', '3'));
$run = sql("SELECT erpcrm.reconcile('companies')");
is(run_ends($run), 'done', 'the companies are reconciled');
is(sql("SELECT string_agg(erp_id || ' ' || kind || ' ' || COALESCE(property, '-') || ' ' || COALESCE(erp_value, '-') || ' -> ' || COALESCE(hubspot_value, '-'), E'\n' ORDER BY erp_id, property) FROM erpcrm.drift WHERE mapping = 'companies'"),
	join("\n",
		'107 missing - - -> -',
		"108 missing - - -> $merged",
		"109 edited hs_object_id $old109 -> $merged",
		'5 edited name Firm 5 -> Firm Five (renamed by sales)',
		"6 edited vip true -> ",
		'9999 unknown_erp_id erp_id - -> 9999'),
	'a renamed company, a property cleared, a deleted company, two merged ones and a stranger; equal numbers, dates, and a domain in capitals are not drift');
is(sql("SELECT detail FROM erpcrm.drift WHERE erp_id = '108'"), "merged into HubSpot record $merged by hand",
	'the company merged away says into which record');
is(sql("SELECT detail FROM erpcrm.drift WHERE erp_id = '107'"),
	'deleted in HubSpot (or merged into a record that does not carry this ERP id)', 'the missing one says why');
is(sql("SELECT status FROM erpcrm.drift WHERE erp_id = '9999'"), 'reported', 'an unknown ERP id is only reported');
is(sql("SELECT drift FROM erpcrm.status WHERE mapping = 'companies'"), '6',
	'erpcrm.status counts the six findings of the companies');

$run = sql("SELECT erpcrm.reconcile('contacts')");
is(run_ends($run), 'done', 'the contacts are reconciled');
is(sql("SELECT erp_id || ' ' || kind || ' ' || property || ' ' || erp_value || ' -> ' || COALESCE(hubspot_value, '-') FROM erpcrm.drift WHERE mapping = 'contacts'"),
	'3 association_removed company_erp_id 3 -> -', 'an association removed by hand');

# 3. repair: what erpcrm owns comes back, the stranger stays
$run = sql("SELECT erpcrm.reconcile('companies', repair => true)");
is(run_ends($run), 'done', 'a repairing run ends');
is(sql("SELECT requeued FROM erpcrm.reconcile_runs WHERE run_id = $run"), '5', 'five companies are sent again');
$run = sql("SELECT erpcrm.reconcile('contacts', repair => true)");
is(run_ends($run), 'done', 'a repairing run of contacts ends');
ok(wait_synced($node), 'the repairs are delivered');
ok(poll_until('repaired', sub { sql("SELECT count(*) FROM erpcrm.drift WHERE status NOT IN ('repaired', 'reported')") eq '0' }),
	'every finding erpcrm owns shows as repaired');
is(sql("SELECT string_agg(mapping || ' ' || drift, ',' ORDER BY mapping) FROM erpcrm.status WHERE mapping IN ('companies', 'contacts')"),
	'companies 1,contacts 0', 'erpcrm.status counts only what is not repaired: the stranger, reported');
my ($stranger) = grep { ($_->{properties}{erp_id} // '') eq '9999' && !$_->{archived} }
  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
ok($stranger, 'the record with an unknown ERP id was left alone');
ErpcrmTest::mock_delete("/_mock/objects/companies/$stranger->{id}");
state_ok($node, 'HubSpot holds what the ERP says again');
$run = sql("SELECT erpcrm.reconcile('companies')");
is(run_ends($run), 'done', 'a run after the repair ends');
is(sql("SELECT count(*) FROM erpcrm.drift WHERE mapping = 'companies'"), '0',
	'nothing is left, and the stranger deleted by hand is gone from erpcrm.drift');

# 4. A budget: the run stops, the next one goes on where it stopped
$run = sql("SELECT erpcrm.reconcile('companies', budget => 2)");
is(run_ends($run), 'budget_spent', 'a run whose budget is spent stops');
is(sql("SELECT calls || ' ' || keys_checked FROM erpcrm.reconcile_runs WHERE run_id = $run"), '1 100',
	'it read the first 100 keys, and stopped where the next batch could need more than its 2 calls');
my $next = sql("SELECT erpcrm.reconcile('companies', budget => 10)");
is(run_ends($next), 'done', 'the next run ends');
is(sql("SELECT started_after IS NOT NULL AND keys_checked = 50 FROM erpcrm.reconcile_runs WHERE run_id = $next"), 't',
	'it went on after the key where the first stopped');

# 5. Errors and privileges
my ($rc, $out, $err) = $node->psql('postgres', "SELECT erpcrm.reconcile('contacts', budget => 2)");
like($err, qr/a budget of 2 calls is too small to reconcile mapping "contacts"/, 'a budget too small is refused');
sql("SELECT erpcrm.pause()");
sql("SELECT erpcrm.reconcile('companies', budget => 5000)");
($rc, $out, $err) = $node->psql('postgres', "SELECT erpcrm.reconcile('companies')");
like($err, qr/mapping "companies" is being reconciled already/, 'one run of a mapping at a time');
is(sql("SELECT erpcrm.cancel_reconcile('companies')"), 't', 'a run can be cancelled');
is(sql("SELECT state FROM erpcrm.reconcile_runs WHERE mapping = 'companies' ORDER BY run_id DESC LIMIT 1"), 'cancelled',
	'it shows as cancelled');
sql("SELECT erpcrm.resume()");
sql(q{CREATE ROLE drift_monitor LOGIN IN ROLE erpcrm_monitor; CREATE ROLE drift_nobody LOGIN;});
is($node->safe_psql('postgres', q{SELECT (SELECT string_agg(mapping || ' ' || erp_id || ' ' || status, ',') FROM erpcrm.drift) || ' / ' || (SELECT count(*) FROM erpcrm.reconcile_runs)}, extra_params => [ '-U', 'drift_monitor' ]),
	'contacts 3 repaired / 9',
	'erpcrm_monitor reads erpcrm.drift and erpcrm.reconcile_runs');
($rc, $out, $err) = $node->psql('postgres', "SELECT erpcrm.reconcile('companies')", extra_params => [ '-U', 'drift_monitor' ]);
like($err, qr/permission denied/, 'erpcrm_monitor cannot start a reconcile');
($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM erpcrm.drift', extra_params => [ '-U', 'drift_nobody' ]);
like($err, qr/permission denied/, 'another role cannot read erpcrm.drift');

# 6. set_reconcile(): the worker reconciles by itself
($rc, $out, $err) = $node->psql('postgres', "SELECT erpcrm.set_reconcile('products', '30 seconds')");
like($err, qr/reconcile_every of mapping "products" is too short/, 'reconcile_every under a minute is refused');
($rc, $out, $err) = $node->psql('postgres', "SELECT erpcrm.set_reconcile('nosuch', '1 hour')");
like($err, qr/mapping "nosuch" does not exist/, 'set_reconcile() names an unknown mapping');
sql("SELECT erpcrm.set_reconcile('products', '1 hour')");
# a mapping redefined with the arguments of 1.2 keeps its schedule
sql("SELECT erpcrm.map('products', 'erp.hs_products', 'products', 'erp_id', 'archive', NULL)");
is(sql("SELECT reconcile_every FROM erpcrm.mapping WHERE name = 'products'"), '01:00:00',
	'map() with the arguments of 1.2 redefines the mapping and keeps reconcile_every');
ok(poll_until('a scheduled run', sub { sql("SELECT count(*) FROM erpcrm.reconcile_runs WHERE mapping = 'products' AND requested_by = 'reconcile_every' AND state = 'done'") eq '1' }),
	'a mapping given reconcile_every is reconciled by the worker');
sql("SELECT erpcrm.set_reconcile('products', NULL)");
is(sql("SELECT reconcile_every IS NULL FROM erpcrm.mapping WHERE name = 'products'"), 't',
	'set_reconcile(mapping, NULL) stops it');

ErpcrmTest::contract_log();
done_testing();

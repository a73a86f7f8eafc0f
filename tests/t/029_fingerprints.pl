# Fingerprints (issue 13, point 1): erpcrm records, per key, a hash of what
# HubSpot last accepted, and a dirtied key whose view row still hashes the
# same is recorded as synced without a call.  Starts at 1.2 (no fingerprints
# yet) and upgrades: the first send records them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('fingerprints');
load_erp($node, version => '1.2');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sub crm_calls { return ErpcrmTest::crm_calls_since($_[0]); }
sub last_seq { return ErpcrmTest::mock_last_seq(); }
sub company_name
{
	my ($key) = @_;
	my $o = hs_object('companies', $key);
	return $o ? $o->{properties}{name} : undef;
}

# the ERP keeps a column the mapping view does not send
sql(q{
ALTER TABLE erp.customers ADD COLUMN notes text;
INSERT INTO erp.customers (id, name, nip, domain)
SELECT i, 'Customer ' || i, lpad(i::text, 10, '0'), 'c' || i || '.example' FROM generate_series(1, 50) i;
INSERT INTO erp.persons SELECT i, i, 'p' || i || '@c.example', 'First', 'Last' || i FROM generate_series(1, 20) i;
});
ok(wait_synced($node), '1.2: companies and contacts delivered');

sql("ALTER EXTENSION erpcrm UPDATE TO '1.3'");
is(sql("SELECT count(*) FROM erpcrm.sync_state WHERE fingerprint IS NOT NULL"), '0',
	'keys upgraded from 1.2 have no fingerprint yet');

# the first send after the upgrade records the fingerprints
my $seq = last_seq();
sql("UPDATE erp.customers SET notes = 'first'");
ok(wait_synced($node), 'an update of an unused column is delivered');
ok(crm_calls($seq) > 0, 'without fingerprints, the keys are sent once');
is(sql("SELECT count(*) FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
		 WHERE m.name = 'companies' AND s.fingerprint IS NOT NULL AND s.state = 'synced'"), '50',
	'the send recorded a fingerprint for every company');

# the same again costs nothing
$seq = last_seq();
my $before = sql("SELECT count(*) FROM erpcrm.api_log");
sql("UPDATE erp.customers SET notes = 'second'");
ok(poll_until('the dirtied keys recorded', sub {
	sql("SELECT unchanged FROM erpcrm.status WHERE mapping = 'companies'") eq '50' }),
	'erpcrm.status counts the 50 keys recorded without a call');
ok(wait_synced($node), 'every key is synced again');
is(scalar(crm_calls($seq)), 0, 'an ERP update touching only columns the view does not use costs 0 HubSpot calls');
is(sql("SELECT count(*) FROM erpcrm.api_log") - $before, 0, 'erpcrm.api_log has no new call');
is(sql("SELECT count(*) FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
		 WHERE m.name = 'companies' AND s.state = 'synced' AND s.dirty_since IS NULL"), '50',
	'the keys are synced, not pending');

# a real change is sent, alone
$seq = last_seq();
sql("UPDATE erp.customers SET name = 'Renamed 7', notes = 'third' WHERE id = 7");
sql("UPDATE erp.customers SET notes = 'third' WHERE id <> 7");
ok(poll_until('the renamed company', sub { (company_name('7') // '') eq 'Renamed 7' }),
	'a changed row is sent');
ok(wait_synced($node), 'synced');
my @calls = crm_calls($seq);
is(scalar(@calls), 1, 'one call');
is($calls[0]{inputs}, 1, 'carrying only the changed key');

# a change of association target is a change
$seq = last_seq();
sql("UPDATE erp.persons SET customer_id = 2 WHERE id = 1");
ok(wait_synced($node), 'the contact moved to another company');
ok(scalar(grep { $_->{path} =~ m{/associations/} } crm_calls($seq)) > 0,
	'a contact whose company changed is sent, with its associations');
$seq = last_seq();
sql("UPDATE erp.persons SET customer_id = customer_id");
ok(wait_synced($node), 'contacts dirtied without change');
is(scalar(crm_calls($seq)), 0, 'contacts whose company did not change cost 0 calls');

# resync: by default every key is sent; force => false only what changed
$seq = last_seq();
is(sql("SELECT erpcrm.resync('companies', force => false)"), '50', 'resync(force => false) looks at every key');
ok(wait_synced($node), 'synced');
is(scalar(crm_calls($seq)), 0, 'resync(force => false) of unchanged rows costs 0 calls');
$seq = last_seq();
sql("SELECT erpcrm.resync('companies')");
ok(wait_synced($node), 'synced');
is(join(',', map { $_->{inputs} } crm_calls($seq)), '50', 'resync() sends every key, as before 1.3');

# a key whose last attempt failed is sent even if its row is the same
ErpcrmTest::mock_post('/_mock/faults', { reject_ids => ['9'] });
sql("UPDATE erp.customers SET name = 'Broken 9' WHERE id = 9");
ok(poll_until('the refused key', sub {
	sql("SELECT state FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
		  WHERE m.name = 'companies' AND s.erp_id = '9'") eq 'failed' }), 'HubSpot refuses key 9');
ErpcrmTest::mock_post('/_mock/faults', {});
sql("UPDATE erp.customers SET name = 'Customer 9' WHERE id = 9");
ok(poll_until('key 9 again', sub { (company_name('9') // '') eq 'Customer 9' }),
	'a key that failed goes out although its row is what HubSpot last accepted');

# a mapping view whose column list changes: every row differs
$seq = last_seq();
sql(q{
DROP VIEW erp.hs_companies;
CREATE VIEW erp.hs_companies AS
SELECT id AS erp_id, name, nip, domain, price_level, credit_limit, customer_since, last_order_at
  FROM erp.customers WHERE active;
});
sql("UPDATE erp.customers SET notes = 'fourth'");
ok(wait_synced($node), 'synced with the new view');
is(eval { my $n = 0; $n += $_->{inputs} for grep { $_->{path} =~ m{/companies/batch/upsert} } crm_calls($seq); $n }, 50,
	'a view that lost a column sends every key again');
$seq = last_seq();
sql("UPDATE erp.customers SET notes = 'fifth'");
ok(wait_synced($node), 'synced');
is(scalar(crm_calls($seq)), 0, 'and then nothing more');

# the SQL surface: erpcrm.fingerprint() is the worker's own hash
is(sql("SELECT erpcrm.fingerprint('companies', '3') = s.fingerprint
		  FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
		 WHERE m.name = 'companies' AND s.erp_id = '3'"), 't',
	'erpcrm.fingerprint() gives the fingerprint the worker recorded');
is(sql("SELECT erpcrm.fingerprint('companies', 'no such key') IS NULL"), 't',
	'a key not in the view has no fingerprint');
sql("SELECT erpcrm.pause('companies')");
sql("UPDATE erp.customers SET domain = 'new.example' WHERE id = 3");
is(sql("SELECT erpcrm.fingerprint('companies', '3') <> s.fingerprint
		  FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
		 WHERE m.name = 'companies' AND s.erp_id = '3'"), 't',
	'a changed row has another fingerprint');
sql("SELECT erpcrm.resume('companies')");
ok(wait_synced($node), 'synced');

ok(state_ok($node), 'HubSpot holds what the views say');
done_testing();

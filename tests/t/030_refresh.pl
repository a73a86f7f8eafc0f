# erpcrm.refresh(mapping) (issue 13, point 2): the view is compared with
# the fingerprints of what HubSpot holds, and only keys whose rows differ,
# left the view or joined it are marked dirty.  A view whose output depends
# on the date (an invoice becomes overdue) is kept true by the worker with
# set_refresh(), without an ERP write.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

my $config = ErpcrmTest::default_mock_config();
$config->{properties}{deals} = [ { name => 'payment_status', type => 'string' } ];
start_mock(config => $config);
my $node = erpcrm_node('refresh');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub crm_calls { return ErpcrmTest::crm_calls_since($_[0]); }
sub last_seq { return ErpcrmTest::mock_last_seq(); }
sub status_of
{
	my %s;
	for my $o (@{ ErpcrmTest::mock_get('/_mock/objects/deals')->{results} })
	{
		my $k = $o->{properties}{erp_id} // next;
		next unless $k =~ /^inv-/;
		$s{$k} = $o->{archived} ? 'archived' : ($o->{properties}{payment_status} // '');
	}
	return \%s;
}

# "today" is a setting of the ERP, so that the test moves time; hidden
# invoices are filtered out through a table no watch looks at
sql(q{
CREATE TABLE erp.clock (today date NOT NULL);
INSERT INTO erp.clock VALUES ('2026-01-01');
CREATE FUNCTION erp.today() RETURNS date LANGUAGE sql STABLE AS 'SELECT today FROM erp.clock';
CREATE TABLE erp.hidden (id integer PRIMARY KEY);
CREATE TABLE erp.invoices (id integer PRIMARY KEY, due date NOT NULL, paid boolean NOT NULL DEFAULT false);
INSERT INTO erp.invoices SELECT i, date '2026-01-01' + (i % 20), false FROM generate_series(1, 200) i;
CREATE VIEW erp.hs_invoices AS
SELECT 'inv-' || i.id AS erp_id, 'Invoice ' || i.id AS dealname,
	   CASE WHEN i.paid THEN 'paid' WHEN i.due < erp.today() THEN 'overdue' ELSE 'open' END AS payment_status
  FROM erp.invoices i WHERE i.id NOT IN (SELECT id FROM erp.hidden);
SELECT erpcrm.map('invoices', 'erp.hs_invoices', 'deals');
SELECT erpcrm.watch('invoices', 'erp.invoices', $$'inv-' || id$$);
SELECT erpcrm.resync('invoices');
});
ok(wait_synced($node), 'the invoices are delivered');
is(scalar(grep { $_ eq 'open' } values %{ status_of() }), 200, 'every invoice is open');

# nothing changed: nothing to do
my $seq = last_seq();
is(sql("SELECT erpcrm.refresh('invoices')"), '0', 'a refresh of unchanged rows marks nothing');
ok(wait_synced($node), 'synced');
is(scalar(crm_calls($seq)), 0, 'and costs 0 calls');
isnt(sql("SELECT last_refresh FROM erpcrm.status WHERE mapping = 'invoices'"), '',
	'erpcrm.status shows when the last refresh ended');

# five days later, 50 invoices are overdue: the ERP wrote nothing
sql("UPDATE erp.clock SET today = '2026-01-06'");
$seq = last_seq();
is(sql("SELECT erpcrm.refresh('invoices')"), '50', 'refresh marks the 50 invoices whose row changed');
ok(wait_synced($node), 'synced');
my $s = status_of();
is(scalar(grep { $s->{$_} eq 'overdue' } keys %$s), 50, 'HubSpot shows them overdue');
is($s->{'inv-3'}, 'overdue', 'inv-3 (due January 4th) is overdue');
is($s->{'inv-5'}, 'open', 'inv-5 (due January 6th) is not');
is(join(',', map { $_->{inputs} } crm_calls($seq)), '50', 'one call, for the 50 changed keys only');

# keys that leave the view, come back, or join it without a captured write
sql("INSERT INTO erp.hidden VALUES (7), (8)");
# (a replica session fires no capture trigger: the row is not captured)
sql("SET session_replication_role = replica; INSERT INTO erp.invoices VALUES (201, '2026-02-01', false)");
is(sql("SELECT count(*) FROM erpcrm.sync_state WHERE erp_id = 'inv-201'"), '0', 'inv-201 is not known to erpcrm');
is(sql("SELECT erpcrm.refresh('invoices')"), '3', 'refresh marks the two keys that left the view and the one that joined');
ok(wait_synced($node), 'synced');
$s = status_of();
ok(!defined $s->{'inv-7'} || $s->{'inv-7'} eq 'archived', 'a key that left the view is archived in HubSpot');
is(sql("SELECT state FROM erpcrm.sync_state WHERE erp_id = 'inv-7'"), 'archived', 'and in erpcrm.sync_state');
is($s->{'inv-201'}, 'open', 'a key that joined the view is sent');
sql("DELETE FROM erp.hidden WHERE id = 7");
is(sql("SELECT erpcrm.refresh('invoices')"), '1', 'a key back in its view is marked');
ok(wait_synced($node), 'synced');
is(status_of()->{'inv-7'}, 'open', 'and sent again');

# the worker refreshes by itself, in small steps
is(sql("SELECT refresh_every FROM erpcrm.mapping WHERE name = 'invoices'"), '', 'no refresh_every by default');
sql("SELECT erpcrm.set_refresh('invoices', '1 second')");
sql("UPDATE erp.clock SET today = '2026-01-11'");
ok(poll_until('the worker\'s refresh', sub {
	my $st = status_of();
	scalar(grep { $st->{$_} eq 'overdue' } keys %$st) == 99 }),
	'with refresh_every, the worker finds the invoices that became overdue (no ERP write, no refresh() call)');
ok(poll_until('the refresh recorded', sub {
	sql("SELECT refresh_dirtied FROM erpcrm.fingerprint_stat f JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'invoices'") ne '' }),
	'the worker records its refresh');
ok(wait_synced($node), 'synced');
$seq = last_seq();
my $t0 = sql("SELECT now()");
ok(poll_until('two more refreshes', sub {
	sql("SELECT last_refresh > timestamptz '$t0' + interval '1 second' FROM erpcrm.status WHERE mapping = 'invoices'") eq 't' }),
	'the worker keeps refreshing');
is(scalar(crm_calls($seq)), 0, 'refreshes of unchanged rows cost 0 calls');
sql("SELECT erpcrm.set_refresh('invoices', NULL)");

# errors and privileges
my ($ret, $out, $err) = $node->psql('postgres', "SELECT erpcrm.set_refresh('invoices', '-1 minute')");
like($err, qr/refresh_every of mapping "invoices" must be a positive interval/, 'a negative interval is refused');
($ret, $out, $err) = $node->psql('postgres', "SELECT erpcrm.refresh('nosuch')");
like($err, qr/mapping "nosuch" does not exist/, 'an unknown mapping is named');
sql("CREATE ROLE clerk LOGIN");
($ret, $out, $err) = $node->psql('postgres', "SET ROLE clerk; SELECT erpcrm.refresh('invoices')");
like($err, qr/permission denied/, 'an ERP role may not refresh');

state_ok($node, 'HubSpot holds what the view says',
	mappings => [ { name => 'invoices', view => 'erp.hs_invoices', type => 'deals', archive => 1 } ],
	associations => []);
done_testing();

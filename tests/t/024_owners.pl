# Owners by e-mail (issue 13, point 6): the worker copies HubSpot's owners
# (GET /crm/v3/owners, every page, active and deactivated), and a mapping
# view's erpcrm.owner_id(email) AS hubspot_owner_id sends the owner's id;
# an unknown or deactivated owner's e-mail gives NULL and is counted in
# erpcrm.status.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use JSON::PP;

# 150 active owners (two pages of 100) and one deactivated
my @owners = map { { id => "7600" . sprintf('%04d', $_), email => "rep$_\@example.com" } } 0 .. 149;
push @owners, { id => '76009999', email => 'gone@example.com', archived => JSON::PP::true };
start_mock(config => { %{ ErpcrmTest::default_mock_config() }, owners => \@owners });
my $node = erpcrm_node('owners');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

ok(poll_until('the owners copy', sub { sql('SELECT count(*) FROM erpcrm.hubspot_owner') eq '151' }),
	'the worker copied every owner, both pages and the deactivated one');
my $pages = ErpcrmTest::mock_get('/_mock/requests')->{results};
is(scalar(grep { $_->{path} =~ m{^/crm/v3/owners} } @$pages), 3,
	'three calls: two pages of active owners, one of deactivated ones');
is(sql("SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '/crm/v3/owners%' AND http_status = 200 AND mapping IS NULL"), '3',
	'the calls are in erpcrm.api_log');

is(sql("SELECT erpcrm.owner_id('rep120\@example.com')"), '76000120', 'an owner of the second page is found');
is(sql("SELECT erpcrm.owner_id('REP7\@Example.com')"), '76000007', 'e-mails match whatever their case');
is(sql("SELECT erpcrm.owner_id('gone\@example.com') IS NULL"), 't', 'a deactivated owner gives NULL');
is(sql("SELECT erpcrm.owner_id('nobody\@example.com') IS NULL"), 't', 'an unknown e-mail gives NULL');

# a mapping view that assigns owners by e-mail
sql(q{
CREATE TABLE erp.leads (id integer PRIMARY KEY, email text, rep_email text);
CREATE VIEW erp.hs_leads AS
SELECT id AS erp_id, email, erpcrm.owner_id(rep_email) AS hubspot_owner_id FROM erp.leads;
SELECT erpcrm.map('leads', 'erp.hs_leads', 'contacts');
SELECT erpcrm.watch('leads', 'erp.leads', 'id');
INSERT INTO erp.leads VALUES (1, 'a@client.example', 'rep120@example.com'),
	(2, 'b@client.example', 'nobody@example.com'), (3, 'c@client.example', 'gone@example.com');
});
ok(wait_synced($node), 'the leads are delivered');
my %owner_of = map { ($_->{properties}{erp_id} // '') => ($_->{properties}{hubspot_owner_id} // '') }
  grep { !$_->{archived} } @{ ErpcrmTest::mock_get('/_mock/objects/contacts')->{results} };
is($owner_of{1}, '76000120', 'the lead is assigned to its owner by e-mail');
is($owner_of{2}, '', 'an unknown e-mail leaves the owner empty');
is($owner_of{3}, '', 'a deactivated owner is not assigned');
is(sql("SELECT unknown_owners FROM erpcrm.status WHERE mapping = 'leads'"), '2',
	'erpcrm.status counts the rows whose owner e-mail is unknown');
is(sql("SELECT unknown_owners FROM erpcrm.status WHERE mapping = 'companies'"), '0',
	'other mappings count none');

done_testing();

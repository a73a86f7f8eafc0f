# The way back (issue 14): a subscription whose filter is an OR of groups
# (HubSpot's filterGroups) gets the changes any group selects, and none of
# the others, with erpcrm's window on the last-modified date in every group
# it sends.  Its associations (companies and contacts) are read with
# HubSpot's v4 batch read: one call per object type per page of changes,
# over several pages, counted as the subscription's calls.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use ErpcrmTest;

start_mock(config => { %{ ErpcrmTest::default_mock_config() }, search_index_delay_ms => 300 });
my $node = erpcrm_node('filter_groups', conf => q{
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '1s'
erpcrm.pull_page_size = 2
});
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE erp.taken (hubspot_id text PRIMARY KEY, name text, companies text, contacts text);
CREATE FUNCTION erp.take(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
	INSERT INTO erp.taken VALUES (c.hubspot_id, c.properties ->> 'dealname',
		(SELECT string_agg(a ->> 'hubspot_id', ',') FROM jsonb_array_elements(c.associations -> 'companies') a),
		(SELECT string_agg(a ->> 'hubspot_id', ',') FROM jsonb_array_elements(c.associations -> 'contacts') a))
	ON CONFLICT (hubspot_id) DO NOTHING;
END
$$;
-- won deals of the sales pipeline, or any big deal of the other one
SELECT erpcrm.subscribe('picked', 'deals', '{dealname,amount}', '{"filterGroups": [
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
				 {"propertyName": "pipeline", "operator": "EQ", "value": "default"}]},
	{"filters": [{"propertyName": "pipeline", "operator": "EQ", "value": "other"},
				 {"propertyName": "amount", "operator": "GTE", "value": 5000}]}]}',
	'erp.take(erpcrm.hubspot_change)', associations => '{companies,contacts}');
});
my $seen = ErpcrmTest::mock_last_seq();

my $company = ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => 'Gamma' } })->{id};
my $contact = ErpcrmTest::mock_post('/_mock/objects/contacts', { properties => { email => 'ewa@gamma.pl' } })->{id};
my %deal;
for my $d (['won', 'default', 'closedwon', 100], ['big other', 'other', 'appointmentscheduled', 9000],
	['lost', 'default', 'closedlost', 9000], ['small other', 'other', 'closedwon', 10],
	['won too', 'default', 'closedwon', 1], ['big too', 'other', 'closedlost', 5000])
{
	$deal{ $d->[0] } = ErpcrmTest::mock_post('/_mock/objects/deals', { properties => {
		dealname => $d->[0], pipeline => $d->[1], dealstage => $d->[2], amount => $d->[3] },
		associations => [ { toType => 'companies', toId => $company }, { toType => 'contacts', toId => $contact } ] })->{id};
}
ok(poll_until('four deals', sub { sql('SELECT count(*) FROM erp.taken') eq '4' }), 'the deals either group selects were handed over');
my $settled = sql('SELECT now()');
ok(poll_until('the pulls past the last deal',
	sub { sql("SELECT caught_up_to > '$settled' FROM erpcrm.subscriptions") eq 't' }), 'read past the last deal');
is(sql("SELECT string_agg(name, ', ' ORDER BY name) FROM erp.taken"), 'big other, big too, won, won too',
	'those of either group, and no other');
is(sql("SELECT count(*) FROM erp.taken WHERE companies = '$company' AND contacts = '$contact'"), '4',
	'each with its company and contact');

my @calls = grep { $_->{seq} > $seen } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
my @searches = grep { $_->{path} eq '/crm/v3/objects/deals/search' } @calls;
my @groups = map { @{ $_->{body}{filterGroups} } } @searches;
ok(@searches && !(grep { @{ $_->{body}{filterGroups} } != 2 } @searches), 'every search sent both groups');
ok(!(grep { my @w = grep { $_->{propertyName} eq 'hs_lastmodifieddate' } @{ $_->{filters} }; @w != 2 } @groups),
	'each with erpcrm\'s window on hs_lastmodifieddate');
my $pages = grep { $_->{status} == 200 && @{ $_->{answer}{results} // [] } } @searches;
my %reads;
$reads{ $_->{path} }++ for grep { $_->{path} =~ m{^/crm/v4/associations/deals/} } @calls;
cmp_ok($pages, '>=', 2, 'the changes came in several pages');
is_deeply(\%reads, { '/crm/v4/associations/deals/companies/batch/read' => $pages,
	'/crm/v4/associations/deals/contacts/batch/read' => $pages },
	'one association read per object type per page of changes');
is(sql("SELECT count(*) FROM erpcrm.api_call a JOIN erpcrm.subscription s USING (subscription_id)
	WHERE s.name = 'picked' AND a.path LIKE '/crm/v4/associations/%'"), 2 * $pages,
	'kept as the subscription\'s calls');

done_testing();

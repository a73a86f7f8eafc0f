# The way back for contacts (issue 14): HubSpot searches contacts by
# lastmodifieddate, not hs_lastmodifieddate (the mock, as HubSpot, finds no
# contact by the latter).  Contacts sales creates in HubSpot reach the ERP
# through examples/subscriptions.sql's erp.contact_from_hubspot, with their
# company read by HubSpot's v4 batch read: the ERP customer where erpcrm
# synced the company, its HubSpot id otherwise.  The ERP's own contacts never
# come back, a later edit by hand arrives as a change of what changed, and
# the association reads count as the subscription's calls.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use ErpcrmTest;

start_mock(config => { %{ ErpcrmTest::default_mock_config() }, search_index_delay_ms => 300,
	contacts_hs_lastmodifieddate => JSON::PP::false });
my $node = ErpcrmTest::examples_node('contacts_back');
sub sql { return $node->safe_psql('postgres', $_[0]); }

# the ERP's customer and its person, in HubSpot
sql(q{INSERT INTO erp.customers VALUES (1, 'Alfa sp. z o.o.', '526-000-12-46', 'alfa.pl', 'A', 50000, true)});
sql(q{INSERT INTO erp.persons VALUES (10, 1, 'jan@alfa.pl', 'Jan', 'Alfowski', NULL)});
ok(wait_synced($node), 'the ERP\'s customer and person are in HubSpot');
my $alfa = sql("SELECT s.hubspot_id FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
	WHERE m.name = 'companies' AND s.erp_id = '1'");
my $jan = sql("SELECT s.hubspot_id FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
	WHERE m.name = 'contacts' AND s.erp_id = '10'");
like($jan, qr/^\d+$/, 'the ERP\'s person is a contact');
my $seen = ErpcrmTest::mock_last_seq();

# sales' contacts: one of Alfa, one of a company made by hand, one alone
my $delta = ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => 'Delta', domain => 'delta.pl' } })->{id};
my $ola = ErpcrmTest::mock_post('/_mock/objects/contacts', { properties => {
	email => 'ola@alfa.pl', firstname => 'Ola', lastname => 'Nowa' },
	associations => [ { toType => 'companies', toId => $alfa } ] })->{id};
my $piotr = ErpcrmTest::mock_post('/_mock/objects/contacts', { properties => {
	email => 'piotr@delta.pl', firstname => 'Piotr', lastname => 'Delta' },
	associations => [ { toType => 'companies', toId => $delta } ] })->{id};
my $solo = ErpcrmTest::mock_post('/_mock/objects/contacts', { properties => {
	email => 'Solo@Example.com', firstname => 'Solo' } })->{id};

ok(poll_until('three contacts', sub { sql('SELECT count(*) FROM erp.prospect_contacts') eq '3' }),
	'the contacts sales made reached the ERP')
  or diag(sql("SELECT row_to_json(s) FROM erpcrm.subscriptions s"),
	sql("SELECT string_agg(path || ' ' || http_status, E'\n') FROM erpcrm.api_call WHERE subscription_id IS NOT NULL"));
is(sql("SELECT string_agg(firstname || ' ' || email || ' ' || COALESCE(customer_id::text, '-') || ' '
		|| COALESCE(company_hubspot_id, '-'), ', ' ORDER BY firstname) FROM erp.prospect_contacts"),
	"Ola ola\@alfa.pl 1 $alfa, Piotr piotr\@delta.pl - $delta, Solo solo\@example.com - -",
	'each with its company: the ERP customer erpcrm synced, else the HubSpot company');
is(sql("SELECT count(*) FROM erpcrm.inbox WHERE hubspot_id = '$jan'"), '0',
	'the ERP\'s own contact never came back as a change');
is(sql("SELECT count(*) FROM erpcrm.parked_changes"), '0', 'no change was parked');

# what was asked: contacts by lastmodifieddate; companies by the v4 batch read
my @calls = grep { $_->{seq} > $seen } @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
my @searches = grep { $_->{path} eq '/crm/v3/objects/contacts/search' } @calls;
ok(@searches > 0, 'contacts were searched');
my $sorted = join(',', sort keys %{ { map { (ref $_ ? $_->{propertyName} : $_) => 1 }
	map { @{ $_->{body}{sorts} // [] } } @searches } });
is($sorted, 'lastmodifieddate', 'by lastmodifieddate, the property HubSpot keeps for contacts');
my @reads = grep { $_->{path} eq '/crm/v4/associations/contacts/companies/batch/read' } @calls;
ok(@reads > 0, 'their companies were read with HubSpot\'s v4 batch read');
ok(!(grep { !@{ $_->{body}{inputs} // [] } } @reads), 'only for pages that had contacts');
cmp_ok(sql("SELECT count(*) FROM erpcrm.api_call a JOIN erpcrm.subscription s USING (subscription_id)
	WHERE a.path LIKE '/crm/v4/associations/contacts/companies/%' AND s.name = 'hubspot_contacts'"), '>', 0,
	'the reads count as the subscription\'s calls in erpcrm.api_log');

# a later edit by hand: a change of what changed, with the company still there
ErpcrmTest::mock_patch("/_mock/objects/contacts/$ola", { properties => { lastname => 'Nowak' } });
ok(poll_until('the new name', sub { sql("SELECT lastname FROM erp.prospect_contacts WHERE hubspot_id = '$ola'") eq 'Nowak' }),
	'an edit by hand reached the ERP');
is(sql("SELECT array_to_string(changed, ',') || ' ' || (associations -> 'companies' -> 0 ->> 'erp_id')
	FROM erpcrm.inbox WHERE hubspot_id = '$ola' ORDER BY change_id DESC LIMIT 1"), 'lastname 1',
	'as a change of the last name, the company with its ERP id');

done_testing();

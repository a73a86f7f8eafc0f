# The order round trip of the mapping guide (issue 14), with the examples'
# own files: a deal sales moves to won in HubSpot becomes an ERP order
# carrying the deal's HubSpot id (examples/subscriptions.sql); the order's
# status goes back onto that same deal (hs_sales_orders); its invoice
# becomes an invoice deal associated to it.  Then the same deal is written
# from both sides at once: each side's change arrives once, and nothing
# loops.  Companies sales creates in HubSpot become prospects, matched to
# ERP customers by NIP or domain; the ERP's own companies never come back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use ErpcrmTest;

start_mock(config => { %{ ErpcrmTest::default_mock_config() }, search_index_delay_ms => 300 });
my $node = ErpcrmTest::examples_node('round_trip');
sub sql { return $node->safe_psql('postgres', $_[0]); }
is(sql("SELECT string_agg(subscription, ',' ORDER BY subscription) FROM erpcrm.subscriptions"),
	'hubspot_companies,hubspot_contacts,won_deals', 'the examples subscribe to won deals, to companies and to contacts');

sub deal
{
	my ($id) = @_;
	my ($d) = grep { $_->{id} eq $id } @{ ErpcrmTest::mock_get('/_mock/objects/deals')->{results} };
	return $d->{properties};
}

sql(q{INSERT INTO erp.customers VALUES
	(1, 'Alfa sp. z o.o.', '526-000-12-46', 'alfa.pl', 'A', 50000, true)});
ok(wait_synced($node), 'the ERP\'s customer is in HubSpot');

my $alfa = sql("SELECT s.hubspot_id FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
	WHERE m.name = 'companies' AND s.erp_id = '1'");
like($alfa, qr/^\d+$/, 'the customer\'s company has its HubSpot id');

# --- 1. sales moves its deal, made for Alfa's company, to won, by hand
my $deal = ErpcrmTest::mock_post('/_mock/objects/deals', { properties => {
	dealname => 'Alfa: regały', pipeline => 'default', dealstage => 'qualifiedtobuy', amount => '10000' },
	associations => [ { toType => 'companies', toId => $alfa } ] })->{id};
ErpcrmTest::mock_patch("/_mock/objects/deals/$deal", { properties => { dealstage => 'closedwon' } });

# --- 2. the handler makes an ERP order carrying the deal's id
ok(poll_until('the order', sub { sql("SELECT count(*) FROM erp.orders WHERE hubspot_deal_id = '$deal'") eq '1' }),
	'the won deal became an ERP order');
my $order = sql("SELECT id FROM erp.orders WHERE hubspot_deal_id = '$deal'");
is(sql("SELECT number || ' ' || status || ' ' || total FROM erp.orders WHERE id = $order"),
	"HS/$deal in_progress 10000.00", 'with the deal\'s amount, in progress');
is(sql("SELECT customer_id FROM erp.orders WHERE id = $order"), '1',
	'for the ERP customer of the deal\'s company (its association, with the ERP id erpcrm knows)');
is(sql("SELECT associations -> 'companies' -> 0 ->> 'hubspot_id' FROM erpcrm.inbox WHERE hubspot_id = '$deal' ORDER BY change_id LIMIT 1"),
	$alfa, 'the change carried the company\'s HubSpot id');
ok((grep { $_->{path} eq '/crm/v4/associations/deals/companies/batch/read' }
	@{ ErpcrmTest::mock_get('/_mock/requests')->{results} }) > 0,
	'read with HubSpot\'s v4 batch read');

# --- 3. the order's status goes back onto that same deal
ok(poll_until('the order on the deal', sub { (deal($deal)->{order_status} // '') eq 'in_progress' }),
	'the order\'s status is on the sales deal');
is(deal($deal)->{order_number}, "HS/$deal", 'its number too');
is(scalar(grep { ($_->{properties}{erp_id} // '') eq "ZAM-$order" }
	@{ ErpcrmTest::mock_get('/_mock/objects/deals')->{results} }), 1, 'no second deal was made for the order');

# --- 4. the order's invoice becomes an invoice deal linked to it
sql(qq{INSERT INTO erp.invoices VALUES (500, 'FV/500/2026', 1, $order, NULL, current_date, current_date + 14,
	1000, 1230, 'PLN', NULL)});
ok(wait_synced($node), 'the invoice is delivered');
my ($invoice) = grep { ($_->{properties}{erp_id} // '') eq 'FV-500' }
	@{ ErpcrmTest::mock_get('/_mock/objects/deals')->{results} };
ok($invoice, 'the invoice is a deal');
ok((grep { $_->{fromType} eq 'deals' && $_->{toType} eq 'deals'
		&& $_->{fromId} eq $invoice->{id} && $_->{toId} eq $deal }
	@{ ErpcrmTest::mock_get('/_mock/associations')->{results} }) > 0,
	'associated to the sales deal of its order');

# --- 5. both sides write the same deal at once
ErpcrmTest::mock_patch("/_mock/objects/deals/$deal", { properties => { amount => '12000' } });
sql("UPDATE erp.orders SET status = 'partially_fulfilled' WHERE id = $order");
ok(poll_until('both changes through', sub {
	sql("SELECT total FROM erp.orders WHERE id = $order") eq '12000.00'
	  && (deal($deal)->{order_status} // '') eq 'partially_fulfilled'
	  && (deal($deal)->{order_value} // '') =~ /^12000(\.0+)?$/ }),
	'sales\' amount reached the order, the ERP\'s status and the new value reached the deal');
is(deal($deal)->{amount}, '12000', 'sales\' amount stands in HubSpot');

# no loop: once the pulls have read past every write of the deal, the deal
# was handed over twice (won, then the amount), and erpcrm's own writes
# were seen as echoes
my $writes = sub { scalar grep { $_->{path} =~ m{/deals/batch/(update|upsert)} }
	@{ ErpcrmTest::mock_get('/_mock/requests')->{results} } };
ok(wait_synced($node), 'nothing left to deliver');
my $settled = sql('SELECT now()');
ok(poll_until('the pulls past the last write',
	sub { sql("SELECT caught_up_to > '$settled' FROM erpcrm.subscriptions WHERE subscription = 'won_deals'") eq 't' }),
	'the subscription read past the last write');
my $before = $writes->();
is(sql("SELECT count(*) FROM erpcrm.inbox i JOIN erpcrm.subscription s USING (subscription_id)
	WHERE s.name = 'won_deals' AND i.hubspot_id = '$deal'"), '2',
	'the deal was handed over twice: won, then its amount');
is(sql("SELECT string_agg(array_to_string(changed, ','), ' / ' ORDER BY change_id) FROM erpcrm.inbox
	WHERE hubspot_id = '$deal'"), 'amount,dealname,dealstage,pipeline / amount',
	'with what HubSpot owns that changed');
cmp_ok(sql("SELECT echoes FROM erpcrm.subscriptions WHERE subscription = 'won_deals'"), '>', 0,
	'erpcrm\'s writes of the order came back only as echoes');
sql("SELECT erpcrm.retry_now()");
my $later = sql('SELECT now()');
ok(poll_until('another round of pulls',
	sub { sql("SELECT caught_up_to > '$later' FROM erpcrm.subscriptions WHERE subscription = 'won_deals'") eq 't' }),
	'another round of pulls');
is($writes->(), $before, 'and no further write to HubSpot: no ping-pong');
is(sql("SELECT count(*) FROM erp.orders"), '1', 'one order');

# --- companies: made in HubSpot -> prospects, matched by NIP or domain
ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => 'Alfa (oddział)', nip => '5260001246' } });
ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => 'Delta', domain => 'delta.pl' } });
ErpcrmTest::mock_post('/_mock/objects/companies', { properties => { name => 'Alfa web', domain => 'ALFA.pl' } });
ok(poll_until('three prospects', sub { sql('SELECT count(*) FROM erp.prospects') eq '3' }),
	'the companies sales made are prospects');
is(sql("SELECT string_agg(name || '=' || COALESCE(customer_id::text, 'new'), ', ' ORDER BY name) FROM erp.prospects"),
	'Alfa (oddział)=1, Alfa web=1, Delta=new', 'matched to the ERP\'s customer by NIP or by domain, or new');
is(sql("SELECT count(*) FROM erpcrm.inbox i JOIN erpcrm.subscription s USING (subscription_id)
	WHERE s.name = 'hubspot_companies' AND i.properties ->> 'erp_id' IS NOT NULL"), '0',
	'the ERP\'s own company never came back as a change');
is(sql("SELECT count(*) FROM erpcrm.parked_changes"), '0', 'no change was parked');

done_testing();

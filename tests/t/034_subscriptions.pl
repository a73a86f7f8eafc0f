# The way back (issue 14): a subscription pulls HubSpot's changes through the
# search API and hands each to an ERP function, run as the role that
# subscribed.  A deal moved to won by hand becomes an ERP order; a handler
# error parks its change, the others go on, and requeue hands it over
# again; a crash while the handler runs neither loses nor repeats a change;
# a paused subscription resumes where it stopped.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use ErpcrmTest;

# HubSpot finds a change in search only a little after it is made
start_mock(config => { %{ ErpcrmTest::default_mock_config() },
	search_index_delay_ms => 300 });
my $node = erpcrm_node('subscriptions', conf => q{
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '1s'
restart_after_crash = on
});
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

# A salesperson's edits in HubSpot's screens (the mock's control API)
sub move_deal
{
	my ($id, %props) = @_;
	ErpcrmTest::mock_patch("/_mock/objects/deals/$id", { properties => \%props });
}

# The ERP's side: orders, and the handler the integration role owns
sql(q{
CREATE ROLE erp_integration LOGIN IN ROLE erpcrm_admin;
CREATE TABLE erp.orders (id serial PRIMARY KEY, hubspot_deal_id text UNIQUE NOT NULL,
	name text, amount numeric, taken_by text);
CREATE TABLE erp.handler_calls (hubspot_id text, modified_at timestamptz);
CREATE TABLE erp.gate (open boolean NOT NULL);
INSERT INTO erp.gate VALUES (true);
GRANT USAGE ON SCHEMA erp TO erp_integration;
GRANT SELECT, INSERT, UPDATE ON erp.orders, erp.handler_calls TO erp_integration;
GRANT SELECT ON erp.gate TO erp_integration;
GRANT USAGE ON SEQUENCE erp.orders_id_seq TO erp_integration;
CREATE FUNCTION erp.deal_won(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
	INSERT INTO erp.handler_calls VALUES (c.hubspot_id, c.modified_at);
	IF c.properties ->> 'dealname' LIKE 'Broken%' THEN
		RAISE EXCEPTION 'deal % has no customer in the ERP', c.hubspot_id
			USING HINT = 'Create the customer, then requeue the change.';
	END IF;
	-- the crash test holds the handler here
	WHILE c.properties ->> 'dealname' = 'Slow' AND NOT (SELECT open FROM erp.gate) LOOP
		PERFORM pg_sleep(0.05);
	END LOOP;
	INSERT INTO erp.orders (hubspot_deal_id, name, amount, taken_by)
	VALUES (c.hubspot_id, c.properties ->> 'dealname', (c.properties ->> 'amount')::numeric, current_user)
	ON CONFLICT (hubspot_deal_id) DO UPDATE SET name = excluded.name, amount = excluded.amount;
END
$$;
ALTER FUNCTION erp.deal_won(erpcrm.hubspot_change) OWNER TO erp_integration;
});
$node->safe_psql('postgres', q{
SET ROLE erp_integration;
SELECT erpcrm.subscribe('won_deals', 'deals', '{dealname,amount,dealstage}',
	'[{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]',
	'erp.deal_won(erpcrm.hubspot_change)');
});

sub orders { return sql("SELECT string_agg(name || ':' || amount, ',' ORDER BY name) FROM erp.orders"); }

# --- a deal moved to won by hand becomes an order; one still open does not
my $d1 = hs_new_deal('Printers for Acme', 'appointmentscheduled', '1200');
my $d2 = hs_new_deal('Paper for Globex', 'qualifiedtobuy', '80');
move_deal($d1, dealstage => 'closedwon');
ok(poll_until('the won deal as an order', sub { orders() eq 'Printers for Acme:1200' }),
	'the deal moved to won became an ERP order');
is(sql("SELECT hubspot_deal_id || ' ' || taken_by FROM erp.orders"), "$d1 erp_integration",
	'the order carries the deal\'s HubSpot id, and the handler ran as the role that subscribed');
is(sql("SELECT count(*) FROM erpcrm.inbox WHERE hubspot_id = '$d2'"), '0', 'the open deal was not handed over');

# --- a handler error parks that change; the others go on
my $d3 = hs_new_deal('Broken deal', 'closedwon', '10');
my $d4 = hs_new_deal('Toner for Initech', 'closedwon', '300');
ok(poll_until('the good deal after the broken one', sub { orders() =~ /Toner for Initech:300/ }),
	'a change after the one the handler refused is handed over');
is(sql("SELECT hubspot_id || ' ' || error_sqlstate || ' ' || error_message || ' / ' || error_hint FROM erpcrm.parked_changes"),
	"$d3 P0001 deal $d3 has no customer in the ERP / Create the customer, then requeue the change.",
	'the refused change is parked, with the SQL error, in erpcrm.parked_changes');
is(sql("SELECT parked FROM erpcrm.subscriptions"), '1', 'erpcrm.subscriptions counts it');
sql(q{UPDATE erpcrm.inbox SET properties = properties || '{"dealname": "Mended deal"}' WHERE state = 'parked'});
is(sql("SELECT erpcrm.requeue_parked('won_deals')"), '1', 'requeue_parked() hands the parked change over again');
ok(poll_until('the requeued change', sub { orders() =~ /Mended deal:10/ }), 'the requeued change became an order');
is(sql("SELECT count(*) FROM erpcrm.parked_changes"), '0', 'nothing is parked any more');

# --- a crash while the handler runs: the change is read again, handed over once
sql("UPDATE erp.gate SET open = false");
my $d5 = hs_new_deal('Slow', 'closedwon', '55');
my $d6 = hs_new_deal('After the slow one', 'closedwon', '66');
ok(poll_until('the handler waiting in the slow change',
	sub { sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm worker' AND wait_event = 'PgSleep'") eq '1' }),
	'the worker is inside the handler');
$node->stop('immediate');
$node->start;
sql("UPDATE erp.gate SET open = true");
ok(poll_until('both changes after the crash', sub { orders() =~ /Slow:55/ && orders() =~ /After the slow one:66/ }),
	'after the crash both changes were handed over');
is(sql("SELECT count(*) FROM erp.handler_calls WHERE hubspot_id IN ('$d5', '$d6')"), '2',
	'each was handled once: the handler\'s work and the cursor commit together');
is(sql("SELECT count(*) FROM erpcrm.inbox WHERE hubspot_id IN ('$d5', '$d6')"), '2', 'one inbox row each');
is(sql("SELECT count(*) FROM erp.orders"), '5', 'five orders, no duplicate');

# --- pause and resume: changes made meanwhile arrive after resume
sql("SELECT erpcrm.pause_subscription('won_deals')");
is(sql("SELECT paused FROM erpcrm.subscriptions"), 't', 'erpcrm.subscriptions shows the pause');
my $d7 = hs_new_deal('Won while paused', 'closedwon', '7');
sql("SELECT erpcrm.resume_subscription('won_deals')");
ok(poll_until('the change made while paused', sub { orders() =~ /Won while paused:7/ }),
	'a change made while paused is handed over after resume');

# --- monitoring
is(sql(q{SELECT lag < interval '1 minute' AND last_pull IS NOT NULL AND calls_last_hour > 0
	AND share_of_calls > 0 AND share_of_budget >= 0 AND problem IS NULL FROM erpcrm.subscriptions}), 't',
	'erpcrm.subscriptions: lag, last pull, calls and share of the budget');
is(sql("SELECT handled || ' handled, ' || pending || ' pending, ' || parked || ' parked' FROM erpcrm.subscriptions"),
	'6 handled, 0 pending, 0 parked', 'erpcrm.subscriptions counts the changes handled');
is(sql("SELECT count(*) > 0 FROM erpcrm.api_log WHERE path = '/crm/v3/objects/deals/search' AND http_status = 200"), 't',
	'the search calls are in erpcrm.api_log');
my $searches = grep { $_->{path} =~ m{/search$} && ($_->{status} // 0) == 429 }
	@{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
is($searches, 0, 'no search was refused by HubSpot\'s rate limit');

# --- a pull that fails is the subscription's problem; delivery goes on
ErpcrmTest::mock_post('/_mock/faults', { force_status => { count => 1000, status => 403,
	path_contains => '/search', message => 'This app hasn\'t been granted all required scopes: crm.objects.deals.read' } });
ok(poll_until('the refused pull in the view', sub { sql("SELECT problem FROM erpcrm.subscriptions") =~ /403/ }),
	'a refused search is shown as the subscription\'s problem');
sql("INSERT INTO erp.customers (id, name) VALUES (1, 'Acme')");
ok(wait_synced($node), 'delivery goes on meanwhile');
ErpcrmTest::mock_post('/_mock/faults', {});
ok(poll_until('the problem gone', sub { sql("SELECT problem IS NULL FROM erpcrm.subscriptions") eq 't' }),
	'the problem clears with the next good pull');

is(sql("SELECT erpcrm.unsubscribe('won_deals')"), 't', 'unsubscribe');
is(sql("SELECT count(*) FROM erpcrm.inbox"), '0', 'its inbox goes with it');

done_testing();

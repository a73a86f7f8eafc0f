# Hostile and clumsy handlers (red team, 1.3): a handler's error parks its
# change and the subscription goes on, whatever the error is.  PL/pgSQL's
# WHEN OTHERS does not catch query_canceled or assert_failure: a handler
# raising one of them must not stop its subscription at that page for ever
# (nor the others); a handler that loops is cancelled after
# erpcrm.handler_timeout and its change parked.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock(config => { %{ ErpcrmTest::default_mock_config() },
	search_index_delay_ms => 100 });
my $node = erpcrm_node('hostile_handlers', conf => q{
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '500ms'
erpcrm.handler_timeout = '2s'
});
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }


sql(q{
CREATE ROLE erp_hostile LOGIN IN ROLE erpcrm_admin;
CREATE TABLE erp.seen (sub text, name text, who text);
GRANT USAGE ON SCHEMA erp TO erp_hostile;
GRANT INSERT ON erp.seen TO erp_hostile;
CREATE FUNCTION erp.odd_errors(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
	IF c.properties ->> 'dealname' = 'Cancel me' THEN
		RAISE EXCEPTION 'pretending to be cancelled' USING ERRCODE = 'query_canceled';
	END IF;
	WHILE c.properties ->> 'dealname' = 'Loop me' LOOP
		PERFORM pg_sleep(0.05);
	END LOOP;
	ASSERT c.properties ->> 'dealname' <> 'Assert me', 'an assertion of the handler';
	INSERT INTO erp.seen VALUES (c.subscription, c.properties ->> 'dealname', current_user);
END
$$;
ALTER FUNCTION erp.odd_errors(erpcrm.hubspot_change) OWNER TO erp_hostile;
CREATE FUNCTION erp.polite(c erpcrm.hubspot_change) RETURNS void
LANGUAGE sql SET search_path = pg_catalog
BEGIN ATOMIC
	INSERT INTO erp.seen VALUES (c.subscription, c.properties ->> 'dealname', current_user);
END;
ALTER FUNCTION erp.polite(erpcrm.hubspot_change) OWNER TO erp_hostile;
});
$node->safe_psql('postgres', q{
SET ROLE erp_hostile;
SELECT erpcrm.subscribe('odd', 'deals', '{dealname}', NULL, 'erp.odd_errors(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('polite', 'deals', '{dealname}', NULL, 'erp.polite(erpcrm.hubspot_change)');
});

sub seen { return sql("SELECT string_agg(sub || ':' || name, ',' ORDER BY sub, name) FROM erp.seen"); }

my $cancel = hs_new_deal('Cancel me');
my $assert = hs_new_deal('Assert me');
my $loop = hs_new_deal('Loop me');
my $after = hs_new_deal('After them');
ok(poll_until('the deal after the odd errors', sub { seen() =~ /odd:After them/ }),
	'a change after ones whose handler raised query_canceled and assert_failure, or looped, is handed over');
ok(poll_until('the polite subscription', sub { seen() =~ /polite:After them/ }),
	'the other subscription got all three');
is(sql("SELECT string_agg(hubspot_id || ' ' || error_sqlstate, ',' ORDER BY hubspot_id::bigint)
		  FROM erpcrm.parked_changes WHERE subscription = 'odd'"),
	join(',', "$cancel 57014", "$assert P0004", "$loop 57014"),
	'the three changes are parked with their SQL error (the loop cancelled by erpcrm.handler_timeout)');
like(sql("SELECT error_message FROM erpcrm.parked_changes WHERE hubspot_id = '$loop'"), qr/statement timeout/,
	'the looping handler was cancelled as a statement past its timeout');
is(sql("SELECT count(*) FROM erpcrm.subscriptions WHERE problem IS NOT NULL"), '0',
	'no subscription reports a failing pull');
is(sql("SELECT string_agg(DISTINCT who, ',') FROM erp.seen"), 'erp_hostile',
	'handlers ran as the role that subscribed');

# requeued, they are parked again: the worker's hand-over of requeued
# changes (outside any one pull) is not stopped by them either
sql("SELECT erpcrm.requeue_parked('odd')");
my $later = hs_new_deal('Later');
ok(poll_until('a deal after the requeue', sub { seen() =~ /odd:Later/ && seen() =~ /polite:Later/ }),
	'changes made after the requeue are handed over');
ok(poll_until('requeued changes parked again',
	sub { sql("SELECT count(*) FROM erpcrm.inbox WHERE state = 'parked' AND attempts = 2") eq '3' }),
	'the three requeued changes were parked again, once more each');

done_testing();

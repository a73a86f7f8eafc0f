# A handler that catches the cancel of erpcrm.handler_timeout and goes on
# (a loop with EXCEPTION WHEN query_canceled) would hold its database's
# worker for ever.  The launcher stops a worker whose handler runs past the
# timeout and a grace (10 s); the worker starts again at once and parks the
# change, with a message that says why, instead of handing it over again.
# Meanwhile the other databases' workers go on, and after it the other
# changes of the same database are handed over.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ErpcrmTest;

start_mock(config => { %{ ErpcrmTest::default_mock_config() },
	search_index_delay_ms => 100 });
my $node = erpcrm_node('stuck_handler', conf => q{
erpcrm.database = ''
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '500ms'
erpcrm.handler_timeout = '1s'
});

# postgres: a stubborn subscription and a polite one; north: a polite one
my $handlers = q{
CREATE SCHEMA erp;
CREATE TABLE erp.seen (sub text, name text, at timestamptz DEFAULT clock_timestamp());
CREATE SEQUENCE erp.stubborn_runs;
CREATE FUNCTION erp.polite(c erpcrm.hubspot_change) RETURNS void
LANGUAGE sql SET search_path = pg_catalog
BEGIN ATOMIC
	INSERT INTO erp.seen (sub, name) VALUES (c.subscription, c.properties ->> 'dealname');
END;
CREATE FUNCTION erp.stubborn(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
	IF c.properties ->> 'dealname' = 'Stubborn' THEN
		PERFORM nextval('erp.stubborn_runs');	/* not rolled back */
		LOOP
			BEGIN
				PERFORM pg_sleep(0.05);
			EXCEPTION WHEN query_canceled THEN
				NULL;			/* and on it goes */
			END;
		END LOOP;
	END IF;
	INSERT INTO erp.seen (sub, name) VALUES (c.subscription, c.properties ->> 'dealname');
END
$$;
};
$node->safe_psql('postgres', 'CREATE EXTENSION erpcrm');
$node->safe_psql('postgres', $handlers);
$node->safe_psql('postgres', q{
SELECT erpcrm.subscribe('stubborn', 'deals', '{dealname}', NULL, 'erp.stubborn(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('polite', 'deals', '{dealname}', NULL, 'erp.polite(erpcrm.hubspot_change)');
});
$node->safe_psql('postgres', 'CREATE DATABASE north');
$node->safe_psql('north', 'CREATE EXTENSION erpcrm');
$node->safe_psql('north', $handlers);
$node->safe_psql('north', q{
SELECT erpcrm.subscribe('north', 'deals', '{dealname}', NULL, 'erp.polite(erpcrm.hubspot_change)');
});

sub seen
{
	my ($db) = @_;
	return $node->safe_psql($db, "SELECT string_agg(sub || ':' || name, ',' ORDER BY sub, name) FROM erp.seen");
}
sub runs
{
	return $node->safe_psql('postgres',
		'SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM erp.stubborn_runs');
}
sub worker_of
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'erpcrm worker' AND datname = '$db'");
}

ok(poll_until('both workers', sub { worker_of('postgres') ne '' && worker_of('north') ne '' }),
	'a worker per database');
my $pid = worker_of('postgres');
my $log_offset = -s $node->logfile;

my $stubborn = hs_new_deal('Stubborn');
sleep 1;
my $after = hs_new_deal('After');
my $t0 = time();
ok(poll_until('the stubborn handler to run', sub {
	runs() eq '1' }),
	'the stubborn handler runs, and catches its cancel');

# the other database goes on while this one's worker is held
ok(poll_until('north to get both deals', sub { seen('north') eq 'north:After,north:Stubborn' }),
	'the other database gets both changes while the stubborn handler holds its own worker');
my $t_north = time() - $t0;
is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.inbox WHERE state = 'parked'"), '0',
	'not parked yet: the handler is within handler_timeout and the grace')
  if $t_north < 10;

# the launcher stops the worker, the next one parks the change
ok(poll_until('the change to be parked', sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.parked_changes WHERE hubspot_id = '$stubborn'") eq '1' }, 90),
	'the change of the stubborn handler is parked');
my $t_parked = time() - $t0;
cmp_ok($t_parked, '>=', 10, "not before handler_timeout and the grace (after ${t_parked}s)");
isnt(worker_of('postgres'), $pid, 'the worker was stopped and started again');
my ($sqlstate, $message, $hint) = split /\|/, $node->safe_psql('postgres', qq{
SELECT error_sqlstate, error_message, error_hint FROM erpcrm.parked_changes
 WHERE subscription = 'stubborn' AND hubspot_id = '$stubborn'});
is($sqlstate, '57014', 'as a cancel (57014)');
like($message, qr/the handler ran past erpcrm\.handler_timeout \(1000 ms\) and did not stop when cancelled/,
	'the parked change says why');
like($hint, qr/must not catch query_canceled.*requeue_change/, 'and what to do');
ok($node->log_contains(qr/erpcrm launcher: stopping the worker of database "postgres": the handler of change \d+ ran past erpcrm.handler_timeout/, $log_offset),
	'the launcher says so in the log');

# the other changes of this database are handed over: the same one to the
# polite subscription, the next one to both
ok(poll_until('the changes after it', sub {
	seen('postgres') eq 'polite:After,polite:Stubborn,stubborn:After' }),
	'the other changes, of both subscriptions, are handed over after it');
my $later = hs_new_deal('Later');
ok(poll_until('a later change', sub { seen('postgres') =~ /stubborn:Later/ }),
	'the stubborn subscription goes on with later changes');
is($node->safe_psql('postgres', q{
SELECT string_agg(subscription || ':' || pending || '/' || parked, ',' ORDER BY subscription)
  FROM erpcrm.subscriptions}), 'polite:0/0,stubborn:0/1', 'one change parked, none pending');

# it is not handed over again (the sequence counts every run)
sleep 2;
is(runs(), '1',
	'the stubborn handler ran once for the change: it was not handed over again');
is($node->safe_psql('north', "SELECT count(*) FROM erpcrm.parked_changes"), '0',
	'nothing parked in the other database');

done_testing();

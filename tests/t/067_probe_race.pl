# The launcher's race with CREATE EXTENSION, made to happen on demand: the
# worker the launcher starts to look at a new database finds no erpcrm,
# and CREATE EXTENSION commits before that worker has left and said so.
# The launcher must look again at once, not in 10 minutes.  A test-only
# pause (erpcrm.test_probe_pause) holds the worker between its look and its
# leaving, where the race falls.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('probe_race', conf => q{
erpcrm.database = ''
erpcrm.test_probe_pause = '3s'
});

sub paused_in
{
	my ($db) = @_;
	return $node->safe_psql('postgres', qq{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'erpcrm worker' AND datname = '$db'
   AND query LIKE '%erpcrm.test_probe_pause%'});
}

$node->safe_psql('postgres', 'CREATE DATABASE late');
ok(poll_until('the look at "late"', sub { paused_in('late') eq '1' }, 30),
	'the launcher\'s worker found no erpcrm in the new database, and pauses before it leaves');
# CREATE EXTENSION commits while that worker is about to say "no erpcrm"
$node->safe_psql('late', 'CREATE EXTENSION erpcrm');
is(paused_in('late'), '1', 'CREATE EXTENSION committed while the worker was still there');
ok(poll_until('the worker that found no erpcrm to leave', sub { paused_in('late') eq '0' }, 30),
	'it leaves');
ok(poll_until('a worker serving "late"', sub {
	$node->safe_psql('late', q{SELECT pid IS NOT NULL AND state <> 'stopped' FROM erpcrm.worker}) eq 't' }, 30),
	'the launcher looks again at once, and the database gets its worker (not 10 minutes later)');

# it delivers
$node->safe_psql('late', q{
CREATE SCHEMA erp;
CREATE TABLE erp.customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE VIEW erp.hs_companies AS SELECT id AS erp_id, name FROM erp.customers;
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
INSERT INTO erp.customers VALUES (1, 'Late Sp. z o.o.');
});
is($node->safe_psql('late', "SELECT erpcrm.wait_for_sync('60 seconds')"), 't', 'and it delivers');

# without the race: a database without erpcrm is looked at and left alone
$node->safe_psql('postgres', 'CREATE DATABASE never');
ok(poll_until('the look at "never"', sub { paused_in('never') eq '1' }, 30), 'a database without erpcrm is looked at');
ok(poll_until('it is left', sub { paused_in('never') eq '0' }, 30), 'and left');
sleep 2;
is($node->safe_psql('postgres', q{
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'erpcrm worker' AND datname = 'never'}),
	'0', 'and not looked at again');

done_testing();

# The worker does per batch only the work a batch needs, and per wake-up
# only the work a commit can need, as a user can check in
# pg_stat_statements (pg_stat_statements.track = all shows the statements
# the worker runs inside erpcrm's functions too):
#
# - a backfill's rounds fold the outbox, look for subscriptions, hand over
#   and prune the inbox only when a commit woke the worker (or a pull is due
#   by the clock), not after every batch;
# - a mapping with nothing due is not claimed: its due index is looked at
#   first (a claim that finds nothing costs more than that look);
# - the statements run at every batch are planned once and kept (the plan
#   cache's "plans" stays far below "calls").
#
# And nothing is lost on the way: every key is delivered, also keys
# committed while the backfill runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('round_work', conf => qq{
shared_preload_libraries = 'erpcrm,pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.track_planning = on
erpcrm.batch_size = 100
});

$node->safe_psql('postgres', q{
CREATE EXTENSION erpcrm;
CREATE EXTENSION pg_stat_statements;
CREATE TABLE public.busy (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.quiet (id integer PRIMARY KEY, name text NOT NULL);
CREATE VIEW public.hs_busy AS SELECT id AS erp_id, name FROM public.busy;
CREATE VIEW public.hs_quiet AS SELECT id AS erp_id, name FROM public.quiet;
SELECT erpcrm.map('busy', 'public.hs_busy', 'companies');
SELECT erpcrm.map('quiet', 'public.hs_quiet', 'products');
SELECT erpcrm.watch('busy', 'public.busy', 'id');
SELECT erpcrm.watch('quiet', 'public.quiet', 'id');
INSERT INTO public.quiet SELECT g, 'Towar ' || g FROM generate_series(1, 50) g;
});
ok(wait_synced($node, 60), 'the quiet mapping is delivered');

# calls and plans of the worker's statements that match a pattern
sub stmt
{
	my ($like) = @_;
	my $r = $node->safe_psql('postgres', qq{
SELECT COALESCE(sum(calls), 0) || ' ' || COALESCE(sum(plans), 0)
  FROM pg_stat_statements WHERE query LIKE '$like'});
	return split / /, $r;
}

sub reset_stats
{
	$node->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
}

# --- the look at a mapping's due index plans well whatever the mapping:
# generic (it is kept), with most keys pending (as in a backfill) and
# the queue analyzed, it is one descent of the due index, never a read of
# the whole table (which a look for "any key due" planned as a sequential
# scan that for a mapping with nothing due reads every row)
$node->safe_psql('postgres', q{
SELECT erpcrm.pause();
INSERT INTO public.busy SELECT g, 'Firma ' || g FROM generate_series(100001, 104000) g;
});
ok(poll_until('the keys pending', sub {
	$node->safe_psql('postgres', "SELECT pending FROM erpcrm.status WHERE mapping = 'busy'") eq '4000' }, 60),
	'4,000 keys of busy pending');
my $plan = $node->safe_psql('postgres', q{
ANALYZE erpcrm.sync_key, erpcrm.sync_queue;
SET plan_cache_mode = force_generic_plan;
PREPARE due(integer) AS
SELECT COALESCE((SELECT s.next_attempt_at <= pg_catalog.now()
  FROM erpcrm.sync_queue s WHERE s.mapping_id = $1 AND s.state = 'pending'
   AND s.next_attempt_at IS NOT NULL
 ORDER BY s.next_attempt_at LIMIT 1), false);
SELECT mapping_id AS quiet FROM erpcrm.mapping WHERE name = 'quiet' \gset
EXPLAIN (COSTS OFF) EXECUTE due(:quiet);
});
like($plan, qr/Index (Only )?Scan using sync_queue_due/, 'the look for keys due reads the due index');
unlike($plan, qr/Seq Scan|Sort/, 'and neither reads the queue whole nor sorts it');
# gone before they reached HubSpot: they leave no trace
$node->safe_psql('postgres', q{
DELETE FROM public.busy WHERE id > 100000;
SELECT erpcrm.resume();
});
ok(wait_synced($node, 120), 'resumed, the worker has nothing left to do');

# --- a backfill of 3,000 keys: 30 batches
reset_stats();
$node->safe_psql('postgres',
	"INSERT INTO public.busy SELECT g, 'Firma ' || g FROM generate_series(1, 3000) g");
# a few commits while it runs: folded on the way, not lost
for my $i (1 .. 5)
{
	$node->safe_psql('postgres', "INSERT INTO public.busy VALUES (10000 + $i, 'Nowa $i')");
	usleep(20_000);
}
ok(wait_synced($node, 120), 'the backfill is delivered');
is($node->safe_psql('postgres',
		"SELECT synced FROM erpcrm.status WHERE mapping = 'busy'"),
	'3005', 'every key, also those committed during the backfill, is synced');

my ($done, $done_plans) = stmt('SELECT erpcrm._done(%');
my ($folds) = stmt('SELECT erpcrm._fold()');
my ($hand_over) = stmt('SELECT erpcrm._hand_over_pending()');
my ($prune) = stmt('SELECT erpcrm._prune_inbox(%');
my ($claims) = stmt('SELECT erp_id, hubspot_id FROM erpcrm._claim(%');
note("backfill: $done batches recorded ($done_plans plans), $claims claims, "
	  . "$folds folds, $hand_over hand-overs, $prune prunes");
cmp_ok($done, '>=', 30, 'the backfill took at least 30 batches');
# one fold per wake-up: the first commit and the five during the backfill,
# and a cycle that the poll started
cmp_ok($folds, '<=', 10, 'the outbox is folded when a commit came, not after every batch');
cmp_ok($hand_over, '<=', 10, 'the inbox is handed over when a commit came or a pull is due');
cmp_ok($prune, '<=', 10, 'the inbox is pruned when a commit came or a pull is due');
# each batch of busy claimed once; quiet, with nothing due, not at all
cmp_ok($claims, '<=', $done + 10, 'a mapping with nothing due is not claimed round after round');
cmp_ok($done_plans, '<=', 10, 'recording a batch is planned once and kept, not at every batch');

# --- single commits, each delivered before the next: one wake-up each
reset_stats();
for my $i (1 .. 10)
{
	$node->safe_psql('postgres', "UPDATE public.busy SET name = 'Zmiana $i' WHERE id = $i");
	ok(wait_synced($node, 30), "commit $i delivered") or last;
}
($claims) = stmt('SELECT erp_id, hubspot_id FROM erpcrm._claim(%');
($folds) = stmt('SELECT erpcrm._fold()');
my ($probes) = stmt('SELECT COALESCE((SELECT s.next_attempt_at <= pg_catalog.now() FROM erpcrm.sync_queue s%');
note("10 single commits: $claims claims, $folds folds, $probes looks at the due index");
cmp_ok($claims, '<=', 15, 'a commit of one key claims its mapping, not every mapping, round after round');
cmp_ok($folds, '<=', 15, 'a commit of one key is folded once');
state_ok($node, 'HubSpot holds what the views say',
	mappings => [
		{ name => 'busy', view => 'public.hs_busy', type => 'companies', archive => 0 },
		{ name => 'quiet', view => 'public.hs_quiet', type => 'products', archive => 0 },
	],
	associations => []);

done_testing();

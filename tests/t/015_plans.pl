# Flat at scale: every statement the worker runs per batch and per cycle
# (claim, read, done, error, association state, links and dependents, fold,
# the next-due query, recovery, keys given up or given back) reads a
# mapping's state (the view erpcrm.sync_state over the tables sync_key and
# sync_queue) through an index, bounded by the batch, whatever ANALYZE last
# saw.  auto_explain logs the plan of each statement the worker runs, nested
# ones included; no plan may scan those tables sequentially, hash
# or merge-join it, sort its rows, or find a batch's keys by erp_id as a later
# column of an index whose earlier columns only the mapping bounds.
# The checker itself is shown to catch each of these on plans made bad on
# purpose.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use ErpcrmTest;

my $keys = 60_000;

start_mock();
my $node = erpcrm_node('plans', conf => q{
shared_preload_libraries = 'erpcrm, auto_explain'
auto_explain.log_min_duration = -1
auto_explain.log_nested_statements = on
auto_explain.log_format = json
autovacuum = off
log_line_prefix = '%m [%p] <%b> '
});
load_erp($node);

# A mapping with a long history: many keys synced long ago, in a table
# never analyzed.
$node->safe_psql('postgres', qq{
SELECT erpcrm.pause();
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(1, $keys) g;
SELECT erpcrm._fold();
UPDATE erpcrm.sync_state SET state = 'synced',
	last_synced_at = now() - interval '30 days', dirty_since = NULL, sent_seq = change_seq;
ALTER SYSTEM SET auto_explain.log_min_duration = 0;
SELECT pg_reload_conf();
});

my $logpos = 0;

# The tables behind erpcrm.sync_state, and the columns of their indexes.
my $state_rel = qr/^sync_(?:key|queue)$/;
my %index_columns;
for my $row (split /\n/, $node->safe_psql('postgres', q{
SELECT c.relname, string_agg(a.attname, ',' ORDER BY k.n)
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid IN ('erpcrm.sync_key'::regclass, 'erpcrm.sync_queue'::regclass)
 GROUP BY c.relname}))
{
	my ($name, $cols) = split /\|/, $row;
	$index_columns{$name} = [ split /,/, $cols ];
}
is_deeply([ @index_columns{qw(sync_key_pkey sync_queue_pkey sync_queue_due)} ],
	[ [ 'mapping_id', 'erp_id' ], [ 'mapping_id', 'erp_id' ], [ 'mapping_id', 'next_attempt_at', 'erp_id' ] ],
	'the columns of the indexes of sync_key and sync_queue are known');

# Plans logged since the last look by the worker (or another backend type):
# [query text, plan tree].
sub worker_plans
{
	my ($backend) = @_;
	$backend //= 'erpcrm worker';
	my $log = slurp_file($node->logfile, $logpos);
	$logpos += length($log);
	my @plans;
	for my $entry (split /\n(?=\d{4}-\d\d-\d\d )/, $log)
	{
		next unless $entry =~ /<\Q$backend\E> LOG:  duration: [0-9.]+ ms  plan:\n(.*)\z/s;
		my $doc = eval { decode_json($1) };
		next unless $doc;
		push @plans, [ $doc->{'Query Text'}, $doc->{Plan} ];
	}
	return @plans;
}

# What is wrong with a plan: a mapping's state read whole, hashed, merged or sorted.
sub plan_faults
{
	my ($node_, $under) = @_;
	my @faults;
	my $type = $node_->{'Node Type'};
	my $rel = $node_->{'Relation Name'} // '';
	push @faults, "$type on $rel"
	  if $rel =~ $state_rel && $type =~ /Seq Scan|Sample Scan|Tid Range/;
	# an index scan of the whole mapping that picks the batch's keys out
	# with a filter: what the planner chooses while the tables have no
	# statistics, unless the key is in the index condition
	my $cond = $node_->{'Index Cond'} // $node_->{'Recheck Cond'} // '';
	push @faults, "$type on $rel by " . ($node_->{'Index Name'} // 'bitmap')
	  . " with erp_id in its filter, not its index condition"
	  if $rel =~ $state_rel
	  && $type =~ /Index Scan|Index Only Scan|Bitmap Heap Scan/
	  && ($node_->{Filter} // '') =~ /\berp_id\b/
	  && $cond !~ /\berp_id\b/;
	# the same, with erp_id in the index condition but as a later column of
	# an index whose earlier columns are not all bound by equality (the due
	# index: mapping_id, next_attempt_at, erp_id): the scan reads the
	# mapping's whole part of the index and filters the keys inside it
	my $unbound = $rel =~ $state_rel && $cond =~ /\berp_id\b/
	  ? unbound_before_erp_id($node_->{'Index Name'}, $cond) : undef;
	push @faults, "$type on $rel by $node_->{'Index Name'} with erp_id a later column"
	  . " of its index condition ($unbound before it is not bound)"
	  if defined $unbound;
	for my $child (@{ $node_->{Plans} // [] })
	{
		push @faults, plan_faults($child);
	}
	if ($type =~ /^(Hash|Hash Join|Merge Join|Sort|Incremental Sort|Materialize)$/
		&& reads_sync_state($node_))
	{
		push @faults, "$type over a mapping's state";
	}
	return @faults;
}

# The first column before erp_id in an index that an index condition does
# not bind by equality (undef: none, or erp_id is not a column of the index).
sub unbound_before_erp_id
{
	my ($index, $cond) = @_;
	my $cols = $index_columns{ $index // '' } or return undef;
	for my $col (@$cols)
	{
		return undef if $col eq 'erp_id';
		return $col unless $cond =~ /(?:^|[\s(.])\Q$col\E = /;
	}
	return undef;
}

sub updates_sync_state
{
	my ($n) = @_;
	return 1 if $n->{'Node Type'} eq 'ModifyTable' && ($n->{'Relation Name'} // '') =~ $state_rel;
	return scalar grep { updates_sync_state($_) } @{ $n->{Plans} // [] };
}

sub reads_sync_state
{
	my ($n) = @_;
	return 1 if ($n->{'Relation Name'} // '') =~ $state_rel;
	for my $child (@{ $n->{Plans} // [] })
	{
		# a subplan is a lookup of its own (e.g. an association target)
		next if ($child->{'Parent Relationship'} // '') eq 'SubPlan';
		return 1 if reads_sync_state($child);
	}
	return 0;
}

sub check_plans
{
	my ($phase, $what) = @_;
	my @plans = worker_plans();
	my (%seen, @bad, @nested);
	# statements inside a function are logged before the call itself
	for my $p (@plans)
	{
		my ($text, $plan) = @$p;
		my $label =
		    $text =~ /^SELECT .*\berpcrm\.(_[a-z_]+)\(/s ? $1
		  : $text =~ /^SELECT c\.paused/ ? 'next due'
		  : $text =~ /FROM erp\.hs_companies AS v/ ? 'read'
		  : undef;
		push @nested, $p;
		# the dependents of a key whose HubSpot id changed (nested in _done)
		$seen{dependents}++ if $text =~ /\br\.assoc_state\b/;
		next unless defined $label;
		for my $q (@nested)
		{
			$seen{$label}++;
			my @f = plan_faults($q->[1]);
			push @bad, "$label: " . join(', ', @f) . "\n$q->[0]" if @f;
		}
		@nested = ();
	}
	ok(!@bad, "$phase: no statement reads a mapping's state whole")
	  or diag(join("\n---\n", @bad[ 0 .. ($#bad < 4 ? $#bad : 4) ]));
	for my $w (@$what)
	{
		ok((grep { index($_, $w) == 0 } keys %seen), "$phase: the plan of $w was checked")
		  or diag('plans seen: ' . join(', ', sort keys %seen));
	}
}

# A backfill slice: 1,500 keys changed in the ERP, more than five batches
# (plpgsql keeps a generic plan after five calls), one of them refused.
sub deliver_slice
{
	my ($from) = @_;
	my $to = $from + 1499;
	$node->safe_psql('postgres', qq{
UPDATE erp.customers SET name = name || '.' WHERE id BETWEEN $from AND $to;
});
	ErpcrmTest::mock_post('/_mock/faults', { reject_ids => [$from] });
	$node->safe_psql('postgres', 'SELECT erpcrm.resume()');
	ok(wait_synced($node, 120), "keys $from to $to are delivered");
	$node->safe_psql('postgres', 'SELECT erpcrm.pause()');
}

my @statements = ('_claim', '_done', '_error', '_fold', 'next due', 'read', '_links_done');

# The checker catches what it looks for: plans made bad on purpose.
{
	my $mid = $node->safe_psql('postgres',
		"SELECT mapping_id FROM erpcrm.mapping WHERE name = 'companies'");
	my %bad = (
		'a sequential scan' => [ 'SET enable_indexscan = off; SET enable_bitmapscan = off;',
			"SELECT s.hubspot_id FROM erpcrm.sync_state s WHERE s.mapping_id = $mid AND s.erp_id = ANY ('{1,2}')" ],
		'a hash join' => [ 'SET enable_nestloop = off; SET enable_mergejoin = off;',
			"SELECT s.hubspot_id FROM erpcrm.sync_state s JOIN unnest('{1,2}'::text[]) k(erp_id) ON s.mapping_id = $mid AND s.erp_id = k.erp_id" ],
		'a scan of the whole mapping filtered on erp_id' => [ 'SET enable_seqscan = off; SET enable_bitmapscan = off;',
			"SELECT s.hubspot_id FROM erpcrm.sync_state s WHERE s.mapping_id = $mid AND s.erp_id || '' = ANY ('{1,2}')" ],
		'a sort of the mapping' => [ 'SET enable_indexscan = off; SET enable_bitmapscan = off;',
			"SELECT s.erp_id FROM erpcrm.sync_state s WHERE s.mapping_id = $mid ORDER BY s.last_synced_at LIMIT 5" ]);
	for my $what (sort keys %bad)
	{
		my ($set, $q) = @{ $bad{$what} };
		my $json = $node->safe_psql('postgres', "$set EXPLAIN (FORMAT JSON) $q");
		my @f = plan_faults(decode_json($json)->[0]{Plan});
		ok(scalar(@f), "the checker finds $what") or diag($json);
	}

	# the pending keys of a batch found by the due index, erp_id a later
	# column of its condition (the primary key dropped for the plan only;
	# the query says the due index's predicate)
	my $json = $node->safe_psql('postgres', qq{
BEGIN;
ALTER TABLE erpcrm.sync_queue DROP CONSTRAINT sync_queue_pkey;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
EXPLAIN (FORMAT JSON) SELECT s.hubspot_id FROM erpcrm.sync_state s
 WHERE s.mapping_id = $mid AND s.state = 'pending' AND s.erp_id = '1'
   AND s.next_attempt_at IS NOT NULL;
ROLLBACK;
});
	my @f = plan_faults(decode_json($json)->[0]{Plan});
	ok((grep { /later column/ } @f),
		'the checker finds erp_id as a later column of an index condition')
	  or diag($json);
	my $pkey = $node->safe_psql('postgres', qq{
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (FORMAT JSON) SELECT s.hubspot_id FROM erpcrm.sync_state s
 WHERE s.mapping_id = $mid AND s.erp_id = ANY ('{1,2}');
});
	is_deeply([ plan_faults(decode_json($pkey)->[0]{Plan}) ], [],
		'and takes a lookup by the primary key for a good plan') or diag($pkey);
}

worker_plans();
deliver_slice(1);
check_plans('never analyzed', \@statements);

$node->safe_psql('postgres', 'ANALYZE erpcrm.sync_key, erpcrm.sync_queue');
deliver_slice(10_001);
check_plans('analyzed, little pending', \@statements);

# statistics taken while every key was pending, then the keys went back
$node->safe_psql('postgres', q{
UPDATE erpcrm.sync_state SET state = 'pending', next_attempt_at = now() + interval '1 year';
ANALYZE erpcrm.sync_key, erpcrm.sync_queue;
UPDATE erpcrm.sync_state SET state = 'synced', next_attempt_at = now();
});
deliver_slice(20_001);
check_plans('analyzed while all pending', \@statements);

# Dependents: contacts linked to companies, many of them; ten companies of
# the next slice (not the one refused) hold an old HubSpot id, so their
# contacts are sent again (found by that id, not by reading the contacts
# whole).
$node->safe_psql('postgres', qq{
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id, sent_seq, assoc_state)
SELECT m.mapping_id, 'p' || g, 'synced', (800000000 + g)::text, 1,
	   'company_erp_id=' || (900000000 + g)
  FROM erpcrm.mapping m, generate_series(1, $keys) g WHERE m.name = 'contacts';
UPDATE erpcrm.sync_state s SET hubspot_id = (900000000 + s.erp_id::integer - 30000)::text
  FROM erpcrm.mapping m
 WHERE m.name = 'companies' AND s.mapping_id = m.mapping_id
   AND s.erp_id IN ('30002', '30003', '30004', '30005', '30006', '30007', '30008', '30009', '30010', '30011');
});
deliver_slice(30_001);
check_plans('dependents of new HubSpot ids', [ @statements, 'dependents' ]);
is($node->safe_psql('postgres', q{
SELECT count(*) FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
 WHERE m.name = 'contacts' AND s.change_seq > 1}), '10',
	'the contacts of the ten companies with a new HubSpot id were sent again');

# Statistics gone, as after a restore or pg_upgrade (or a fresh install
# that autovacuum has not reached yet), with 120,000 keys in two mappings:
# the planner knows neither how many rows a mapping has nor how its keys
# are spread, and still looks the batch's keys up one by one.
$node->safe_psql('postgres', q{
ALTER TABLE erpcrm.sync_key SET (autovacuum_enabled = off);
ALTER TABLE erpcrm.sync_queue SET (autovacuum_enabled = off);
DELETE FROM pg_statistic WHERE starelid IN ('erpcrm.sync_key'::regclass, 'erpcrm.sync_queue'::regclass);
UPDATE pg_class SET reltuples = -1, relpages = 0
 WHERE oid IN ('erpcrm.sync_key'::regclass, 'erpcrm.sync_queue'::regclass);
SELECT pg_stat_reset_single_table_counters('erpcrm.sync_key'::regclass);
SELECT pg_stat_reset_single_table_counters('erpcrm.sync_queue'::regclass);
});
is($node->safe_psql('postgres', q{
SELECT count(*) FROM pg_statistic WHERE starelid IN ('erpcrm.sync_key'::regclass, 'erpcrm.sync_queue'::regclass)}), '0',
	'sync_key and sync_queue have no statistics');
# and ten companies of the slice hold an old HubSpot id: their dependents too
$node->safe_psql('postgres', q{
UPDATE erpcrm.sync_state s SET hubspot_id = (900000000 + s.erp_id::integer - 30000)::text
  FROM erpcrm.mapping m
 WHERE m.name = 'companies' AND s.mapping_id = m.mapping_id
   AND s.erp_id IN ('45002', '45003', '45004', '45005', '45006', '45007', '45008', '45009', '45010', '45011');
});
deliver_slice(45_001);
check_plans('statistics gone, 120,000 keys', [ @statements, 'dependents' ]);
is($node->safe_psql('postgres', q{
SELECT count(*) FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
 WHERE m.name = 'contacts' AND s.change_seq > 1}), '20',
	'the contacts of ten more companies with a new HubSpot id were sent again');

# keys given up (erpcrm.max_attempts used up) and keys claimed ahead given
# back (the worker backs off): called as the worker calls them
worker_plans();
$node->safe_psql('postgres', q{
SELECT erpcrm._give_up(m.mapping_id, ARRAY['45001', '45002', '45003'], 1)
  FROM erpcrm.mapping m WHERE m.name = 'companies';
SELECT erpcrm._unclaim(m.mapping_id, ARRAY['45001', '45002', '45003'])
  FROM erpcrm.mapping m WHERE m.name = 'companies';
});
{
	my (@bad, %seen, @nested);
	# (a function's statements are logged before the call)
	for my $p (worker_plans('client backend'))
	{
		my ($text, $plan) = @$p;
		push @nested, $plan;
		next unless $text =~ /erpcrm\.(_give_up|_unclaim)\(/;
		my $f = $1;
		for my $q (@nested)
		{
			$seen{$f}++ if updates_sync_state($q);
			my @faults = plan_faults($q);
			push @bad, "$f: " . join(', ', @faults) if @faults;
		}
		@nested = ();
	}
	ok(!@bad, 'statistics gone: keys are given up and given back by primary key')
	  or diag(join("\n---\n", @bad));
	is(join(',', sort keys %seen), '_give_up,_unclaim',
		'the plans of _give_up and _unclaim were checked');
}
is($node->safe_psql('postgres', q{
SELECT count(*) FROM pg_statistic WHERE starelid IN ('erpcrm.sync_key'::regclass, 'erpcrm.sync_queue'::regclass)}), '0',
	'neither was analyzed meanwhile');

# recovery after a crash looks only at the keys in flight
$node->safe_psql('postgres', q{
UPDATE erpcrm.sync_state SET state = 'in_flight', sent_seq = change_seq
 WHERE erp_id IN ('40001', '40002');
});
$node->safe_psql('postgres', 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = \'erpcrm worker\'');
ok(poll_until('the worker recovers the keys in flight', sub {
	$node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.sync_state WHERE state = 'in_flight'") eq '0' }, 60),
	'a restarted worker puts keys left in flight back');
check_plans('recovery, statistics gone', ['_recover']);

is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.sync_state"), 2 * $keys,
	'one row per key');
done_testing();

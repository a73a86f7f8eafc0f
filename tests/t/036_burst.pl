# The way back at HubSpot's limits (issue 14): 15,000 deals changed in
# HubSpot at once, more than the 10,000 results one search query can reach,
# reach the ERP's handler each exactly once, through searches of 200
# results, at most 4 a second, with no 429.  Then the share of the call
# budget: while keys wait to be delivered, pulls use at most
# erpcrm.pull_share of erpcrm.max_calls_per_10s, and are not starved.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);
use ErpcrmTest;

# HubSpot's real search limits: 5 a second, 200 a page, 10,000 a query
start_mock(config => { %{ ErpcrmTest::default_mock_config() },
	search_per_second => 5, search_max_total => 10000, log_bodies => JSON::PP::true });
my $node = erpcrm_node('burst', conf => q{
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '1s'
});
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE erp.won (hubspot_id text PRIMARY KEY, name text, calls integer NOT NULL DEFAULT 1);
CREATE FUNCTION erp.on_won(c erpcrm.hubspot_change) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO erp.won VALUES (c.hubspot_id, c.properties ->> 'dealname')
	ON CONFLICT (hubspot_id) DO UPDATE SET calls = erp.won.calls + 1;
$$;
SELECT erpcrm.subscribe('won', 'deals', '{dealname,dealstage}',
	'[{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]',
	'erp.on_won(erpcrm.hubspot_change)', since => now() - interval '1 minute');
});

# 15,000 deals won by hand within 3 seconds (starting in 3 s, as they are
# created first), five to a millisecond, and
# 1,000 of them in one millisecond (a bulk edit): more than a page
my $seq_before = ErpcrmTest::mock_get('/_mock/requests?since=999999999')->{lastSeq};
my $base = int(time() * 1000) + 3000;
for my $b (0 .. 14)
{
	ErpcrmTest::mock_post('/_mock/objects/deals', { inputs => [ map {
		my $n = $b * 1000 + $_;
		{ properties => { dealname => "Deal $n", dealstage => 'closedwon', pipeline => 'default' },
		  timestamp => $b == 7 ? $base + 1400 : $base + int($n / 5) } } 0 .. 999 ] });
}
ok(poll_until('15,000 changes handed over',
	sub { sql('SELECT count(*) FROM erp.won') eq '15000' }, 180),
	'all 15,000 won deals reached the handler');
is(sql('SELECT count(*) FROM erp.won WHERE calls <> 1'), '0', 'each exactly once');
is(sql("SELECT count(*) FROM erpcrm.inbox WHERE state = 'done'"), '15000', 'each is one inbox row, done');

my @searches = grep { $_->{path} eq '/crm/v3/objects/deals/search' && $_->{seq} > $seq_before }
	@{ ErpcrmTest::mock_get("/_mock/requests?since=$seq_before")->{results} };
is(scalar(grep { $_->{status} != 200 } @searches), 0,
	'no search was refused: no 429 (search rate), no 400 (the 10,000-result cap)');
ok((grep { ($_->{answer}{total} // 0) > 10000 } @searches) > 0,
	'a search matched more than the 10,000 results one query can page to');
is(scalar(grep { exists $_->{body}{after} } @searches), 0,
	'no search paged: each asked for the first page after the cursor');
ok((grep { ($_->{body}{limit} // 0) == 200 } @searches) == @searches, 'pages of 200, HubSpot\'s maximum');
# the spacing the worker keeps, read where it is kept: when each search
# was sent (erpcrm.api_log), not when the mock received it, which a loaded
# machine can bunch up
my $max_per_second = sql(q{
SELECT coalesce(max(n), 0) FROM (
	SELECT count(*) OVER (ORDER BY called_at
		RANGE BETWEEN CURRENT ROW AND interval '999 milliseconds' FOLLOWING) AS n
	  FROM erpcrm.api_log WHERE path = '/crm/v3/objects/deals/search') s});
cmp_ok(sql(q{SELECT count(*) FROM erpcrm.api_log WHERE path = '/crm/v3/objects/deals/search'}),
	'>=', scalar(@searches), 'every search is in erpcrm.api_log');
cmp_ok($max_per_second, '<=', 4, 'at most 4 searches in any second');
my $read = 0;
$read += scalar(@{ $_->{answer}{results} // [] }) for @searches;
cmp_ok($read, '<=', 15000 * 1.1, 'each change was read about once (searches overlap only at the cursor)');

# --- the share: deliveries first, pulls within erpcrm.pull_share of the budget
$node->append_conf('postgresql.conf', q{
erpcrm.max_calls_per_10s = 20
erpcrm.pull_share = 25
erpcrm.batch_size = 10
});
$node->reload;
my $seq = ErpcrmTest::mock_get('/_mock/requests?since=999999999')->{lastSeq};
sql(q{INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(1, 400) g});
ErpcrmTest::mock_post('/_mock/objects/deals', { inputs => [ map {
	{ properties => { dealname => "Late deal $_", dealstage => 'closedwon', pipeline => 'default' } } } 1 .. 2000 ] });
ok(wait_synced($node, 120), 'the 400 companies are delivered');
ok(poll_until('the 2,000 later changes', sub { sql('SELECT count(*) FROM erp.won') eq '17000' }, 120),
	'and the 2,000 later changes handed over');
# HubSpot counts a call when it arrives: the mock logs it when it answered
my @calls = map { { %$_, time => $_->{time} - $_->{durationMs} / 1000 } }
	grep { $_->{seq} > $seq && $_->{path} !~ m{^/_mock} }
	@{ ErpcrmTest::mock_get("/_mock/requests?since=$seq")->{results} };
my @upserts = grep { $_->{path} =~ m{/companies/batch/upsert} } @calls;
my $last_upsert = $upserts[-1]{time};
my ($max_pulls, $max_calls) = (0, 0);
for my $c (@calls)
{
	my $t = $c->{time};
	last if $t + 10 > $last_upsert;		# windows inside the delivery
	my @w = grep { $_->{time} >= $t && $_->{time} < $t + 10 } @calls;
	my $pulls = grep { $_->{path} =~ m{/search$} } @w;
	$max_pulls = $pulls if $pulls > $max_pulls;
	$max_calls = @w if @w > $max_calls;
}
cmp_ok($max_calls, '<=', 20, 'no 10-second window held more calls than erpcrm.max_calls_per_10s');
cmp_ok($max_pulls, '<=', 5, 'while companies waited, pulls took at most 25 % of the budget');
ok((grep { $_->{path} =~ m{/search$} && $_->{time} < $last_upsert } @calls) > 0,
	'and pulls were not starved meanwhile');
is(scalar(grep { ($_->{status} // 0) == 429 } @calls), 0, 'no 429');

done_testing();

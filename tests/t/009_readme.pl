# The README is the test: the blocks it marks with
#   <!-- readme-test: postgresql.conf -->
#   <!-- readme-test: sql as ROLE -->
# in its installation, security, worked-example and way-back sections are
# run word for word, in that order, on a fresh cluster whose ERP (tables
# only) is there before erpcrm: no extra grant, the views in a schema that
# is not public, the worker's role exactly as written.  It must end with
# the objects in HubSpot (the mock), and a deal won in HubSpot must become
# an ERP order through the way back's subscription.  Only two settings are
# added after the README's own: the mock's URL and the path of the token
# file.
#
# Then the blocks of "Many ERP databases in one cluster" and "Orders as
# HubSpot's native orders" (marked "sql as ROLE in DATABASE") run in a
# second ERP database, erp_north: erpcrm and its own portal row (on the
# 2026-03 API family), its orders as native orders.  The test adds what
# those sections take as given: erpcrm.database left empty, the portal's
# token file where the test keeps it, a companies mapping.
#
# Between the two, the blocks of the operations runbook (erasure, drift,
# refresh) run against the first set-up, and do what the runbook says.
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

# --- the README's marked blocks, by section
my $readme = slurp_file(dirname(__FILE__) . '/../../README.md');
my %section_of = (
	'## Installation' => 'install',
	'## Security' => 'security',
	'### Worked example' => 'example',
	'## Operations runbook' => 'runbook',
	'### The way back' => 'wayback',
	'### Many ERP databases in one cluster' => 'databases',
	'### Orders as HubSpot\'s native orders' => 'orders');
my (%blocks, $section, $marker);
my @lines = split /\n/, $readme;
for (my $i = 0; $i < @lines; $i++)
{
	my $line = $lines[$i];
	if ($line =~ /^(#+ .*?)\s*$/)
	{
		my $h = $1;
		$section = undef;
		for my $k (keys %section_of)
		{
			$section = $section_of{$k} if index($h, $k) == 0;
		}
		next;
	}
	# a block in a list item is indented: the marker, the fence and the
	# lines lose that indentation
	if ($line =~ /^( *)<!-- readme-test: (.+?) -->$/)
	{
		my $indent = $1;
		$marker = $2;
		die "README.md line " . ($i + 1) . ": a readme-test marker outside the tested sections"
		  unless defined $section;
		die "README.md line " . ($i + 2) . ": a readme-test marker must precede a fenced block"
		  unless ($lines[ $i + 1 ] // '') =~ /^$indent```/;
		my @body;
		for ($i += 2; $i < @lines && $lines[$i] !~ /^$indent```\s*$/; $i++)
		{
			push @body, $lines[$i] =~ s/^$indent//r;
		}
		push @{ $blocks{$section} }, { kind => $marker, text => join("\n", @body) . "\n" };
	}
}
my @run = map { @{ $blocks{$_} // [] } } qw(install security example wayback);
is(scalar(@{ $blocks{install} // [] }), 2, 'the installation section marks its two blocks');
ok(scalar(@{ $blocks{security} // [] }) >= 1, 'the security section marks its block');
is(scalar(@{ $blocks{example} // [] }), 1, 'the worked example marks its block');
is(scalar(@{ $blocks{runbook} // [] }), 4, 'the runbook marks its erasure, drift and refresh blocks');
is(scalar(@{ $blocks{wayback} // [] }), 1, 'the way back marks its subscription');
is(scalar(@{ $blocks{databases} // [] }), 1, 'many databases: the portal block is marked');
is(scalar(@{ $blocks{orders} // [] }), 1, 'native orders: the orders block is marked');
my @north = map { @{ $blocks{$_} // [] } } qw(databases orders);
is(scalar(grep { $_->{kind} =~ /^sql as \S+ in erp_north$/ } @north), scalar(@north),
	'those run in the second database, erp_north');
my @conf = grep { $_->{kind} eq 'postgresql.conf' } @run;
is(scalar(@conf), 1, 'one postgresql.conf block');
like($conf[0]{text}, qr/^erpcrm\.role\s*=/m, 'which sets erpcrm.role');
my @roles_used = map { /^sql as (\S+)$/ ? $1 : () } map { $_->{kind} } @run;
is(scalar(@roles_used), scalar(@run) - 1, 'every other block is "sql as ROLE"')
  or diag(join(', ', map { $_->{kind} } @run));

# --- a fresh cluster with the ERP's tables and data, before erpcrm
my $mock_config = ErpcrmTest::default_mock_config();
$mock_config->{unique_properties} = {};	# setup_hubspot() makes them
$mock_config->{properties} = {};
start_mock(config => $mock_config);
my $mock_url = 'http://127.0.0.1:' . ErpcrmTest::mock_port();
my $dir = PostgreSQL::Test::Utils::tempdir();
open(my $fh, '>', "$dir/hubspot.token") or die;
print $fh "test-token\n";
close $fh;
chmod 0600, "$dir/hubspot.token";

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
$node->append_conf('postgresql.conf', "log_min_messages = 'log'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE erp');
$node->safe_psql('erp', ErpcrmTest::erp_tables());
$node->safe_psql('erp', q{
INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit) VALUES
	(1, 'Alfa Sp. z o.o.', '5260001246', 'alfa.pl', 'A', 10000),
	(2, 'Beta S.A.', '7770002233', 'beta.pl', 'B', 2500.50);
INSERT INTO erp.persons VALUES (10, 1, 'anna@alfa.pl', 'Anna', 'Nowak'),
	(11, 2, 'jan@beta.pl', 'Jan', 'Kowalski');
INSERT INTO erp.products VALUES ('P-1', 'Śruba M6', 0.35), ('P-2', 'Nakrętka M6', 0.12);
-- the orders the way back's handler writes
CREATE TABLE erp.orders (id serial PRIMARY KEY, hubspot_deal_id text UNIQUE, name text, total numeric,
	customer_id integer);
});

# --- the README, word for word
$node->append_conf('postgresql.conf', $conf[0]{text});
$node->append_conf('postgresql.conf', qq{
# the test's own: the mock instead of HubSpot, and where the token is
erpcrm.hubspot_url = '$mock_url'
erpcrm.token_file = '$dir/hubspot.token'
});
$node->restart;

# set up before its role exists, the worker waits for it and says so
my $log_offset = -s $node->logfile;
ok(poll_until('the worker waiting for its role', sub {
	$node->safe_psql('postgres', 'CREATE EXTENSION IF NOT EXISTS erpcrm; SELECT detail FROM erpcrm.worker')
	  eq 'waiting for role "erpcrm_worker" (erpcrm.role) to be created' }, 30),
	'before its role exists, erpcrm.worker says the worker waits for it');
$node->safe_psql('postgres', 'DROP EXTENSION erpcrm');

my $n = 0;
for my $b (@run)
{
	next unless $b->{kind} =~ /^sql as (\S+)$/;
	my $role = $1 eq 'superuser' ? undef : $1;
	$n++;
	my ($ret, $out, $err) = $node->psql('erp', $b->{text},
		on_error_stop => 1,
		extra_params => $role ? [ '-U', $role ] : []);
	ok($ret == 0, "README block $n runs as " . ($role // 'the superuser'))
	  or diag("$b->{text}\n$err");
}

unlike(substr(slurp_file($node->logfile), $log_offset), qr/FATAL/,
	'no FATAL in the log while the worker waited for its role');
ok(poll_until('the worker as erpcrm_worker', sub {
	$node->safe_psql('erp',
		"SELECT usename FROM pg_stat_activity WHERE backend_type = 'erpcrm worker'") eq 'erpcrm_worker' }, 60),
	'the worker runs as the role the README names');
is($node->safe_psql('erp', "SELECT erpcrm.wait_for_sync('60 seconds')"), 't',
	'everything the README set up is delivered');
is($node->safe_psql('erp', 'SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed');
is($node->safe_psql('erp', "SELECT string_agg(DISTINCT owner::text, ',') FROM erpcrm.mapping"),
	'erp_integration', 'the mappings belong to the integration role');

my @problems = ErpcrmTest::compare_state($node, dbname => 'erp',
	mappings => [
		{ name => 'companies', view => 'crm.hs_companies', type => 'companies', archive => 1 },
		{ name => 'contacts', view => 'crm.hs_contacts', type => 'contacts', archive => 0 },
		{ name => 'products', view => 'crm.hs_products', type => 'products', archive => 1 },
	],
	associations => [
		{ view => 'crm.hs_contacts', from_type => 'contacts', column => 'company_erp_id',
		  to_type => 'companies', to_view => 'crm.hs_companies' },
	]);
ok(!@problems, 'HubSpot holds the companies, contacts and products of the README, with associations')
  or diag(join("\n", @problems));
is(scalar(@{ mock_get('/_mock/objects/companies')->{results} }), 2, 'two companies in HubSpot');

# the way back: a deal sales wins in HubSpot, for Alfa, becomes an ERP order
my ($alfa_company) = grep { ($_->{properties}{erp_id} // '') eq '1' }
  @{ mock_get('/_mock/objects/companies')->{results} };
my $deal = ErpcrmTest::mock_post('/_mock/objects/deals',
	{ properties => { dealname => 'Won in HubSpot', dealstage => 'closedwon', pipeline => 'default',
					  amount => '1500' },
	  associations => [ { toType => 'companies', toId => $alfa_company->{id} } ] })->{id};
ok(poll_until('the won deal as an order', sub {
	$node->safe_psql('erp', "SELECT count(*) FROM erp.orders WHERE hubspot_deal_id = '$deal'") eq '1' }, 120),
	'the README\'s subscription turns a deal won in HubSpot into an ERP order');
is($node->safe_psql('erp', "SELECT name || ' ' || total FROM erp.orders WHERE hubspot_deal_id = '$deal'"),
	'Won in HubSpot 1500', 'with the deal\'s name and amount');
is($node->safe_psql('erp', "SELECT customer_id FROM erp.orders WHERE hubspot_deal_id = '$deal'"), '1',
	'for the customer of the deal\'s company (its association, with the ERP id erpcrm knows)');

# a change after the set-up flows too
$node->safe_psql('erp', "UPDATE erp.customers SET name = 'Alfa Polska' WHERE id = 1");
is($node->safe_psql('erp', "SELECT erpcrm.wait_for_sync('60 seconds')"), 't', 'a later change is delivered');
my ($alfa) = grep { ($_->{properties}{erp_id} // '') eq '1' }
  @{ mock_get('/_mock/objects/companies')->{results} };
is($alfa->{properties}{name}, 'Alfa Polska', 'and HubSpot has it');

# --- the runbook's blocks, word for word, on the README's set-up
for my $b (@{ $blocks{runbook} })
{
	my ($role) = $b->{kind} =~ /^sql as (\S+)$/ or die "runbook block: $b->{kind}";
	$n++;
	my ($ret, $out, $err) = $node->psql('erp', $b->{text},
		on_error_stop => 1,
		extra_params => $role eq 'superuser' ? [] : [ '-U', $role ]);
	ok($ret == 0, "README block $n (runbook) runs as $role")
	  or diag("$b->{text}\n$err");
}
# a customer asked to be forgotten
ok(poll_until('the erasure', sub {
	$node->safe_psql('erp', 'SELECT outcome FROM erpcrm.erasures') eq 'erased' }, 60),
	'the erasure of contact 10 ends as erased');
ok(!(grep { ($_->{properties}{erp_id} // '') eq '10' } @{ mock_get('/_mock/objects/contacts')->{results} }),
	'and the contact is gone from HubSpot');
# HubSpot was edited by hand (here: it was not)
ok(poll_until('the reconcile', sub {
	$node->safe_psql('erp', "SELECT state FROM erpcrm.reconcile_runs WHERE mapping = 'companies'") eq 'done' }, 60),
	'the reconcile of the companies ends');
is($node->safe_psql('erp', q{
SELECT (SELECT count(*) FROM erpcrm.drift) || ' ' || drift || ' ' || m.reconcile_every
  FROM erpcrm.status s JOIN erpcrm.mapping m ON m.name = s.mapping WHERE s.mapping = 'companies'}),
	'0 0 1 day', 'no drift found, none counted in erpcrm.status, and a reconcile every day');
# a view changed
is($node->safe_psql('erp', q{
SELECT m.refresh_every || ' ' || f.refresh_dirtied
  FROM erpcrm.mapping m JOIN erpcrm.fingerprint_stat f USING (mapping_id) WHERE m.name = 'companies'}),
	'01:00:00 0', 'the refresh of the companies marked no key, and they are refreshed every hour');

# --- a second company's ERP database in the same cluster
# the test's own: every database that has erpcrm (the README: leave
# erpcrm.database unset for that), and the second ERP's tables
$node->safe_psql('postgres', "ALTER SYSTEM SET erpcrm.database = ''");
$node->reload;
$node->safe_psql('postgres', 'CREATE DATABASE erp_north');
$node->safe_psql('erp_north', slurp_file(dirname(__FILE__) . '/../../examples/erp.sql'));
open($fh, '>', "$dir/north.token") or die;
print $fh "test-token\n";
close $fh;
chmod 0600, "$dir/north.token";
sub run_blocks
{
	my ($what) = @_;
	for my $b (@{ $blocks{$what} })
	{
		my ($role, $db) = $b->{kind} =~ /^sql as (\S+) in (\S+)$/;
		$n++;
		my ($ret, $out, $err) = $node->psql($db, $b->{text},
			on_error_stop => 1,
			extra_params => $role eq 'superuser' ? [] : [ '-U', $role ]);
		ok($ret == 0, "README block $n runs in $db as " . ($role eq 'superuser' ? 'the superuser' : $role))
		  or diag("$b->{text}\n$err");
	}
}
run_blocks('databases');
is($node->safe_psql('erp_north', 'SELECT api_version || \' \' || max_calls_per_10s FROM erpcrm.portal'),
	'2026-03 80', 'erp_north names its portal\'s API family and budget');
# the test's own: the portal's token file where the test keeps it, and the
# companies the orders section takes as mapped
$node->safe_psql('erp_north', qq{
UPDATE erpcrm.portal SET token_file = '$dir/north.token';
CREATE VIEW erp.hs_companies AS SELECT id AS erp_id, name FROM erp.customers WHERE active;
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
INSERT INTO erp.customers (id, name) VALUES (301, 'Północ Sp. z o.o.');
INSERT INTO erp.orders (id, number, customer_id, ordered_on, status, total) VALUES
	(30, 'ZAM/30/2026', 301, '2026-11-20', 'fulfilled', 500),
	(31, 'ZAM/31/2026', 301, '2026-11-21', 'awaiting_payment', 120);
});
run_blocks('orders');
is($node->safe_psql('erp_north', "SELECT erpcrm.wait_for_sync('60 seconds')"), 't',
	'erp_north delivers its companies and orders');
is($node->safe_psql('erp_north', 'SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed there');
is($node->safe_psql('erp', q{SELECT string_agg(database::text, ',' ORDER BY database) FROM erpcrm.workers}),
	'erp,erp_north', 'a worker for each ERP database');
is($node->safe_psql('erp_north', q{
SELECT string_agg(DISTINCT substring(path from '^/crm/[a-z]+/([^/?]+)'), ',')
  FROM erpcrm.api_log WHERE path LIKE '/crm/%'}), '2026-03',
	'erp_north calls HubSpot on its portal\'s API family only');
my %stage = split /[|\n]/, $node->safe_psql('erp_north',
	q{SELECT stage, stage_id FROM erpcrm.pipeline_stage WHERE pipeline = 'Orders (ERP)'});
my ($pipeline) = grep { $_->{label} eq 'Orders (ERP)' }
  @{ ErpcrmTest::hubspot_get('/crm/v3/pipelines/orders')->{results} };
ok($pipeline, 'set-up made the order pipeline in HubSpot');
my %orders = map { ($_->{properties}{erp_id} // '') => $_ } @{ mock_get('/_mock/objects/orders')->{results} };
is(join(',', map { $orders{$_} ? $orders{$_}{properties}{hs_pipeline_stage} // '?' : 'missing' } qw(ZAM-30 ZAM-31)),
	"$stage{Fulfilled},$stage{'Awaiting payment'}", 'HubSpot has both orders, each in its stage by label');
is($orders{'ZAM-30'}{properties}{hs_pipeline}, $pipeline->{id}, 'in the order pipeline');

$node->stop;
done_testing();

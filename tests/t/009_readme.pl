# The README is the test: the blocks it marks with
#   <!-- readme-test: postgresql.conf -->
#   <!-- readme-test: sql as ROLE -->
# in its installation, security and worked-example sections are run word
# for word, in that order, on a fresh cluster whose ERP (tables only) is
# there before erpcrm: no extra grant, the views in a schema that is not
# public, the worker's role exactly as written.  It must end with the
# objects in HubSpot (the mock).  Only two settings are added after the
# README's own: the mock's URL and the path of the token file.  Then the
# blocks of the operations runbook (erasure, drift, refresh; indented in
# their list items) run against that set-up, and do what the runbook says.
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
	'## Operations runbook' => 'runbook');
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
	if ($line =~ /^(\s*)<!-- readme-test: (.+?) -->$/)
	{
		my $indent = $1;
		$marker = $2;
		die "README.md line " . ($i + 1) . ": a readme-test marker outside the tested sections"
		  unless defined $section;
		die "README.md line " . ($i + 2) . ": a readme-test marker must precede a fenced block"
		  unless ($lines[ $i + 1 ] // '') =~ /^\Q$indent\E```/;
		my @body;
		for ($i += 2; $i < @lines && $lines[$i] !~ /^\s*```\s*$/; $i++)
		{
			(my $l = $lines[$i]) =~ s/^\Q$indent\E//;
			push @body, $l;
		}
		push @{ $blocks{$section} }, { kind => $marker, text => join("\n", @body) . "\n" };
	}
}
my @run = map { @{ $blocks{$_} // [] } } qw(install security example);
is(scalar(@{ $blocks{install} // [] }), 2, 'the installation section marks its two blocks');
ok(scalar(@{ $blocks{security} // [] }) >= 1, 'the security section marks its block');
is(scalar(@{ $blocks{example} // [] }), 1, 'the worked example marks its block');
is(scalar(@{ $blocks{runbook} // [] }), 4, 'the runbook marks its erasure, drift and refresh blocks');
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

$node->stop;
done_testing();

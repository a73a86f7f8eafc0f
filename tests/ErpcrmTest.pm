# ErpcrmTest.pm: shared set-up for erpcrm's TAP tests.
#
#   - start the HubSpot mock (tests/mock/hubspot_mock.py) and talk to it;
#   - make a PostgreSQL node with erpcrm preloaded and pointed at the mock;
#   - load the sample ERP and its mappings (the README's example);
#   - compare what the ERP's mapping views say HubSpot should hold with what
#     the mock holds: every missing, stale, duplicated or unarchived object
#     and every missing association is named.
package ErpcrmTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(start_mock mock_get mock_post erpcrm_node load_erp
  compare_state state_ok wait_synced worker_pid poll_until
  hs_objects hs_object hs_associated hs_new_deal);

my $here = File::Spec->rel2abs(dirname(__FILE__));
my $json = JSON::PP->new->canonical->allow_nonref;
my $http = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
my $mock_port;
my $mock_pid;

sub start_mock
{
	my (%opt) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $port_file = "$dir/port";
	my $script = dirname(__FILE__) . '/mock/hubspot_mock.py';
	my @cmd = ('python3', $script, '--port', '0', '--port-file', $port_file,
		'--seed', '42');
	push @cmd, @{ $opt{args} } if $opt{args};
	$mock_pid = fork();
	die "fork failed" unless defined $mock_pid;
	if ($mock_pid == 0)
	{
		open(STDOUT, '>', "$dir/mock.out");
		open(STDERR, '>', "$dir/mock.err");
		exec(@cmd) or die "cannot start the mock: $!";
	}
	for (1 .. 100)
	{
		last if -s $port_file;
		usleep(100_000);
	}
	open(my $fh, '<', $port_file) or die "the HubSpot mock did not start";
	$mock_port = <$fh>;
	chomp $mock_port;
	close $fh;
	mock_post('/_mock/reset', $opt{config} // default_mock_config());
	return $mock_port;
}

sub mock_port { return $mock_port; }

sub default_mock_config
{
	return {
		unique_properties => {
			companies => ['erp_id'],
			contacts => ['erp_id'],
			products => ['erp_id'],
			deals => ['erp_id'],
			line_items => ['erp_id'],
		},
		properties => {
			companies => [
				{ name => 'nip', type => 'string' },
				{ name => 'price_level', type => 'string' },
				{ name => 'credit_limit', type => 'number' },
				{ name => 'customer_since', type => 'date' },
				{ name => 'last_order_at', type => 'datetime' },
				{ name => 'vip', type => 'bool' },
			],
		},
		max_per_window => 0,
		daily_limit => 0,
		# ERPCRM_MOCK_UPSERT_WHOLE_BATCH=1: one bad input fails a whole
		# batch upsert (HubSpot may do that instead of a 207)
		($ENV{ERPCRM_MOCK_UPSERT_WHOLE_BATCH} ? (upsert_whole_batch => JSON::PP::true) : ()),
		# ERPCRM_MOCK_NULL_PROPERTIES=1: a requested property that is unset
		# is answered as null (HubSpot's schema allows it) instead of left out
		($ENV{ERPCRM_MOCK_NULL_PROPERTIES} ? (null_properties => JSON::PP::true) : ()),
	};
}

END
{
	contract_log() if $mock_pid;
	kill 'TERM', $mock_pid if $mock_pid;
}

# The mock's record of this suite's calls, for the contract check that
# tests/run.sh runs after the TAP suites (ERPCRM_CONTRACT_DIR).
sub contract_log
{
	my $dir = $ENV{ERPCRM_CONTRACT_DIR} or return;
	my $r = $http->get("http://127.0.0.1:$mock_port/_mock/requests");
	return unless $r->{success};
	my $name = File::Basename::basename($0, '.pl');
	if (open(my $fh, '>', "$dir/$name.$$.json"))
	{
		print $fh $r->{content};
		close $fh;
	}
	return;
}

sub mock_get
{
	my ($path) = @_;
	my $r = $http->get("http://127.0.0.1:$mock_port$path");
	die "mock GET $path: $r->{status} $r->{content}" unless $r->{success};
	return $json->decode($r->{content});
}

# A call to the HubSpot API itself (with the token), as a user of HubSpot would.
sub hubspot_get
{
	my ($path) = @_;
	my $r = $http->get("http://127.0.0.1:$mock_port$path",
		{ headers => { Authorization => 'Bearer test-token' } });
	die "HubSpot GET $path: $r->{status} $r->{content}" unless $r->{success};
	return $json->decode($r->{content});
}

sub mock_delete
{
	my ($path) = @_;
	my $r = $http->request('DELETE', "http://127.0.0.1:$mock_port$path");
	die "mock DELETE $path: $r->{status} $r->{content}" unless $r->{success};
	return 1;
}

sub mock_post
{
	my ($path, $body) = @_;
	# make test checks the traffic of every suite against HubSpot's
	# contract (tests/contract): the mock records bodies and answers
	$body = { %{ $body // {} }, log_bodies => JSON::PP::true }
	  if $path eq '/_mock/reset' && $ENV{ERPCRM_CONTRACT_DIR};
	my $r = $http->post(
		"http://127.0.0.1:$mock_port$path",
		{
			headers => { 'Content-Type' => 'application/json' },
			content => $json->encode($body // {})
		});
	die "mock POST $path: $r->{status} $r->{content}" unless $r->{success};
	return $r->{content} ? $json->decode($r->{content}) : undef;
}

# An edit by hand in HubSpot through the mock's control API, e.g.
# mock_patch("/_mock/objects/deals/$id", { properties => { dealstage =>
# 'closedwon' } }): validated, recorded in the property's history as made
# in HubSpot's screens (sourceType CRM_UI), no API call counted.
sub mock_patch
{
	my ($path, $body) = @_;
	my $r = $http->request('PATCH', "http://127.0.0.1:$mock_port$path",
		{
			headers => { 'Content-Type' => 'application/json' },
			content => $json->encode($body // {})
		});
	die "mock PATCH $path: $r->{status} $r->{content}" unless $r->{success};
	return $json->decode($r->{content});
}

# What the mock holds, as a test reads it: the unarchived objects of a type;
# the one with an erp_id (in list context every one, to count duplicates);
# whether one object is associated to another (of a given type id).
sub hs_objects
{
	my ($type) = @_;
	return [ grep { !$_->{archived} } @{ mock_get("/_mock/objects/$type")->{results} } ];
}

sub hs_object
{
	my ($type, $key) = @_;
	my @o = grep { ($_->{properties}{erp_id} // '') eq $key } @{ hs_objects($type) };
	return wantarray ? @o : $o[0];
}

sub hs_associated
{
	my ($from_type, $from, $to_type, $to, $type_id) = @_;
	return 0 unless defined $from && defined $to;
	for my $a (@{ mock_get('/_mock/associations')->{results} })
	{
		return 1 if $a->{fromType} eq $from_type && $a->{toType} eq $to_type
		  && $a->{fromId} eq $from && $a->{toId} eq $to
		  && (!defined $type_id || $a->{typeId} == $type_id);
	}
	return 0;
}

# A deal made in HubSpot "by hand" (the mock's control API), as a
# salesperson would: its id.  Stage closedwon and amount 1 unless given.
sub hs_new_deal
{
	my ($name, $stage, $amount) = @_;
	return mock_post('/_mock/objects/deals',
		{ properties => { dealname => $name, dealstage => $stage // 'closedwon',
						  pipeline => 'default', amount => $amount // '1' } })->{id};
}

# A node with erpcrm preloaded, its worker serving database "postgres".
sub erpcrm_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opt{init} // {} });
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'erpcrm'
erpcrm.database = 'postgres'
erpcrm.hubspot_url = 'http://127.0.0.1:$mock_port'
erpcrm.token = 'test-token'
erpcrm.retry_base = '100ms'
erpcrm.retry_max = '2s'
erpcrm.auth_retry = '2s'
erpcrm.poll_interval = '1s'
erpcrm.request_timeout = '5s'
erpcrm.max_calls_per_10s = 10000
log_min_messages = 'log'
} . ($opt{conf} // ''));
	$node->start unless $opt{no_start};
	return $node;
}

# The way back's node: erpcrm pulling every 200 ms (1 s settle), with the
# examples' ERP, mappings, portal set-up and subscriptions
# (examples/*.sql), as the mapping guide has them.
sub examples_node
{
	my ($name) = @_;
	my $node = erpcrm_node($name, conf => q{
erpcrm.pull_interval = '200ms'
erpcrm.pull_settle = '1s'
});
	my $examples = "$here/../examples";
	$node->safe_psql('postgres', 'CREATE EXTENSION erpcrm');
	$node->safe_psql('postgres', slurp_file("$examples/$_.sql")) for qw(erp mappings);
	my $setup = $node->safe_psql('postgres', "SELECT string_agg(result, ',') FROM erpcrm.setup_hubspot()");
	die "the portal set-up failed: $setup" if $setup =~ /error/;
	$node->safe_psql('postgres', slurp_file("$examples/subscriptions.sql"));
	return $node;
}

# The tables of the sample ERP (tests/erp.sql): customers, persons, products.
sub erp_tables
{
	return PostgreSQL::Test::Utils::slurp_file("$here/erp.sql");
}

# The sample ERP of the README's example: its tables, and its mapping views
# and mappings.
sub load_erp
{
	my ($node, %opt) = @_;
	my $version = $opt{version} ? " VERSION '$opt{version}'" : '';
	$node->safe_psql('postgres', "CREATE EXTENSION erpcrm$version");
	$node->safe_psql('postgres', erp_tables());
	$node->safe_psql('postgres', q{
CREATE VIEW erp.hs_companies AS
SELECT id AS erp_id, name, nip, domain, price_level, credit_limit,
	   customer_since, last_order_at, vip
  FROM erp.customers WHERE active;
CREATE VIEW erp.hs_contacts AS
SELECT id AS erp_id, email, first_name AS firstname, last_name AS lastname,
	   customer_id::text AS company_erp_id
  FROM erp.persons;
CREATE VIEW erp.hs_products AS
SELECT sku AS erp_id, name, price, sku AS hs_sku FROM erp.products WHERE active;

SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.map('contacts', 'erp.hs_contacts', 'contacts', on_delete => 'keep');
SELECT erpcrm.map('products', 'erp.hs_products', 'products');
SELECT erpcrm.associate('contacts', 'company_erp_id', 'companies');
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
SELECT erpcrm.watch('contacts', 'erp.persons', 'id');
SELECT erpcrm.watch('products', 'erp.products', 'sku');
});
}

sub poll_until
{
	my ($what, $sub, $timeout) = @_;
	my $deadline = time() + ($timeout // 60);
	while (time() < $deadline)
	{
		return 1 if $sub->();
		usleep(50_000);
	}
	diag("timed out waiting for $what");
	return 0;
}

sub wait_synced
{
	my ($node, $timeout) = @_;
	$timeout //= 60;
	return $node->safe_psql('postgres',
		"SELECT erpcrm.wait_for_sync('$timeout seconds')") eq 't';
}

sub worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'erpcrm worker'");
}

# What the view says HubSpot should hold: erp_id => { property => text }.
sub expected_objects
{
	my ($node, $view, $skip, $dbname) = @_;
	my $out = $node->safe_psql($dbname // 'postgres', qq{
SELECT coalesce(json_agg(json_build_object('erp_id', v.erp_id::text,
	'p', (SELECT jsonb_object_agg(e.key, e.value)
			FROM jsonb_each_text(to_jsonb(v)) e))), '[]')
  FROM $view v});
	my %objects;
	for my $row (@{ $json->decode($out) })
	{
		my %p = %{ $row->{p} };
		delete $p{$_} for @{ $skip // [] };
		$p{$_} //= '' for keys %p;
		$objects{ $row->{erp_id} } = \%p;
	}
	return \%objects;
}

# Compare the ERP with the mock.  Returns the list of problems found.
#   mappings: [ { name, view, type, archive (bool), skip => [columns] } ]
#   associations: [ { from_view_type, from_type, column, to_type } ]
#   dbname: the database of the views (default postgres)
sub compare_state
{
	my ($node, %opt) = @_;
	my @problems;
	for my $m (@{ $opt{mappings} })
	{
		my $expected = expected_objects($node, $m->{view}, $m->{skip}, $opt{dbname});
		my $held = mock_get("/_mock/objects/$m->{type}")->{results};
		my %by_key;
		for my $o (@$held)
		{
			next if $o->{archived};
			my $k = $o->{properties}{erp_id};
			next unless defined $k;
			push @{ $by_key{$k} }, $o;
		}
		for my $k (sort keys %$expected)
		{
			my $objs = $by_key{$k};
			if (!$objs)
			{
				push @problems, "$m->{name} $k: missing in HubSpot";
				next;
			}
			if (@$objs > 1)
			{
				push @problems, "$m->{name} $k: duplicated ("
				  . scalar(@$objs) . " objects)";
			}
			my $props = $objs->[0]{properties};
			for my $p (sort keys %{ $expected->{$k} })
			{
				next if $p eq 'company_erp_id' || $p eq 'hubspot_id';
				my $want = $expected->{$k}{$p};
				my $have = $props->{$p} // '';
				next if $want =~ /^\d{4}-\d\d-\d\dT/;	# timestamps: own test
				push @problems,
				  "$m->{name} $k: property $p is \"$have\", the ERP says \"$want\""
				  if $want ne $have;
			}
		}
		for my $k (sort keys %by_key)
		{
			next if exists $expected->{$k};
			push @problems, "$m->{name} $k: not in the ERP any more but not archived"
			  if $m->{archive};
		}
	}
	for my $a (@{ $opt{associations} // [] })
	{
		my $expected = expected_objects($node, $a->{view}, undef, $opt{dbname});
		my $targets = $a->{to_view} ? expected_objects($node, $a->{to_view}, undef, $opt{dbname}) : {};
		my $from = mock_get("/_mock/objects/$a->{from_type}")->{results};
		my $to = mock_get("/_mock/objects/$a->{to_type}")->{results};
		my %from_id = map { ($_->{properties}{erp_id} // '') => $_->{id} }
		  grep { !$_->{archived} } @$from;
		my %to_id = map { ($_->{properties}{erp_id} // '') => $_->{id} }
		  grep { !$_->{archived} } @$to;
		my %pairs;
		for my $x (@{ mock_get('/_mock/associations')->{results} })
		{
			next unless $x->{fromType} eq $a->{from_type} && $x->{toType} eq $a->{to_type};
			$pairs{"$x->{fromId}>$x->{toId}"} = 1;
		}
		for my $k (sort keys %$expected)
		{
			my $target = $expected->{$k}{ $a->{column} };
			next if !defined $target || $target eq '';
			# a target that left its view has no association to check
			next if $a->{to_view} && !exists $targets->{$target};
			my ($f, $t) = ($from_id{$k}, $to_id{$target});
			push @problems, "$a->{from_type} $k: association to $a->{to_type} $target missing"
			  unless $f && $t && $pairs{"$f>$t"};
		}
	}
	return @problems;
}

sub sample_mappings
{
	return (
		mappings => [
			{ name => 'companies', view => 'erp.hs_companies', type => 'companies', archive => 1 },
			{ name => 'contacts', view => 'erp.hs_contacts', type => 'contacts', archive => 0 },
			{ name => 'products', view => 'erp.hs_products', type => 'products', archive => 1 },
		],
		associations => [
			{ view => 'erp.hs_contacts', from_type => 'contacts', column => 'company_erp_id', to_type => 'companies', to_view => 'erp.hs_companies' },
		]);
}

# Assert that HubSpot (the mock) holds exactly what the ERP says.
sub state_ok
{
	my ($node, $name, %opt) = @_;
	%opt = sample_mappings() unless %opt;
	my @problems = compare_state($node, %opt);
	diag(join("\n", @problems)) if @problems;
	return ok(!@problems, $name);
}

# The mock's sequence number of the last call it saw, and the CRM calls
# (objects, associations) it saw after a given one: what a step cost.
sub mock_last_seq
{
	return mock_get('/_mock/requests')->{lastSeq} // 0;
}

sub crm_calls_since
{
	my ($since) = @_;
	my $r = mock_get('/_mock/requests?since=' . ($since // 0));
	return grep { $_->{path} =~ m{^/crm/v[34]/(objects|associations)} } @{ $r->{results} };
}

1;

# The Debian package: make test builds postgresql-15-erpcrm (make deb) and
# installs it on the machine; this suite checks what dpkg installed and
# delivers the README's worked example with Debian's own PostgreSQL 15 and
# the packaged erpcrm, whatever PG_CONFIG the other suites use.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename ();
use JSON::PP;
use ErpcrmTest;

my $package = 'postgresql-15-erpcrm';
my $pg = '/usr/lib/postgresql/15';

my ($out, $err) = ('', '');
IPC::Run::run([ 'dpkg-query', '-W', '-f', '${Status}|${Version}', $package ], '>', \$out, '2>', \$err);
unless ($out =~ /^install ok installed\|/)
{
	fail("$package is installed (make test installs it as root; or apt-get install ./deb/${package}_*.deb)");
	done_testing();
	exit;
}
my ($version) = $out =~ /\|(.*)$/;
note("$package $version");

# what dpkg installed, and that it is unchanged on disk
IPC::Run::run([ 'dpkg-query', '-L', $package ], '>', \$out);
my %files = map { $_ => 1 } split /\n/, $out;
ok($files{"$pg/lib/erpcrm.so"}, 'the package installs the library into Debian\'s PostgreSQL 15');
ok($files{'/usr/share/postgresql/15/extension/erpcrm.control'}, 'and the control file');
my $control = slurp_file('/usr/share/postgresql/15/extension/erpcrm.control');
my ($default) = $control =~ /default_version\s*=\s*'([^']+)'/;
ok($files{"/usr/share/postgresql/15/extension/erpcrm--1.0.sql"}
	  && scalar(grep { m{/extension/erpcrm--[\d.]+--\Q$default\E\.sql$} || m{/extension/erpcrm--\Q$default\E\.sql$} } keys %files),
	"and the SQL scripts up to the default version $default");
is($version =~ s/-.*//r, $default, 'the package\'s version is the extension\'s default version');
($out, $err) = ('', '');
IPC::Run::run([ 'dpkg', '--verify', $package ], '>', \$out, '2>', \$err);
is($out, '', 'every installed file is as the package shipped it (dpkg --verify)');

# PGXN's META.json and the Debian changelog say the same version
my $top = File::Basename::dirname(__FILE__) . '/../..';
my $meta = JSON::PP->new->decode(slurp_file("$top/META.json"));
is($meta->{'meta-spec'}{version}, '1.0.0', 'META.json parses, PGXN meta-spec 1.0.0');
like($meta->{version}, qr/^\Q$default\E\.\d+$/, 'META.json\'s version is the default version');
is($meta->{provides}{erpcrm}{version}, $meta->{version}, 'and so is the version it provides');
ok(-f "$top/$meta->{provides}{erpcrm}{file}", 'META.json names an existing SQL file');
like(slurp_file("$top/debian/changelog"), qr/^erpcrm \(\Q$default\E\)/, 'debian/changelog\'s latest version is the default version');

# the README's worked example, delivered by the packaged erpcrm
start_mock();
my $node = PostgreSQL::Test::Cluster->new('package', install_path => $pg);
$node->init;
my $port = ErpcrmTest::mock_port();
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'erpcrm'
erpcrm.database = 'postgres'
erpcrm.hubspot_url = 'http://127.0.0.1:$port'
erpcrm.token = 'test-token'
erpcrm.poll_interval = '1s'
erpcrm.max_calls_per_10s = 10000
});
$node->start;
like($node->safe_psql('postgres', 'SHOW server_version_num'), qr/^15/,
	'a cluster of Debian\'s PostgreSQL 15 runs, erpcrm preloaded');
load_erp($node);
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'erpcrm'"),
	$default, "CREATE EXTENSION installs version $default");
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip, domain) VALUES
	(1, 'Alfa sp. z o.o.', '526-000-12-46', 'alfa.pl'), (2, 'Beta S.A.', NULL, 'beta.pl');
INSERT INTO erp.persons VALUES (1, 1, 'adam@alfa.pl', 'Adam', 'Nowak');
INSERT INTO erp.products (sku, name, price) VALUES ('P-1', 'Regał', 1200);
});
ok(wait_synced($node), 'the packaged worker delivers');
state_ok($node, 'HubSpot holds what the ERP says');
$node->stop;
done_testing();

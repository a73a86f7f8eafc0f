# TLS is verified: a HubSpot mock with a certificate from a private CA is
# refused until erpcrm.ca_file names that CA; a certificate for another host
# name is refused even with the CA; so is one from another CA.  Refused
# calls never reach the server (no request is logged), the keys stay
# pending and erpcrm.worker says why; after the fix everything is delivered.
#
# The mocks here speak https on their control API too, so this test drives
# them with the curl command rather than through ErpcrmTest's http client.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(usleep);
use File::Basename qw(dirname);
use IPC::Run;
use ErpcrmTest;

my $json = JSON::PP->new->canonical;
my $dir = PostgreSQL::Test::Utils::tempdir();

# --- certificates: a CA, a server certificate for 127.0.0.1 and one for
# another name, both from that CA; a second CA for the wrong-CA case
sub openssl
{
	my @cmd = ('openssl', @_);
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(\@cmd, '>', \$stdout, '2>', \$stderr);
	die "openssl @_ failed: $stderr" unless $ok;
}

sub make_ca
{
	my ($name) = @_;
	openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
		'-nodes', '-keyout', "$dir/$name.key", '-out', "$dir/$name.pem", '-days', '2',
		'-subj', "/CN=erpcrm test $name",
		'-addext', 'basicConstraints=critical,CA:TRUE',
		'-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

sub make_server_cert
{
	my ($name, $san) = @_;
	open(my $fh, '>', "$dir/$name.ext") or die;
	print $fh "subjectAltName = $san\nbasicConstraints = CA:FALSE\n"
	  . "keyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n";
	close $fh;
	openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
		'-keyout', "$dir/$name.key", '-out', "$dir/$name.csr", '-subj', "/CN=$name");
	openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/ca.pem",
		'-CAkey', "$dir/ca.key", '-CAcreateserial', '-out', "$dir/$name.pem",
		'-days', '2', '-extfile', "$dir/$name.ext");
}

make_ca('ca');
make_ca('other-ca');
make_server_cert('localhost-ip', 'IP:127.0.0.1');
make_server_cert('wrong.example', 'DNS:wrong.example');

# --- two TLS mocks: the right certificate, and one for the wrong host name
my @mock_pids;
END { kill 'TERM', $_ for @mock_pids; }

sub start_tls_mock
{
	my ($cert) = @_;
	my $port_file = "$dir/$cert.port";
	my $script = dirname(__FILE__) . '/../mock/hubspot_mock.py';
	my $pid = fork();
	die "fork failed" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>', "$dir/$cert.mock.out");
		open(STDERR, '>', "$dir/$cert.mock.err");
		exec('python3', $script, '--port', '0', '--port-file', $port_file, '--seed', '42',
			'--tls-cert', "$dir/$cert.pem", '--tls-key', "$dir/$cert.key")
		  or die "cannot start the mock: $!";
	}
	push @mock_pids, $pid;
	for (1 .. 100)
	{
		last if -s $port_file;
		usleep(100_000);
	}
	my $port = slurp_file($port_file);
	chomp $port;
	return $port;
}

my ($port, $wrong_port);

# A control call over https, verified with the CA (so the certificates are
# known to be right: a refusal by erpcrm is erpcrm's own).
sub control
{
	my ($p, $method, $path, $body) = @_;
	my @cmd = ('curl', '-sS', '--fail', '--cacert', "$dir/ca.pem", '-X', $method,
		'--connect-to', "wrong.example:$p:127.0.0.1:$p");
	push @cmd, '-H', 'Content-Type: application/json', '--data-binary',
	  $json->encode($body) if defined $body;
	my $host = $p == $wrong_port ? 'wrong.example' : '127.0.0.1';
	push @cmd, "https://$host:$p$path";
	my ($out, $err);
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err) or die "curl $method $path: $err";
	return $out eq '' ? undef : $json->decode($out);
}

$port = start_tls_mock('localhost-ip');
$wrong_port = start_tls_mock('wrong.example');
for my $p ($port, $wrong_port)
{
	control($p, 'POST', '/_mock/reset', ErpcrmTest::default_mock_config());
}
is(control($port, 'GET', '/_mock/config')->{max_per_window}, 0,
	'the mock answers https with a certificate the CA verifies');

sub requests
{
	my ($p) = @_;
	return scalar @{ control($p, 'GET', '/_mock/requests')->{results} };
}

my $node = erpcrm_node('tls', conf => "erpcrm.hubspot_url = 'https://127.0.0.1:$port'\n"
	  . "erpcrm.retry_max = '500ms'\n");
load_erp($node);

sub worker
{
	return $node->safe_psql('postgres', 'SELECT state || \'|\' || detail FROM erpcrm.worker');
}

sub pending
{
	return $node->safe_psql('postgres',
		'SELECT sum(pending + in_flight + unfolded) || \'/\' || sum(synced) FROM erpcrm.status');
}

# What the views say against what the mock holds (erp_id and every property).
sub tls_state_ok
{
	my ($name) = @_;
	my @problems;
	for my $m ([ 'erp.hs_companies', 'companies' ], [ 'erp.hs_contacts', 'contacts' ],
		[ 'erp.hs_products', 'products' ])
	{
		my ($view, $type) = @$m;
		my $want = $json->decode($node->safe_psql('postgres', qq{
SELECT coalesce(json_object_agg(erp_id, p), '{}')
  FROM (SELECT v.erp_id::text AS erp_id,
			   (SELECT jsonb_object_agg(e.key, coalesce(e.value, ''))
				  FROM jsonb_each_text(to_jsonb(v) - 'company_erp_id' - 'last_order_at') e) AS p
		  FROM $view v) s}));
		my %have;
		for my $o (@{ control($port, 'GET', "/_mock/objects/$type")->{results} })
		{
			next if $o->{archived};
			push @{ $have{ $o->{properties}{erp_id} // '' } }, $o->{properties};
		}
		for my $k (sort keys %$want)
		{
			my $objs = $have{$k};
			if (!$objs) { push @problems, "$type $k: missing"; next; }
			push @problems, "$type $k: duplicated" if @$objs > 1;
			for my $p (sort keys %{ $want->{$k} })
			{
				my ($w, $h) = ($want->{$k}{$p}, $objs->[0]{$p} // '');
				push @problems, "$type $k: $p is \"$h\", the ERP says \"$w\"" if $w ne $h;
			}
		}
		for my $k (sort keys %have)
		{
			push @problems, "$type $k: not in the ERP" unless exists $want->{$k};
		}
	}
	diag(join("\n", @problems)) if @problems;
	return ok(!@problems, $name);
}

# --- no erpcrm.ca_file: the private CA is not trusted
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip) VALUES (1, 'Alfa', '5260001246'), (2, 'Beta', NULL);
INSERT INTO erp.persons VALUES (10, 1, 'anna@alfa.pl', 'Anna', 'Nowak');
INSERT INTO erp.products VALUES ('P-1', 'Śruba M8', 0.35);
});
# (the state is read once per poll: the worker retries every half second)
my $seen;
ok(poll_until('a certificate error', sub { ($seen = worker()) =~ /^backing off\|.*certificate/i }, 30),
	'without erpcrm.ca_file the certificate is refused and the worker backs off');
note("erpcrm.worker: $seen");
like($seen, qr/no answer from HubSpot: SSL certificate problem: unable to get local issuer certificate$/,
	'erpcrm.worker names the certificate problem');
like(pending(), qr{^[1-9]\d*/0$}, 'the keys stay pending, nothing is synced');
is(requests($port), 0, 'no request reached the server');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0',
	'a TLS failure fails no key (it is retried)');

# --- a CA file of another CA: refused too
my $since = $node->safe_psql('postgres', 'SELECT now()');
$node->append_conf('postgresql.conf', "erpcrm.ca_file = '$dir/other-ca.pem'\n");
$node->reload;
$node->safe_psql('postgres', "INSERT INTO erp.customers (id, name) VALUES (3, 'Gamma')");
ok(poll_until('refused with another CA', sub {
	$node->safe_psql('postgres', "SELECT count(*) > 0 FROM erpcrm.api_log
		WHERE http_status IS NULL AND called_at > '$since'") eq 't'
	  && ($seen = worker()) =~ /^backing off\|.*certificate/i && pending() =~ m{/0$} }, 30),
	'with the CA file of another CA the certificate is refused (calls after the reload fail)');
note("erpcrm.worker: $seen");
is(requests($port), 0, 'still no request reached the server');

# --- erpcrm.ca_file = the CA: delivered
$node->append_conf('postgresql.conf', "erpcrm.ca_file = '$dir/ca.pem'\n");
$node->reload;
ok(wait_synced($node, 60), 'with erpcrm.ca_file naming the CA and a reload, everything is delivered');
cmp_ok(requests($port), '>', 0, 'over https');
tls_state_ok('HubSpot holds exactly what the ERP says');

# --- a certificate from the CA, but for another host name: refused
$node->append_conf('postgresql.conf', "erpcrm.hubspot_url = 'https://127.0.0.1:$wrong_port'\n");
$node->reload;
$node->safe_psql('postgres', "UPDATE erp.customers SET name = 'Alfa 2' WHERE id = 1");
ok(poll_until('a host name error', sub {
	($seen = worker()) =~ /^backing off\|.*(subject name|host ?name|does not match|certificate)/i }, 30),
	'a certificate for another host name is refused even with the CA');
note("erpcrm.worker: $seen");
like($seen, qr/no answer from HubSpot: SSL: no alternative certificate subject name matches target host name '127\.0\.0\.1'$/,
	'erpcrm.worker says the name does not match');
like(pending(), qr{^[1-9]}, 'the changed key stays pending');
is(requests($wrong_port), 0, 'no request reached the server with the wrong name');

# --- back to the right server: the pending change arrives
$node->append_conf('postgresql.conf', "erpcrm.hubspot_url = 'https://127.0.0.1:$port'\n");
$node->reload;
ok(wait_synced($node, 60), 'back to the right server, the queue drains');
tls_state_ok('HubSpot holds exactly what the ERP says after the refusals');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', 'nothing failed');

$node->stop;
done_testing();

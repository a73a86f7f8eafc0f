# Long fault run (make check-long): under a stream of ERP writes,
#   - 20 rounds of "pg_ctl stop -m immediate" at a random point, and
#   - 20 rounds of SIGKILL of the worker at a random point;
# after each round the writes pause, the queue drains and the state
# comparison (state_ok) must find nothing missing, stale or duplicated.
#
# ROUNDS=n (environment) changes the number of rounds of each kind;
# REACTIVATE=0 leaves out the writes that take a company out of its view
# and back (archived in HubSpot, then a new object there), for figures of
# the crashes alone.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX ();
use Time::HiRes qw(time usleep);
use ErpcrmTest;

my $rounds = $ENV{ROUNDS} // 20;
my $reactivate = $ENV{REACTIVATE} // 1;
srand($ENV{SEED} // time());

start_mock();
my $node = erpcrm_node('crash_rounds',
	conf => "erpcrm.batch_size = 25\nrestart_after_crash = on\n");
load_erp($node);
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip)
	SELECT g, 'Firma ' || g, lpad(g::text, 10, '0') FROM generate_series(1, 200) g;
INSERT INTO erp.persons SELECT g, g, 'p' || g || '@firma.pl', 'Jan', 'Nowak'
	FROM generate_series(1, 200) g;
INSERT INTO erp.products SELECT 'S-' || g, 'Towar ' || g, g FROM generate_series(1, 100) g;
});
ok(wait_synced($node, 120), 'the initial data is delivered');

# --- the writer: a child process running small ERP transactions until told
# to pause (a file), acknowledging the pause (another file)
my $dir = PostgreSQL::Test::Utils::tempdir();
my $connstr = $node->connstr('postgres');
my $writer = fork();
die "fork failed" unless defined $writer;
if ($writer == 0)
{
	# (POSIX::_exit: the parent's END blocks must not run here)
	my ($ok, $failed) = (0, 0);
	my $next = 100_000;
	open(STDOUT, '>', "$dir/writer.out");
	open(STDERR, '>&', \*STDOUT);
	$SIG{TERM} = sub {
		open(my $fh, '>', "$dir/counts");
		print $fh "$ok $failed\n";
		close $fh;
		POSIX::_exit(0);
	};
	for (;;)
	{
		if (-e "$dir/pause")
		{
			open(my $fh, '>', "$dir/paused");
			close $fh;
			usleep(20_000);
			next;
		}
		unlink "$dir/paused";
		my $r = int(rand(100));
		my $c = 1 + int(rand(200));
		my $sql;
		if ($r < 25)
		{
			$next++;
			$sql = "INSERT INTO erp.customers (id, name, nip) VALUES ($next, 'Nowa $next', '$next');"
			  . "INSERT INTO erp.persons VALUES ($next, $next, 'n$next\@x.pl', 'Ala', 'Kot');";
		}
		elsif ($r < 50)
		{
			$sql = "UPDATE erp.customers SET name = 'Firma $c v' || (random() * 1000)::int,"
			  . " credit_limit = round((random() * 10000)::numeric, 2) WHERE id IN ($c, $c + 7);";
		}
		elsif ($r < 60 && $reactivate)
		{
			$sql = "UPDATE erp.customers SET active = NOT active WHERE id = $c;";
		}
		elsif ($r < 60)
		{
			$sql = "UPDATE erp.customers SET nip = lpad((random() * 1e9)::bigint::text, 10, '0') WHERE id = $c;";
		}
		elsif ($r < 75)
		{
			my $to = 1 + int(rand(200));
			$sql = "UPDATE erp.persons SET customer_id = $to, last_name = 'K$to' WHERE id = $c;";
		}
		elsif ($r < 80)
		{
			$sql = "DELETE FROM erp.persons WHERE id = (SELECT max(id) FROM erp.persons WHERE id > 100000);";
		}
		elsif ($r < 90)
		{
			my $s = 1 + int(rand(120));
			$sql = "INSERT INTO erp.products VALUES ('S-$s', 'Towar $s', $s)"
			  . " ON CONFLICT (sku) DO UPDATE SET price = erp.products.price + 1, active = true;";
		}
		else
		{
			my $s = 1 + int(rand(120));
			$sql = "UPDATE erp.products SET active = NOT active WHERE sku = 'S-$s';";
		}
		my $rc = system('psql', '-X', '-q', '-d', $connstr, '-v', 'ON_ERROR_STOP=1',
			'-c', "BEGIN; $sql COMMIT;");
		$rc == 0 ? $ok++ : $failed++;
		usleep(int(rand(30_000)));
	}
}

sub pause_writer
{
	open(my $fh, '>', "$dir/pause");
	close $fh;
	poll_until('the writer to pause', sub { -e "$dir/paused" }, 60);
}

sub resume_writer
{
	unlink "$dir/pause";
	poll_until('the writer to resume', sub { !-e "$dir/paused" }, 60);
}

# distinct problems seen over the run, by kind
my %figures = map { $_ => {} } qw(missing duplicated stale association unarchived other);
my @drain;

# Pause the writes, let the queue drain, compare; resume.
sub end_round
{
	my ($name) = @_;
	pause_writer();
	my $t0 = time();
	my $synced = wait_synced($node, 300);
	push @drain, time() - $t0;
	ok($synced, "$name: the queue drains");
	# state_ok, counting the kinds of problems for the figures
	my @problems = ErpcrmTest::compare_state($node, ErpcrmTest::sample_mappings());
	for (@problems)
	{
		my $kind = /association .* missing/ ? 'association'
		  : /missing/ ? 'missing'
		  : /duplicated/ ? 'duplicated'
		  : /property/ ? 'stale'
		  : /not archived/ ? 'unarchived'
		  : 'other';
		$figures{$kind}{$_} = 1;
	}
	diag(join("\n", @problems)) if @problems;
	ok(!@problems, "$name: nothing lost, stale or duplicated");
	resume_writer();
}

sub in_flight
{
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM erpcrm.sync_state WHERE state = 'in_flight'");
}

# --- stop -m immediate at random points
for my $round (1 .. $rounds)
{
	# half of the rounds wait for a batch in flight, half stop anywhere
	ErpcrmTest::mock_post('/_mock/faults', { slow_ms => int(rand(300)) });
	if ($round % 2)
	{
		poll_until('a batch in flight', sub { in_flight() > 0 }, 20);
	}
	usleep(int(rand(1_500_000)));
	$node->stop('immediate');
	$node->start;
	ErpcrmTest::mock_post('/_mock/faults', {});
	end_round("immediate stop $round");
}

# --- SIGKILL of the worker at random points
for my $round (1 .. $rounds)
{
	ErpcrmTest::mock_post('/_mock/faults', { slow_ms => int(rand(300)) });
	if ($round % 2)
	{
		poll_until('a batch in flight', sub { in_flight() > 0 }, 20);
	}
	usleep(int(rand(1_500_000)));
	my $pid = worker_pid($node);
	kill 'KILL', $pid if $pid;
	ok(poll_until('a new worker', sub {
		my $p = eval { worker_pid($node) } // '';
		$p ne '' && $p ne $pid }, 120), "SIGKILL $round: the worker is back");
	ErpcrmTest::mock_post('/_mock/faults', {});
	end_round("SIGKILL $round");
}

kill 'TERM', $writer;
waitpid($writer, 0);
my ($committed, $refused) = split ' ', slurp_file("$dir/counts");
my $objects = 0;
$objects += scalar(grep { !$_->{archived} } @{ ErpcrmTest::mock_get("/_mock/objects/$_")->{results} })
  for qw(companies contacts products);
my $stats = ErpcrmTest::mock_get('/_mock/stats');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', 'no key failed');

my @sorted = sort { $a <=> $b } @drain;
diag(sprintf("crash rounds: %d stop -m immediate + %d SIGKILL of the worker; "
	  . "ERP transactions committed %d (%d cut by the crashes); HubSpot calls %d; "
	  . "objects held %d; distinct problems over the run: objects lost %d, duplicated %d, "
	  . "stale %d, not archived %d, associations missing %d, other %d; "
	  . "drain after a round: median %.1f s, max %.1f s",
	$rounds, $rounds, $committed, $refused, $stats->{calls}, $objects,
	(map { scalar keys %{ $figures{$_} } } qw(missing duplicated stale unarchived association other)),
	$sorted[ int(@sorted / 2) ], $sorted[-1]));

$node->stop;
done_testing();

# Security: the token stays secret from every role but the superuser's
# postgresql.conf (SHOW, pg_settings, pg_file_settings, current_setting(),
# the views, error messages, the server log after reloads, 401s and bad
# values); an ERP application role cannot read or change anything of
# erpcrm's; names with quotes, semicolons and mixed case cannot inject SQL
# and are delivered; every SECURITY DEFINER function pins search_path; the
# worker runs and delivers as a non-superuser role (erpcrm.role).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

# Tokens distinctive enough that any trace of them is found.
my $token1 = 'pat-eu1-5ecret0ne-1111-2222-AAAAtok1';
my $token2 = 'pat-eu1-5ecretTw0-3333-4444-BBBBtok2';
my $token3 = 'pat-eu1-5ecretThr-5555-6666-CCCCtok3';	# in a token file
my $bad_value = 'pat-eu1-5ecretBAD 7777';	# a space: refused
my @secrets = ($token1, $token2, $token3, '5ecretBAD', 'test-token');

# Two custom object types receive the mappings of quoted names, so that
# their objects do not mix with the sample mappings' in the comparisons.
my $mock_config = ErpcrmTest::default_mock_config();
$mock_config->{tokens} = [ $token1, $token2, $token3 ];
$mock_config->{custom_object_types} = [ '2-101', '2-102' ];
$mock_config->{unique_properties}{'2-101'} = ['erp_id'];
$mock_config->{unique_properties}{'2-102'} = ['erp_id'];
$mock_config->{properties}{'2-101'} = [ { name => 'name' }, { name => 'nip' } ];
$mock_config->{properties}{'2-102'} = [ { name => 'email' } ];
start_mock(config => $mock_config);
my $node = erpcrm_node('security', conf => "erpcrm.token = '$token1'\n");
load_erp($node);

# Does any secret appear in this text?
sub leaks
{
	my ($text) = @_;
	return grep { index($text, $_) >= 0 } @secrets;
}

# Run SQL as a role; statements run on after errors.  Returns all output.
sub as_role
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ '-U', $role ], on_error_stop => 0);
	return "$out\n$err";
}

# Run SQL as a role, stopping at the first error: (ok, stdout, stderr).
sub try_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ '-U', $role ]);
	return ($ret == 0, $out, $err);
}

# --- roles
$node->safe_psql('postgres', q{
CREATE ROLE plain LOGIN;
CREATE ROLE mon LOGIN IN ROLE erpcrm_monitor;
CREATE ROLE adm LOGIN IN ROLE erpcrm_admin;
CREATE ROLE settings_reader LOGIN IN ROLE pg_read_all_settings;
CREATE ROLE pgmon LOGIN IN ROLE pg_monitor;
CREATE ROLE erp_app LOGIN;
CREATE SCHEMA app AUTHORIZATION erp_app;
GRANT USAGE ON SCHEMA erp TO erp_app, adm;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA erp TO erp_app;
GRANT SELECT ON ALL TABLES IN SCHEMA erp TO adm;
});
my @readers = qw(plain mon adm settings_reader pgmon erp_app);
my $triggers = $node->safe_psql('postgres', "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'erpcrm%'");

$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip) VALUES (1, 'Alfa', '5260001246');
INSERT INTO erp.products VALUES ('P-1', 'Śruba', 0.35);
});
ok(wait_synced($node), 'delivery works with the first token');

# --- the token cannot be learnt, whoever asks
my $probe = q{
SHOW erpcrm.token;
SHOW erpcrm.token_file;
SHOW ALL;
SELECT current_setting('erpcrm.token');
SELECT current_setting('erpcrm.token', true);
SELECT current_setting('erpcrm.token_file', true);
SELECT * FROM pg_settings;
SELECT * FROM pg_settings WHERE name LIKE 'erpcrm.%';
SELECT * FROM pg_show_all_settings();
SELECT * FROM pg_file_settings;
SELECT * FROM pg_show_all_file_settings();
SELECT * FROM pg_db_role_setting;
SELECT pg_read_file('postgresql.conf');
SELECT pg_read_file('postgresql.auto.conf');
SELECT * FROM pg_stat_activity;
SELECT * FROM erpcrm.worker;
SELECT * FROM erpcrm.status;
SELECT * FROM erpcrm.api_log;
SELECT * FROM erpcrm.failures;
SELECT * FROM erpcrm.control;
SELECT * FROM erpcrm.check_connection();
SELECT set_config('erpcrm.token', 'x', false);
SET erpcrm.token = 'x';
RESET erpcrm.token;
ALTER SYSTEM SET erpcrm.token = 'x';
ALTER ROLE CURRENT_USER SET erpcrm.token = 'x';
SELECT set_config('erpcrm.token', (SELECT current_setting('erpcrm.token')) || ' ', false);
};
for my $role (@readers)
{
	my $out = as_role($role, $probe);
	my @found = leaks($out);
	like($out, qr/erpcrm\.batch_size/, "the probes ran as $role (SHOW ALL answered)");
	ok(!@found, "$role cannot learn the token (SHOW, pg_settings, pg_file_settings, current_setting, views, errors)")
	  or diag("found: @found");
}
is(as_role('settings_reader', 'SHOW erpcrm.token'), "(set)\n",
	'a pg_read_all_settings member is shown "(set)"');
like(as_role('plain', 'SHOW erpcrm.token'), qr/must be superuser or have privileges of pg_read_all_settings to examine "erpcrm\.token"/,
	'a plain role may not even see whether it is set');
is($node->safe_psql('postgres', 'SHOW erpcrm.token'), '(set)',
	'not even the superuser is shown the token');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_settings WHERE name = 'erpcrm.token'"), '0',
	'pg_settings has no row for the token (its reset_val would be the token)');
my $conn = as_role('adm', 'SELECT "check", ok, detail FROM erpcrm.check_connection()');
like($conn, qr/token valid\|t\|/, 'the admin can check the connection');
ok(!leaks($conn), 'erpcrm.check_connection() does not show the token');

# --- the server log: a reload with a new token, 401s, a bad value, a file
my $log_offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "erpcrm.token = '$token2'\n");
$node->reload;
$node->safe_psql('postgres', "INSERT INTO erp.customers (id, name) VALUES (2, 'Beta')");
ok(wait_synced($node), 'delivery works after a reload with a new token');

ErpcrmTest::mock_post('/_mock/config', { tokens => [$token3] });
$node->safe_psql('postgres', "INSERT INTO erp.customers (id, name) VALUES (3, 'Gamma')");
ok(poll_until('a 401', sub {
	$node->safe_psql('postgres', 'SELECT state FROM erpcrm.worker') eq 'auth failed' }),
	'HubSpot answers 401 to the old token');
my $detail = $node->safe_psql('postgres', 'SELECT detail FROM erpcrm.worker');
like($detail, qr/401/, 'erpcrm.worker says why');
ok(!leaks($detail . $node->safe_psql('postgres', 'SELECT * FROM erpcrm.api_log')),
	'neither erpcrm.worker nor erpcrm.api_log shows a token after a 401');

$node->append_conf('postgresql.conf', "erpcrm.token = '$bad_value'\n");
$node->reload;
ok(poll_until('the refusal of the bad value', sub {
	slurp_file($node->logfile) =~ /erpcrm.token contains a character that cannot appear in a token/ }, 20),
	'a bad value is refused, and the log says why without showing it');

my $dir = PostgreSQL::Test::Utils::tempdir();
open(my $fh, '>', "$dir/token") or die;
print $fh "  $token3\n";
close $fh;
chmod 0600, "$dir/token";
$node->append_conf('postgresql.conf', "erpcrm.token = ''\nerpcrm.token_file = '$dir/token'\n");
$node->reload;
ok(wait_synced($node), 'a token read from erpcrm.token_file works after a reload');
for my $role (@readers)
{
	my @found = leaks(as_role($role, $probe . "SELECT pg_read_file('$dir/token');"));
	ok(!@found, "$role cannot learn the token from the token file") or diag("found: @found");
}
$node->restart;
$node->safe_psql('postgres', "INSERT INTO erp.customers (id, name) VALUES (4, 'Delta')");
ok(wait_synced($node), 'and after a restart');

my $log = substr(slurp_file($node->logfile), 0);
my @in_log = leaks($log);
ok(!@in_log, 'the server log holds no token after reloads, 401s, a bad value and a restart')
  or diag("found in the log: @in_log");
like(substr($log, $log_offset), qr/parameter "erpcrm.token" changed/,
	'the log says that the token changed, without its value');

# --- an ERP application role cannot read or change erpcrm
for my $sql (
	'SELECT * FROM erpcrm.outbox',
	'SELECT * FROM erpcrm.sync_state',
	'SELECT * FROM erpcrm.mapping',
	'SELECT * FROM erpcrm.api_call',
	'SELECT * FROM erpcrm.status',
	'SELECT * FROM erpcrm.worker',
	"INSERT INTO erpcrm.outbox VALUES (1, 'forged')",
	"UPDATE erpcrm.mapping SET paused = true",
	"DELETE FROM erpcrm.sync_state",
	"UPDATE erpcrm.control SET paused = true",
	"SELECT erpcrm.map('evil', 'erp.hs_products', 'products')",
	"SELECT erpcrm.unmap('products')",
	"SELECT erpcrm.pause()",
	"SELECT erpcrm.requeue_failed()",
	"SELECT erpcrm.resync('companies')",
	"SELECT erpcrm._fold()",
	"SELECT erpcrm._claim(1, 100)",
	"SELECT erpcrm._wake()",
	"SELECT * FROM erpcrm.check_connection()",
	"SELECT * FROM erpcrm.setup_hubspot()",
	"SET erpcrm.hubspot_url = 'http://evil.example'",
	"SELECT set_config('erpcrm.hubspot_url', 'http://evil.example', false)",
	"ALTER SYSTEM SET erpcrm.hubspot_url = 'http://evil.example'",
	"ALTER ROLE erp_app SET erpcrm.batch_size = 1",
	"ALTER TABLE erp.customers DISABLE TRIGGER ALL",
	"DROP TRIGGER " . $node->safe_psql('postgres',
		"SELECT quote_ident(min(tgname)) FROM pg_trigger WHERE tgrelid = 'erp.customers'::regclass AND tgname LIKE 'erpcrm%'")
	  . " ON erp.customers",
	"CREATE TABLE app.mine (id int); CREATE TRIGGER t AFTER INSERT ON app.mine FOR EACH ROW EXECUTE FUNCTION erpcrm.capture('1')")
{
	my ($ok, $out, $err) = try_as('erp_app', $sql);
	ok(!$ok && $err =~ /permission denied|must be|cannot be changed|not allowed|must have/,
		"the ERP role is refused: $sql") or diag("out: $out\nerr: $err");
}
my ($ok) = try_as('erp_app', q{
INSERT INTO erp.customers (id, name) VALUES (5, 'Zeta');
UPDATE erp.customers SET name = 'Alfa 2' WHERE id = 1;
});
ok($ok, 'the ERP role writes its tables');
ok(wait_synced($node), "the ERP role's writes are captured and delivered");
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.mapping WHERE paused'), '0',
	'nothing of erpcrm changed');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'erpcrm%' AND tgenabled <> 'O'"),
	'0', "the watches' triggers are all enabled");
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'erpcrm%'"),
	$triggers, "and all there");

# --- names with quotes, semicolons and mixed case
$node->safe_psql('postgres', q{
CREATE TABLE public.canary (x int);
CREATE SCHEMA "Erp ""Q""; DROP TABLE public.canary; --";
CREATE TABLE "Erp ""Q""; DROP TABLE public.canary; --"."Klienci'; DROP TABLE public.canary; --" (
	"Id ""Klienta""" integer PRIMARY KEY,
	"Nazwa; DROP TABLE public.canary" text,
	"MixedCase" text
);
CREATE TABLE "Erp ""Q""; DROP TABLE public.canary; --"."Osoby""" (
	"ID" integer PRIMARY KEY,
	"Klient" integer,
	"E-mail" text
);
CREATE VIEW "Erp ""Q""; DROP TABLE public.canary; --"."Hs Firmy"";--" AS
SELECT ('Q-' || "Id ""Klienta""")::text AS erp_id, "Nazwa; DROP TABLE public.canary" AS name,
	   "MixedCase" AS nip
  FROM "Erp ""Q""; DROP TABLE public.canary; --"."Klienci'; DROP TABLE public.canary; --";
CREATE VIEW "Erp ""Q""; DROP TABLE public.canary; --"."HsOsoby" AS
SELECT ('Q-' || "ID")::text AS erp_id, "E-mail" AS email, ('Q-' || "Klient")::text AS company_erp_id
  FROM "Erp ""Q""; DROP TABLE public.canary; --"."Osoby""";
});
my $schema = q{"Erp ""Q""; DROP TABLE public.canary; --"};
my $companies_view = qq{$schema."Hs Firmy"";--"};
my $contacts_view = qq{$schema."HsOsoby"};
my $q = sub { my $s = shift; $s =~ s/'/''/g; return "'$s'" };
my @steps = (
	"SELECT erpcrm.map('Firmy''; DROP TABLE public.canary; --', " . $q->($companies_view) . ", '2-101')",
	"SELECT erpcrm.map('Osoby \"x\"', " . $q->($contacts_view) . ", '2-102')",
	"SELECT erpcrm.associate('Osoby \"x\"', 'company_erp_id', 'Firmy''; DROP TABLE public.canary; --')",
	"SELECT erpcrm.watch('Firmy''; DROP TABLE public.canary; --', "
	  . $q->(qq{$schema."Klienci'; DROP TABLE public.canary; --"}) . ", "
	  . $q->(q{'Q-' || "Id ""Klienta"""}) . ")",
	"SELECT erpcrm.watch('Osoby \"x\"', " . $q->(qq{$schema."Osoby"""}) . ", "
	  . $q->(q{'Q-' || "ID"}) . ")");
for my $sql (@steps)
{
	my ($ok, $out, $err) = try_as('postgres', $sql);
	ok($ok, "works with quoted names: $sql") or diag($err);
}
$node->safe_psql('postgres', qq{
INSERT INTO $schema."Klienci'; DROP TABLE public.canary; --" VALUES
	(1, 'O''Reilly "Quoted"; DROP TABLE public.canary; --', 'MiXeD'),
	(2, E'Back\\\\slash \$\$ dollar', NULL);
INSERT INTO $schema."Osoby""" VALUES (10, 1, 'a\@b.pl'), (11, 2, 'c\@d.pl');
UPDATE $schema."Klienci'; DROP TABLE public.canary; --" SET "MixedCase" = 'x' WHERE "Id ""Klienta""" = 2;
});
ok(wait_synced($node), 'mappings of quoted names are delivered');
state_ok($node, 'HubSpot holds the objects of quoted views, with their associations',
	mappings => [
		{ name => 'firmy', view => $companies_view, type => '2-101', archive => 1 },
		{ name => 'osoby', view => $contacts_view, type => '2-102', archive => 1 },
	],
	associations => [
		{ view => $contacts_view, from_type => '2-102', column => 'company_erp_id',
		  to_type => '2-101', to_view => $companies_view },
	]);
my ($q1) = grep { ($_->{properties}{erp_id} // '') eq 'Q-1' }
  @{ ErpcrmTest::mock_get('/_mock/objects/2-101')->{results} };
is($q1->{properties}{name}, 'O\'Reilly "Quoted"; DROP TABLE public.canary; --',
	'a value with quotes and a semicolon arrives as it is');

# what must fail, fails cleanly
for my $case (
	[ "SELECT erpcrm.watch('Osoby \"x\"', " . $q->(qq{$schema."Osoby"""}) . ", " . $q->(q{"ID"::text); DROP TABLE public.canary; --}) . ")",
		qr/syntax error at or near "\)"/ ],
	[ "SELECT erpcrm.watch('Osoby \"x\"', " . $q->(qq{$schema."Osoby"""}) . ", 'pg_catalog.random()::text')",
		qr/volatile/ ],
	[ "SELECT erpcrm.watch('Osoby \"x\"', " . $q->(qq{$schema."Osoby"""}) . ", '(SELECT x FROM public.canary)::text')",
		qr/subquery/ ],
	[ "CREATE VIEW public.bad AS SELECT 1::text AS erp_id, 2 AS \"Na\"\"me; --\"; SELECT erpcrm.map('bad', 'public.bad', 'companies')",
		qr/cannot be a HubSpot property name/ ],
	[ "SELECT erpcrm.map('x', 'public.canary; DROP TABLE public.canary', 'companies')",
		qr/invalid name syntax/ ],
	[ "SELECT erpcrm.map('x', 'public.canary', 'companies; DROP TABLE public.canary')",
		qr/unknown HubSpot object type/ ],
	[ "SELECT erpcrm.map('x', 'public.canary', 'companies', id_property => 'erp_id\"; --')",
		qr/invalid id property/ ],
	[ "SELECT erpcrm.associate('Osoby \"x\"', 'company_erp_id\"; DROP TABLE public.canary; --', 'Osoby \"x\"')",
		qr/has no column/ ],
	[ "SELECT * FROM erpcrm.key_status(\$\$x'; DROP TABLE public.canary; --\$\$, 'y')",
		qr/does not exist/ ])
{
	my ($sql, $want) = @$case;
	my ($ok, $out, $err) = try_as('postgres', $sql);
	ok(!$ok && $err =~ $want, "refused cleanly: $sql") or diag("out: $out\nerr: $err");
}
# a key is data: one that looks like SQL is requeued as it is, as that
# string (seen in the outbox before the commit)
{
	my $evil = q{'; DROP TABLE public.canary; --};
	my ($ok, $out, $err) = try_as('postgres', qq{
BEGIN;
SELECT erpcrm.requeue('Osoby "x"', \$\$$evil\$\$);
SELECT count(*) FROM erpcrm.outbox WHERE erp_id = \$\$$evil\$\$;
COMMIT;});
	is($ok ? $out : $err, "t\n1", 'requeue() takes a key that looks like SQL as data, and records that string');
}
is($node->safe_psql('postgres', "SELECT to_regclass('public.canary') IS NOT NULL"), 't',
	'the canary table survived every name');

# --- every SECURITY DEFINER function pins search_path
my $unpinned = $node->safe_psql('postgres', q{
SELECT string_agg(p.oid::regprocedure::text, ', ')
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'erpcrm'
 WHERE p.prosecdef
   AND NOT COALESCE('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)});
is($unpinned, '', 'every SECURITY DEFINER function has SET search_path = pg_catalog, pg_temp');
cmp_ok($node->safe_psql('postgres', q{
SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'erpcrm' WHERE p.prosecdef}),
	'>=', 15, 'and there are SECURITY DEFINER functions to check');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'erpcrm'
 WHERE has_function_privilege('public', p.oid, 'EXECUTE')
   AND p.oid <> 'erpcrm.capture()'::regprocedure}), '0',
	'no function of erpcrm is executable by PUBLIC (but the trigger function, which cannot be called)');

# a hostile search_path of the caller changes nothing
$node->safe_psql('postgres', q{
CREATE SCHEMA evil;
GRANT USAGE, CREATE ON SCHEMA evil TO adm;
});
my ($hok, $hout, $herr) = try_as('adm', q{
CREATE FUNCTION evil.length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION evil.btrim(text) RETURNS text LANGUAGE sql AS $$ SELECT '' $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT 'epoch'::timestamptz $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_catalog.textne);
SET search_path = evil, pg_catalog;
SELECT erpcrm.requeue_failed() >= 0;
SELECT state FROM erpcrm.key_status('companies', '1');
SELECT erpcrm.pause('products');
SELECT erpcrm.resume('products');
});
ok($hok, 'the admin calls erpcrm with a hostile search_path') or diag($herr);
like($hout, qr/synced/, 'key_status is right despite a hijacking "=" operator');

# --- an erpcrm_admin is no superuser: the functions of its mapping view run
# with its own privileges, whoever reads the view (resync, the fold of a
# TRUNCATE, the worker), also those PostgreSQL evaluates while planning; and
# nothing in a view can define a mapping or change erpcrm's state.  The
# worker runs as the bootstrap superuser here (erpcrm.role is empty), so
# each of these would make mallory a superuser if it ran with the reader's
# privileges.
$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN IN ROLE erpcrm_admin;
CREATE SCHEMA mal AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA erp TO mallory;
});
my ($mok, $mout, $merr) = try_as('mallory', q{
CREATE TABLE mal.t (id int PRIMARY KEY);
INSERT INTO mal.t VALUES (1);
CREATE FUNCTION mal.backend() RETURNS text LANGUAGE sql
	RETURN CASE current_setting('application_name') WHEN 'erpcrm worker' THEN 'erpcrm worker'
		ELSE 'client backend' END;
CREATE TABLE mal.ran (who text, via text, backend text DEFAULT mal.backend());
CREATE TABLE mal.refused (call text, error text, backend text DEFAULT mal.backend());
CREATE TABLE mal.calls (call text);
-- become superuser if run as one, and say as whom it ran
CREATE FUNCTION mal.f(via text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO mal.ran (who, via) VALUES (current_user, via);
	IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
		EXECUTE 'ALTER ROLE mallory SUPERUSER';
	END IF;
	RETURN current_user;
END $$;
-- folded to a constant when the read query is planned
CREATE FUNCTION mal.g(int) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	RETURN mal.f('plan');
END $$;
-- try every call listed in mal.calls; keep each refusal
CREATE FUNCTION mal.h() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	c text;
BEGIN
	FOR c IN SELECT call FROM mal.calls LOOP
		BEGIN
			EXECUTE c;
			INSERT INTO mal.refused VALUES (c, NULL);
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO mal.refused VALUES (c, SQLERRM);
		END;
	END LOOP;
	RETURN 'h';
END $$;
CREATE TABLE mal.t2 (id int PRIMARY KEY);
CREATE VIEW mal.v2 AS SELECT id::text AS erp_id, mal.f('v2') AS name FROM mal.t2;
CREATE VIEW mal.v AS SELECT id::text AS erp_id, mal.f('read') AS name, mal.g(1) AS nip,
	mal.h() AS email FROM mal.t;
SELECT erpcrm.map('mal', 'mal.v', '2-101');
SELECT erpcrm.watch('mal', 'mal.t', 'id::text');
});
ok($mok, 'an admin maps and watches its own view and table') or diag($merr);
my $mallory_super = sub {
	$node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'") };
my $ran_as = sub {
	my ($via, $backend) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT who, ',') FROM mal.ran WHERE via = '$via' AND backend = '$backend'");
};
my $refusals = sub {
	my ($backend) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(error, '; ' ORDER BY error) FROM mal.refused WHERE backend = '$backend'");
};
{
	# the attack of issue 10: the view defines a mapping of another view
	# while someone else reads it, so that its owner is the reader
	$node->safe_psql('postgres', q{
INSERT INTO mal.calls VALUES
	($$SELECT erpcrm.map('mal2', 'mal.v2', '2-101')$$),
	($$SELECT erpcrm.resync('mal2')$$);
INSERT INTO mal.t2 VALUES (1);
});
	my ($rok, $rout, $rerr) = try_as('mallory', "SELECT erpcrm.resync('mal')");
	ok($rok, 'the admin resyncs its mapping') or diag($rerr);
	is($ran_as->('read', 'client backend'), 'mallory', 'erpcrm.resync() ran the view\'s function as its owner');
	is($mallory_super->(), 'f', 'erpcrm.resync() does not run the view\'s functions as superuser');

	# a superuser's routine resync
	$node->safe_psql('postgres', "TRUNCATE mal.ran, mal.refused; SELECT erpcrm.resync('mal')");
	is($ran_as->('read', 'client backend'), 'mallory',
		'a superuser\'s resync() runs the view\'s function as its owner');
	is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.mapping WHERE name = 'mal2'"), '0',
		'a view cannot define a mapping while a superuser resyncs it');
	like($refusals->('client backend'),
		qr/cannot execute erpcrm\.map\(.*security-restricted operation.*cannot execute erpcrm\.resync\(/s,
		'map() and resync() are refused inside the read, and say why');

	# the worker, as the bootstrap superuser, folds a TRUNCATE and plans and
	# reads the view (cumulative: the resyncs above woke it too)
	try_as('mallory', 'TRUNCATE mal.t; INSERT INTO mal.t VALUES (2), (3)');
	ok(poll_until('the worker reading the view', sub {
		$ran_as->('read', 'erpcrm worker') ne '' && $ran_as->('plan', 'erpcrm worker') ne ''
		  && $refusals->('erpcrm worker') ne '' }, 30),
		'the worker folds the TRUNCATE and reads the view');
	is($ran_as->('read', 'erpcrm worker'), 'mallory', 'the worker runs the view\'s function as its owner');
	is($ran_as->('plan', 'erpcrm worker'), 'mallory',
		'the worker plans the view as its owner (a function folded to a constant runs as the owner)');
	is($mallory_super->(), 'f', 'mallory did not become superuser through the worker');
	is($node->safe_psql('postgres', "SELECT count(*) FROM erpcrm.mapping WHERE name = 'mal2'"), '0',
		'a view cannot define a mapping while the worker reads it');
	like($refusals->('erpcrm worker'),
		qr/cannot execute erpcrm\.map\(.*security-restricted operation/s,
		'map() is refused inside the worker\'s read');

	# every function of erpcrm that may change something, called from a view
	$node->safe_psql('postgres', q{
TRUNCATE mal.calls, mal.refused;
INSERT INTO mal.calls
SELECT format('SELECT %s(%s)', p.oid::regproc,
	   (SELECT string_agg(CASE t
			WHEN 'text'::regtype THEN quote_literal('mal')
			WHEN 'regclass'::regtype THEN quote_literal('mal.t')
			WHEN 'regrole'::regtype THEN quote_literal('mallory')
			WHEN 'text[]'::regtype THEN quote_literal('{1}')
			WHEN 'integer[]'::regtype THEN quote_literal('{1}')
			WHEN 'bigint[]'::regtype THEN quote_literal('{1}')
			WHEN 'jsonb'::regtype THEN quote_literal('{}')
			WHEN 'regprocedure'::regtype THEN quote_literal('erpcrm._wake()')
			WHEN 'boolean'::regtype THEN 'false'
			WHEN 'interval'::regtype THEN quote_literal('1s')
			WHEN 'timestamptz'::regtype THEN 'now()'
			ELSE '1' END || '::' || t::text, ', ' ORDER BY o)
		  FROM unnest(p.proargtypes::regtype[]) WITH ORDINALITY AS a(t, o)))
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'erpcrm'
 WHERE p.provolatile = 'v' AND (p.prosecdef OR p.proconfig IS NOT NULL)
   AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
   AND has_function_privilege('mallory', p.oid, 'EXECUTE');
});
	my $ncalls = $node->safe_psql('postgres', 'SELECT count(*) FROM mal.calls');
	cmp_ok($ncalls, '>=', 20, "$ncalls volatile functions of erpcrm to call from a view");
	$node->safe_psql('postgres', "SELECT erpcrm.resync('mal')");
	is($node->safe_psql('postgres', q{
SELECT string_agg(call || ': ' || COALESCE(error, 'ran'), E'\n') FROM mal.refused
 WHERE error IS NULL OR error NOT LIKE 'cannot execute erpcrm.% within security-restricted operation'}),
		'', 'every one of them is refused inside a security-restricted read');
	is($node->safe_psql('postgres', "SELECT count(DISTINCT call) FROM mal.refused WHERE backend = 'client backend'"),
		$ncalls, 'and each was tried');
	is($mallory_super->(), 'f', 'mallory is still no superuser');
}

# map() called from an admin's SECURITY DEFINER function that a superuser
# runs: the role that asks is the function's owner, not the superuser
{
	my ($dok, $dout, $derr) = try_as('mallory', q{
CREATE FUNCTION mal.helper() RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	RETURN erpcrm.map('mal3', 'mal.v2', '2-101');
END $$;
});
	ok($dok, 'an admin writes a SECURITY DEFINER function that calls map()') or diag($derr);
	$node->safe_psql('postgres', 'SELECT mal.helper()');
	is($node->safe_psql('postgres', "SELECT owner FROM erpcrm.mapping WHERE name = 'mal3'"), 'mallory',
		'the mapping it defines, run by a superuser, belongs to the function\'s owner');
	$node->safe_psql('postgres', "SELECT erpcrm.resync('mal3')");
	is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT who, ',') FROM mal.ran WHERE via = 'v2'"),
		'mallory', 'so its view runs as that owner');
	is($mallory_super->(), 'f', 'and mallory is still no superuser');
	$node->safe_psql('postgres', "SELECT erpcrm.unmap('mal3')");
}
$node->safe_psql('postgres', q{
ALTER ROLE mallory NOSUPERUSER;
TRUNCATE mal.calls;
SELECT erpcrm.unmap('mal');
});

# unwatch() asks for the same privilege as watch(): TRIGGER on the table
{
	my $before = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_trigger WHERE tgrelid = 'erp.customers'::regclass AND tgname LIKE 'erpcrm%'");
	my ($uok, $uout, $uerr) = try_as('mallory', "SELECT erpcrm.unwatch('companies', 'erp.customers')");
	ok(!$uok && $uerr =~ /permission denied to unwatch table erp\.customers/,
		'an admin without TRIGGER on a table cannot unwatch it') or diag("out: $uout\nerr: $uerr");
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_trigger WHERE tgrelid = 'erp.customers'::regclass AND tgname LIKE 'erpcrm%'"),
		$before, 'and its capture triggers are still there');
	($uok, $uout, $uerr) = try_as('mallory', "SELECT erpcrm.unwatch('companies', 'erp.customers', 'no such key')");
	ok(!$uok && $uerr =~ /permission denied to unwatch/, 'also for a key it does not watch')
	  or diag("out: $uout\nerr: $uerr");
	($uok, $uout, $uerr) = try_as('mallory', "SELECT erpcrm.unmap('products')");
	ok(!$uok && $uerr =~ /permission denied to unwatch table erp\.products/,
		'nor drop a mapping that watches a table it may not trigger') or diag("out: $uout\nerr: $uerr");
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM erpcrm.mapping WHERE name = 'products'"), '1', 'which stays');
}

# --- the worker as a non-superuser role, with no grant at all: mapping
# views are planned and read as the mapping's owner
# (PostgreSQL 15 lets a background worker connect only as a role with LOGIN:
# until the role has it, the worker waits and says so)
my $wlog_offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "erpcrm.role = 'erpcrm_worker'\n");
$node->reload;
ok(poll_until('the wait for the role', sub {
	$node->safe_psql('postgres', 'SELECT detail FROM erpcrm.worker')
	  eq 'waiting for role "erpcrm_worker" (erpcrm.role) to be created' }, 30),
	'erpcrm.role naming a role that does not exist: erpcrm.worker says the worker waits for it');
$node->safe_psql('postgres', q{
CREATE ROLE erpcrm_worker NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE IN ROLE erpcrm_admin;
});
ok(poll_until('the wait for LOGIN', sub {
	$node->safe_psql('postgres', 'SELECT detail FROM erpcrm.worker')
	  eq 'waiting for role "erpcrm_worker" (erpcrm.role) to have LOGIN' }, 30),
	'a worker role without LOGIN: erpcrm.worker says it waits for LOGIN');
is($node->safe_psql('postgres', 'SELECT state FROM erpcrm.worker'), 'not configured',
	'in state "not configured"');
$node->safe_psql('postgres', 'ALTER ROLE erpcrm_worker LOGIN');
ok(poll_until('the worker as erpcrm_worker', sub {
	$node->safe_psql('postgres',
		"SELECT usename FROM pg_stat_activity WHERE backend_type = 'erpcrm worker'") eq 'erpcrm_worker' }, 60),
	'the worker starts as the role erpcrm.role names once it can log in');
unlike(substr(slurp_file($node->logfile), $wlog_offset), qr/FATAL/,
	'no FATAL in the log while it waited');
is($node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'erpcrm_worker'"), 'f',
	'which is no superuser');
is($node->safe_psql('postgres', q{
SELECT bool_or(has_schema_privilege('erpcrm_worker', n.oid, 'USAGE'))
	OR has_table_privilege('erpcrm_worker', 'erp.hs_products', 'SELECT')
  FROM pg_namespace n WHERE n.nspname = 'erp' OR n.nspname LIKE 'Erp "Q"%'}), 'f',
	'and has no privilege on the ERP\'s schemas or views');
$node->safe_psql('postgres', qq{
INSERT INTO erp.customers (id, name, nip) VALUES (6, 'Eta', '1112223344');
UPDATE erp.customers SET name = 'Beta 2' WHERE id = 2;
DELETE FROM erp.products WHERE sku = 'P-1';
INSERT INTO erp.products VALUES ('P-2', 'Nakrętka', 0.12);
INSERT INTO erp.persons VALUES (20, 6, 'e\@eta.pl', 'Ewa', 'Eta');
INSERT INTO $schema."Klienci'; DROP TABLE public.canary; --" VALUES (3, 'Trzeci', NULL);
});
ok(wait_synced($node), 'the non-superuser worker delivers');
state_ok($node, 'HubSpot holds what the ERP says, delivered by the non-superuser worker');
is($node->safe_psql('postgres', 'SELECT count(*) FROM erpcrm.failures'), '0', 'and fails nothing');
my ($q3) = grep { ($_->{properties}{erp_id} // '') eq 'Q-3' }
  @{ ErpcrmTest::mock_get('/_mock/objects/2-101')->{results} };
ok($q3, 'the quoted mapping is delivered by the non-superuser worker too');

# a database that does not exist yet is waited for too (with a role set)
$wlog_offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "erpcrm.database = 'erp_later'\n");
$node->reload;
ok(poll_until('the wait for the database', sub {
	$node->safe_psql('postgres', 'SELECT detail FROM erpcrm.worker')
	  eq 'waiting for database "erp_later" (erpcrm.database) to be created' }, 30),
	'erpcrm.database naming a database that does not exist: erpcrm.worker says the worker waits for it');
$node->append_conf('postgresql.conf', "erpcrm.database = 'postgres'\n");
$node->reload;
ok(poll_until('the worker back', sub {
	$node->safe_psql('postgres',
		"SELECT usename FROM pg_stat_activity WHERE backend_type = 'erpcrm worker' AND datname = 'postgres'") eq 'erpcrm_worker' }, 60),
	'and starts in it once it is there');
unlike(substr(slurp_file($node->logfile), $wlog_offset), qr/FATAL/, 'with no FATAL in the log');

ok(!leaks(slurp_file($node->logfile)), 'the server log holds no token at the end');
$node->stop;
done_testing();

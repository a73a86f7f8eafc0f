# The complete install script and the upgrade chain make the same erpcrm.
#
# A fresh CREATE EXTENSION erpcrm (sql/erpcrm--<current>.sql) and erpcrm
# installed as each released version, then ALTER EXTENSION erpcrm UPDATE,
# must have the same catalog: functions (signature, body, volatility,
# SECURITY DEFINER, settings, owner), views, tables with their columns,
# defaults, constraints, indexes and triggers, event triggers, sequences,
# types, privileges, comments and what pg_dump keeps.  Every difference is
# printed, one line per attribute, "fresh" or "upgraded" side.
#
# The comparison is shown to catch each kind of difference: a copy of the
# fresh database with one change of each kind differs by exactly those.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('catalog');
$node->init;
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'erpcrm'
erpcrm.database = 'postgres'
});
$node->start;

# One line per attribute of every object erpcrm owns, sorted.  Function
# bodies and view definitions come one line per source line, so that a
# difference shows the line that differs.
my $describe = q{
WITH ext AS (SELECT oid, extnamespace FROM pg_extension WHERE extname = 'erpcrm'),
members AS (
	SELECT d.classid, d.objid FROM pg_depend d, ext
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
fn AS (
	SELECT p.* FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid),
rel AS (
	SELECT c.* FROM pg_class c, ext WHERE c.relnamespace = ext.extnamespace),
acls(what, acl) AS (
	SELECT 'schema ' || n.oid::regnamespace, COALESCE(n.nspacl, acldefault('n'::"char", n.nspowner))
	  FROM ext JOIN pg_namespace n ON n.oid = ext.extnamespace
	UNION ALL
	SELECT c.oid::regclass::text,
		   COALESCE(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))
	  FROM rel c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
	UNION ALL
	SELECT 'function ' || f.oid::regprocedure, COALESCE(f.proacl, acldefault('f'::"char", f.proowner))
	  FROM fn f
	UNION ALL
	SELECT 'type ' || t.oid::regtype, COALESCE(t.typacl, acldefault('T'::"char", t.typowner))
	  FROM pg_type t JOIN ext ON t.typnamespace = ext.extnamespace),
lines(l) AS (
	SELECT 'extension: version ' || e.extversion || ', relocatable ' || e.extrelocatable
		   || ', schema ' || e.extnamespace::regnamespace
	  FROM pg_extension e WHERE e.extname = 'erpcrm'
	UNION ALL
	SELECT 'member: ' || pg_describe_object(m.classid, m.objid, 0) FROM members m
	UNION ALL
	/* pg_get_functiondef: arguments and defaults, result, language,
	 * volatility, strictness, SECURITY DEFINER, parallel, cost, SET, body */
	SELECT 'function ' || f.oid::regprocedure || ': ' || d.line
	  FROM fn f, LATERAL unnest(string_to_array(pg_get_functiondef(f.oid), E'\n')) AS d(line)
	 WHERE f.prokind <> 'a'
	UNION ALL
	SELECT 'function ' || f.oid::regprocedure || ': owner ' || f.proowner::regrole
		   || ', leakproof ' || f.proleakproof || ', kind ' || f.prokind::text FROM fn f
	UNION ALL
	SELECT 'relation ' || c.oid::regclass || ': kind ' || c.relkind::text || ', owner ' || c.relowner::regrole
		   || ', persistence ' || c.relpersistence::text
		   || ', options ' || COALESCE(array_to_string(c.reloptions, ','), '-')
	  FROM rel c
	UNION ALL
	SELECT 'view ' || c.oid::regclass || ': ' || d.line
	  FROM rel c, LATERAL unnest(string_to_array(pg_get_viewdef(c.oid), E'\n')) AS d(line)
	 WHERE c.relkind IN ('v', 'm')
	UNION ALL
	/* columns in their order (dropped ones left out) */
	SELECT 'column ' || c.oid::regclass || '.' || quote_ident(a.attname) || ': #'
		   || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)
		   || ' ' || format_type(a.atttypid, a.atttypmod)
		   || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		   || COALESCE(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
		   || CASE a.attidentity WHEN 'd' THEN ' identity by default'
								 WHEN 'a' THEN ' identity always' ELSE '' END
		   || CASE WHEN a.attgenerated <> '' THEN ' generated' ELSE '' END
		   || ', storage ' || a.attstorage::text
		   || COALESCE(', collation ' || NULLIF(a.attcollation, 0)::regcollation::text, '')
		   || COALESCE(', acl ' || a.attacl::text, '')
	  FROM rel c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
	UNION ALL
	SELECT 'constraint ' || k.conrelid::regclass || '.' || quote_ident(k.conname) || ': '
		   || pg_get_constraintdef(k.oid)
		   || CASE WHEN k.condeferrable THEN ' deferrable' ELSE '' END
	  FROM pg_constraint k JOIN rel c ON c.oid = k.conrelid
	UNION ALL
	SELECT 'index ' || i.indexrelid::regclass || ': ' || pg_get_indexdef(i.indexrelid)
	  FROM pg_index i JOIN rel c ON c.oid = i.indrelid
	UNION ALL
	SELECT 'trigger ' || t.tgrelid::regclass || '.' || quote_ident(t.tgname) || ': '
		   || pg_get_triggerdef(t.oid) || ', enabled ' || t.tgenabled::text
	  FROM pg_trigger t JOIN rel c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
	UNION ALL
	SELECT 'sequence ' || s.seqrelid::regclass || ': ' || format_type(s.seqtypid, NULL)
		   || ' start ' || s.seqstart || ' increment ' || s.seqincrement
		   || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache
		   || ' cycle ' || s.seqcycle
		   || COALESCE(' owned by ' || (SELECT d.refobjid::regclass || '.' || quote_ident(a.attname)
										  FROM pg_depend d JOIN pg_attribute a
											ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
										 WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
										   AND d.refclassid = 'pg_class'::regclass
										   AND d.deptype IN ('a', 'i')), '')
	  FROM pg_sequence s JOIN rel c ON c.oid = s.seqrelid
	UNION ALL
	SELECT 'type ' || t.oid::regtype || ': kind ' || t.typtype::text || ', owner ' || t.typowner::regrole
		   || COALESCE(', of ' || NULLIF(t.typrelid, 0)::regclass::text, '')
		   || COALESCE(', base ' || NULLIF(t.typbasetype, 0)::regtype::text, '')
	  FROM pg_type t, ext WHERE t.typnamespace = ext.extnamespace
	UNION ALL
	SELECT 'event trigger ' || quote_ident(e.evtname) || ': on ' || e.evtevent
		   || ' execute ' || e.evtfoid::regprocedure || ', enabled ' || e.evtenabled::text
		   || ', owner ' || e.evtowner::regrole
		   || COALESCE(', tags ' || array_to_string(e.evttags, ','), '')
	  FROM pg_event_trigger e
	UNION ALL
	/* privileges, each grant on a line, whatever order they were made in */
	SELECT 'privilege on ' || a.what || ': '
		   || CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END
		   || ' ' || x.privilege_type || ' from ' || x.grantor::regrole
		   || CASE WHEN x.is_grantable THEN ' with grant option' ELSE '' END
	  FROM acls a, LATERAL aclexplode(a.acl) x
	UNION ALL
	/* comments on the extension's objects and on their columns */
	SELECT 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
	  FROM pg_description d
	 WHERE (d.classoid, d.objoid) IN (SELECT classid, objid FROM members)
		OR (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM rel))
	UNION ALL
	/* what pg_dump dumps of the extension's tables */
	SELECT 'dumped: ' || c.cfg::regclass || COALESCE(' ' || NULLIF(c.cond, ''), '')
	  FROM pg_extension e, LATERAL unnest(e.extconfig, e.extcondition) AS c(cfg, cond)
	 WHERE e.extname = 'erpcrm'
	UNION ALL
	SELECT 'rows of ' || c.cfg::regclass || ': ' || CASE c.cfg::regclass::text
		WHEN 'erpcrm.control' THEN (SELECT string_agg(x::text, ' ') FROM erpcrm.control x)
		ELSE NULL END
	  FROM pg_extension e, LATERAL unnest(e.extconfig) AS c(cfg)
	 WHERE e.extname = 'erpcrm' AND c.cfg = 'erpcrm.control'::regclass
)
SELECT l FROM lines ORDER BY l COLLATE "C";
};

sub catalog_of
{
	my ($db) = @_;
	return [ split /\n/, $node->safe_psql($db, $describe) ];
}

# Lines of @$a not in @$b (as many times as they occur more often).
sub missing_from
{
	my ($a, $b) = @_;
	my %n;
	$n{$_}++ for @$b;
	return grep { !($n{$_} && $n{$_}--) } @$a;
}

# Compare two catalogs; print every line that differs.  Returns the lines
# that differ, each prefixed with the side it is on.
sub compare
{
	my ($fresh, $other, $other_name, $quiet) = @_;
	my @diff = ((map { "only in fresh:    $_" } missing_from($fresh, $other)),
				(map { "only in $other_name: $_" } missing_from($other, $fresh)));
	if (@diff)
	{
		my $report = join("\n", "$other_name and the fresh install differ:", @diff);
		$quiet ? note($report) : diag($report);
	}
	return @diff;
}

my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'erpcrm'");
my @released = grep { $_ ne $current }
	split /\n/, $node->safe_psql('postgres',
		"SELECT version FROM pg_available_extension_versions WHERE name = 'erpcrm' ORDER BY version");
ok(scalar(@released) >= 3, "released versions to upgrade from: @released");
ok(-e $node->config_data('--sharedir') . "/extension/erpcrm--$current.sql",
	"a complete install script for $current is installed");

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION erpcrm');
my $fresh = catalog_of('fresh');
ok(scalar(@$fresh) > 1000, 'the fresh install is described (' . scalar(@$fresh) . ' lines)');
ok((grep { /^function erpcrm\.map\(text,regclass,text,text,text,integer\):\s+batch_size = map\.batch_size, owner = erpcrm\._caller\(\)/ } @$fresh),
	'the description reaches into function bodies');

for my $from (@released)
{
	(my $db = "from_$from") =~ s/\./_/g;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION erpcrm VERSION '$from'");
	$node->safe_psql($db, 'ALTER EXTENSION erpcrm UPDATE');
	my @diff = compare($fresh, catalog_of($db), "upgraded from $from");
	is(scalar(@diff), 0, "installed as $from and updated, erpcrm has the catalog of a fresh $current");
}

# The comparison catches each kind of difference, and names it.
$node->safe_psql('postgres', 'CREATE DATABASE altered TEMPLATE fresh');
$node->safe_psql('altered', q{
CREATE OR REPLACE FUNCTION erpcrm._valid_property_name(n text)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN n ~ '^[a-z][a-z0-9_]{0,98}$';
ALTER FUNCTION erpcrm._outstanding(integer) VOLATILE;
ALTER FUNCTION erpcrm._mapping_problem(integer) RESET lock_timeout;
ALTER FUNCTION erpcrm._relation_name(oid) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION erpcrm._caller() TO PUBLIC;
REVOKE SELECT ON erpcrm.unlinked FROM pg_monitor;
ALTER TABLE erpcrm.mapping ALTER COLUMN id_property SET DEFAULT 'id';
ALTER TABLE erpcrm.sync_key ADD COLUMN extra text;
CREATE INDEX extra_index ON erpcrm.api_call (mapping_id);
COMMENT ON FUNCTION erpcrm.pause(text) IS 'stop';
CREATE OR REPLACE VIEW erpcrm.failures AS
SELECT m.name AS mapping, s.erp_id, s.hubspot_id, s.attempts, s.http_status,
	   s.error_category, s.error_message, s.correlation_id, s.error_at,
	   s.dirty_since
  FROM erpcrm.sync_state s
  JOIN erpcrm.mapping m USING (mapping_id)
 WHERE s.state IN ('failed', 'discarded');
ALTER EVENT TRIGGER erpcrm_sql_drop DISABLE;
UPDATE pg_extension SET extcondition = array_replace(extcondition, 'WHERE false', 'WHERE true')
 WHERE extname = 'erpcrm';
});
# (printed to the test's log only)
my @diff = compare($fresh, catalog_of('altered'), 'altered', 1);
my %expect = (
	'function body' => qr/^only in \w+: +function erpcrm\._valid_property_name\(text\): RETURN \(n ~ '\^\[a-z\]\[a-z0-9_\]\{0,98\}\$'::text\)$/,
	'volatility' => qr/^only in fresh: +function erpcrm\._outstanding\(integer\):  STABLE$/,
	'a setting of a function' => qr/^only in fresh: +function erpcrm\._mapping_problem\(integer\):  SET lock_timeout TO '50ms'$/,
	'SECURITY DEFINER' => qr/^only in \w+: +function erpcrm\._relation_name\(oid\):  .*SECURITY DEFINER/,
	'a grant on a function' => qr/^only in \w+: +privilege on function erpcrm\._caller\(\): PUBLIC EXECUTE/,
	'a grant on a view' => qr/^only in fresh: +privilege on erpcrm\.unlinked: pg_monitor SELECT/,
	'a column default' => qr/^only in \w+: +column erpcrm\.mapping\.id_property: #5 text not null default 'id'::text/,
	'a column' => qr/^only in \w+: +column erpcrm\.sync_key\.extra: #\d+ text/,
	'an index' => qr/^only in \w+: +index erpcrm\.extra_index: /,
	'a comment' => qr/^only in \w+: +comment on function erpcrm\.pause\(text\): stop$/,
	'a view' => qr/^only in \w+: +view erpcrm\.failures: .*WHERE \(s\.state = ANY/,
	'an event trigger' => qr/^only in \w+: +event trigger erpcrm_sql_drop: .*enabled D/,
	'what pg_dump keeps' => qr/^only in \w+: +dumped: erpcrm\.control WHERE true$/,
);
for my $what (sort keys %expect)
{
	ok((grep { $_ =~ $expect{$what} } @diff), "a difference in $what is found and printed");
}

$node->stop;
done_testing();

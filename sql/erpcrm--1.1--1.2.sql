/* erpcrm--1.1--1.2.sql: hardening, first run in the field, flat cost at scale */

\echo Use "ALTER EXTENSION erpcrm UPDATE TO '1.2'" to load this file. \quit

/*
 * Each part below belongs to one line of work; keep additions inside their
 * part so that parallel work merges cleanly.
 */

-- ===================================================================
-- Part 1: security (who runs what, as whom)
-- ===================================================================

/*
 * unwatch() and unmap() drop capture triggers: they ask for the privilege
 * watch() asks for, TRIGGER on the table (or its ownership), so that an
 * erpcrm_admin cannot stop the capture of a table it could not watch.
 */
CREATE OR REPLACE FUNCTION erpcrm.unwatch(mapping text, source regclass, key text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(mapping);
	w record;
	n integer := 0;
BEGIN
	IF EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = unwatch.source)
	   AND NOT pg_catalog.has_table_privilege(erpcrm._caller(), unwatch.source, 'TRIGGER') THEN
		RAISE EXCEPTION 'permission denied to unwatch table %', unwatch.source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Unwatching a table drops triggers on it, which needs its ownership or the TRIGGER privilege, as watching it does.';
	END IF;
	FOR w IN SELECT x.watch_id FROM erpcrm.watch x
			  WHERE x.mapping_id = m.mapping_id AND x.source = unwatch.source
				AND (unwatch.key IS NULL OR x.key_expr = unwatch.key)
	LOOP
		PERFORM erpcrm._drop_watch(w.watch_id);
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm.unwatch(text, regclass, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.unwatch(text, regclass, text) TO erpcrm_admin;

CREATE OR REPLACE FUNCTION erpcrm.unmap(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(name);
	users text;
	denied regclass;
	w record;
BEGIN
	SELECT pg_catalog.string_agg(DISTINCT o.name, ', ') INTO users
	  FROM erpcrm.association a JOIN erpcrm.mapping o ON o.mapping_id = a.mapping_id
	 WHERE a.target_id = m.mapping_id AND a.mapping_id <> m.mapping_id;
	IF users IS NOT NULL THEN
		RAISE EXCEPTION 'mapping "%" is the target of associations of %', name, users
			USING ERRCODE = 'dependent_objects_still_exist',
				  HINT = 'Remove those associations with erpcrm.dissociate() first.';
	END IF;
	SELECT x.source INTO denied FROM erpcrm.watch x
	 WHERE x.mapping_id = m.mapping_id
	   AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = x.source)
	   AND NOT pg_catalog.has_table_privilege(erpcrm._caller(), x.source, 'TRIGGER')
	 LIMIT 1;
	IF denied IS NOT NULL THEN
		RAISE EXCEPTION 'permission denied to unwatch table %', denied
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Dropping mapping "%s" drops its triggers on that table, which needs its ownership or the TRIGGER privilege.', name);
	END IF;
	FOR w IN SELECT * FROM erpcrm.watch x WHERE x.mapping_id = m.mapping_id LOOP
		PERFORM erpcrm._drop_watch(w.watch_id);
	END LOOP;
	DELETE FROM erpcrm.outbox o WHERE o.mapping_id = m.mapping_id;
	DELETE FROM erpcrm.mapping x WHERE x.mapping_id = m.mapping_id;
END
$$;
REVOKE ALL ON FUNCTION erpcrm.unmap(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.unmap(text) TO erpcrm_admin;

/*
 * "Retry now": after the cause of a back-off is fixed (HubSpot back, a new
 * token, a view repaired), end the wait at once.  A reload does the same.
 */
CREATE FUNCTION erpcrm.retry_now()
RETURNS boolean
AS 'MODULE_PATHNAME', 'erpcrm_retry_now_v1'
LANGUAGE C;
COMMENT ON FUNCTION erpcrm.retry_now() IS 'end any back-off of the worker and wake it; returns whether a worker was there';
REVOKE ALL ON FUNCTION erpcrm.retry_now() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.retry_now() TO erpcrm_admin;


-- ===================================================================
-- Part 2: DDL, dump/restore and watches
-- ===================================================================

/*
 * Key expressions are compiled from their text (key_expr) by the capture
 * trigger, against the table as it is now, and again after every change of
 * the table: the text survives DDL and pg_dump, column numbers do not.
 * key_tree keeps the last compiled form, which serves to write a key with
 * new column names after a column is renamed.
 *
 * A watch may fan out: its key query, run by the worker when it folds (never
 * in the ERP's transaction), turns the keys its trigger captured ($1, text[])
 * into keys of the mapping (a product dirties every line of that product).
 * Captured keys wait in erpcrm.fan_out, which has the outbox's layout.
 */
ALTER TABLE erpcrm.watch
	ADD COLUMN key_query text,
	ADD COLUMN owner regrole,
	ADD COLUMN problem text;
COMMENT ON COLUMN erpcrm.watch.key_query IS 'fan-out: a SELECT that turns the captured keys ($1, text[]) into keys of the mapping, run by the worker as owner';
COMMENT ON COLUMN erpcrm.watch.owner IS 'the role that defined the watch; its key query runs with this role''s privileges';
COMMENT ON COLUMN erpcrm.watch.problem IS 'why the key query failed the last time it ran, or NULL';

CREATE TABLE erpcrm.fan_out (
	watch_id		integer NOT NULL,
	erp_id			text,
	erp_ids			text[]
);
ALTER TABLE erpcrm.fan_out ALTER COLUMN erp_ids SET STORAGE PLAIN;
COMMENT ON TABLE erpcrm.fan_out IS 'keys captured by watches with a key query, not yet resolved into keys of their mapping';
SELECT pg_catalog.pg_extension_config_dump('erpcrm.fan_out', '');
REVOKE ALL ON erpcrm.fan_out FROM PUBLIC;

/*
 * A mapping's source is also kept by name, so that a view dropped and
 * created again is found again.  A view renamed or moved is followed by its
 * OID, and the name follows it.
 */
ALTER TABLE erpcrm.mapping ADD COLUMN source_name text;
COMMENT ON COLUMN erpcrm.mapping.source_name IS 'the source''s qualified name: a source dropped and created again under this name is found again';

CREATE FUNCTION erpcrm._relation_name(p_relid oid)
RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT format('%I.%I', n.nspname, c.relname)
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE c.oid = p_relid;
$$;

UPDATE erpcrm.mapping SET source_name = erpcrm._relation_name(source);

CREATE FUNCTION erpcrm._mapping_source_name()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.source_name := COALESCE(erpcrm._relation_name(NEW.source), NEW.source_name);
	RETURN NEW;
END
$$;
CREATE TRIGGER mapping_source_name BEFORE INSERT OR UPDATE OF source ON erpcrm.mapping
	FOR EACH ROW EXECUTE FUNCTION erpcrm._mapping_source_name();

/*
 * Partitioned tables get one row trigger, which PostgreSQL clones to every
 * partition, attached now or later: a write straight into a partition is
 * captured too (a statement trigger of the parent fires only for statements
 * on the parent).
 */
DO $partitions$
DECLARE
	w record;
	suffix text;
BEGIN
	FOR w IN SELECT x.watch_id, x.source, x.trigger_name
			   FROM erpcrm.watch x JOIN pg_catalog.pg_class c ON c.oid = x.source
			  WHERE c.relkind = 'p'
				AND EXISTS (SELECT FROM pg_catalog.pg_trigger t
							 WHERE t.tgrelid = x.source AND t.tgname = x.trigger_name || '_i')
	LOOP
		FOREACH suffix IN ARRAY ARRAY['_i', '_u', '_d'] LOOP
			EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS %I ON %s', w.trigger_name || suffix, w.source);
		END LOOP;
		EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s '
								  'FOR EACH ROW EXECUTE FUNCTION erpcrm.capture(%L)',
								  w.trigger_name, w.source, w.watch_id);
	END LOOP;
END
$partitions$;

/* Write a key with the columns' new names (C). */
CREATE FUNCTION erpcrm._rename_key(regclass, text)
RETURNS text
AS 'MODULE_PATHNAME', 'erpcrm_rename_key_v1'
LANGUAGE C STRICT;

/* A key query: checked without running it, and run (C, as owner). */
CREATE FUNCTION erpcrm._check_key_query(text, regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'erpcrm_check_key_query_v1'
LANGUAGE C STRICT;

CREATE FUNCTION erpcrm._fan_out_keys(text, regrole, text[])
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'erpcrm_fan_out_keys_v1'
LANGUAGE C STRICT;

/* Drop one watch: its triggers, its row and its unresolved fan-out keys. */
CREATE OR REPLACE FUNCTION erpcrm._drop_watch(p_watch_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w erpcrm.watch;
	t record;
BEGIN
	DELETE FROM erpcrm.fan_out WHERE watch_id = p_watch_id;
	DELETE FROM erpcrm.watch WHERE watch_id = p_watch_id RETURNING * INTO w;
	IF FOUND THEN
		/* on the table, and the TRUNCATE triggers of its partitions */
		FOR t IN SELECT g.tgname, g.tgrelid FROM pg_trigger g
				  WHERE g.tgname IN (w.trigger_name, w.trigger_name || '_i', w.trigger_name || '_u',
									 w.trigger_name || '_d', w.trigger_name || '_t')
					AND g.tgfoid = 'erpcrm.capture()'::regprocedure AND g.tgparentid = 0
				  ORDER BY g.tgrelid = w.source, g.tgname
		LOOP
			EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass);
		END LOOP;
	END IF;
END
$$;

DROP FUNCTION erpcrm.watch(text, regclass, text);
CREATE FUNCTION erpcrm.watch(mapping text, source regclass, key text, key_query text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(mapping);
	k char;
	tree text;
	wid integer;
	old_query text;
	tname name;
BEGIN
	IF source IS NULL THEN
		RAISE EXCEPTION 'the watched table must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT relkind INTO k FROM pg_class WHERE oid = source;
	IF k IS NULL OR k NOT IN ('r', 'p') THEN
		RAISE EXCEPTION '% is not a table', source
			USING ERRCODE = 'wrong_object_type',
				  DETAIL = 'Only tables (plain or partitioned) can be watched; a view''s changes are the changes of its tables.',
				  HINT = 'Watch the tables the mapping view reads from.';
	END IF;
	IF NOT has_table_privilege(erpcrm._caller(), source, 'TRIGGER') THEN
		RAISE EXCEPTION 'permission denied to watch table %', source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Watching a table creates triggers on it, which needs its ownership or the TRIGGER privilege.';
	END IF;
	IF key IS NULL OR btrim(key) = '' THEN
		RAISE EXCEPTION 'the key expression must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give the expression that computes the mapping''s erp_id from a row of the table, for example: id::text.';
	END IF;
	IF key_query IS NOT NULL AND btrim(key_query) = '' THEN
		RAISE EXCEPTION 'the key query must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Leave it NULL, or give a SELECT that returns the mapping''s keys for the captured keys in $1.';
	END IF;
	SELECT w.watch_id, w.key_query INTO wid, old_query FROM erpcrm.watch w
	 WHERE w.mapping_id = m.mapping_id AND w.source = watch.source AND w.key_expr = key;
	IF FOUND THEN
		IF old_query IS DISTINCT FROM key_query THEN
			RAISE EXCEPTION 'table % is already watched for mapping "%" with key %, and another key query', source, m.name, key
				USING ERRCODE = 'duplicate_object',
					  HINT = 'Drop that watch first with erpcrm.unwatch().';
		END IF;
		RETURN wid;
	END IF;

	tree := erpcrm._compile_key(source, key);
	IF key_query IS NOT NULL THEN
		/* planned, not run, as the role that will own it */
		PERFORM erpcrm._check_key_query(key_query, erpcrm._caller());
	END IF;

	INSERT INTO erpcrm.watch (mapping_id, source, key_expr, key_tree, trigger_name, key_query, owner)
	VALUES (m.mapping_id, source, key, tree, '', key_query,
			CASE WHEN key_query IS NOT NULL THEN erpcrm._caller() END)
	RETURNING watch_id INTO wid;
	tname := format('erpcrm_watch_%s', wid);
	UPDATE erpcrm.watch SET trigger_name = tname WHERE watch_id = wid;

	IF k = 'p' OR EXISTS (SELECT FROM pg_inherits WHERE inhrelid = source) THEN
		/*
		 * A partitioned table: one row trigger, cloned to every partition
		 * (also those attached later).  A partition or an inheritance child
		 * cannot have transition tables.
		 */
		EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s '
					   'FOR EACH ROW EXECUTE FUNCTION erpcrm.capture(%L)',
					   tname, source, wid);
	ELSE
		/* one call per statement, the rows from its transition tables */
		EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s '
					   'REFERENCING NEW TABLE AS erpcrm_new '
					   'FOR EACH STATEMENT EXECUTE FUNCTION erpcrm.capture(%L)',
					   tname || '_i', source, wid);
		EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s '
					   'REFERENCING OLD TABLE AS erpcrm_old NEW TABLE AS erpcrm_new '
					   'FOR EACH STATEMENT EXECUTE FUNCTION erpcrm.capture(%L)',
					   tname || '_u', source, wid);
		EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s '
					   'REFERENCING OLD TABLE AS erpcrm_old '
					   'FOR EACH STATEMENT EXECUTE FUNCTION erpcrm.capture(%L)',
					   tname || '_d', source, wid);
	END IF;
	EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s '
				   'FOR EACH STATEMENT EXECUTE FUNCTION erpcrm.capture(%L)',
				   tname || '_t', source, wid);
	IF k = 'p' THEN
		PERFORM erpcrm._sync_partition_triggers();
	END IF;
	RETURN wid;
END
$$;
COMMENT ON FUNCTION erpcrm.watch(text, regclass, text, text) IS 'capture changes of an ERP table as dirty keys of a mapping; key computes erp_id from a row, or with key_query the value the query turns into erp_ids';

/*
 * After DDL: compile the keys of a table's watches again (every watch's
 * when p_table is NULL).  A key whose column, function or schema was renamed
 * is written with the new name.  A change that leaves a key without a
 * meaning (its column dropped, or retyped to a type the expression cannot
 * take, a function it uses dropped) is refused, naming the watch.  A key
 * query that no longer plans (checked as its owner) is reported: its keys
 * wait, and erpcrm.status shows why.
 */
CREATE FUNCTION erpcrm._check_watches(p_table oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w record;
	tree text;
	renamed text;
	err text;
BEGIN
	FOR w IN SELECT x.watch_id, x.source, x.key_expr, x.key_tree, x.key_query, x.owner,
					m.name AS mapping
			   FROM erpcrm.watch x JOIN erpcrm.mapping m USING (mapping_id)
			  WHERE (p_table IS NULL OR x.source = p_table)
				AND EXISTS (SELECT FROM pg_class c WHERE c.oid = x.source)
			  ORDER BY x.watch_id
	LOOP
		IF w.key_query IS NOT NULL THEN
			BEGIN
				PERFORM erpcrm._check_key_query(w.key_query, w.owner);
			EXCEPTION WHEN OTHERS THEN
				UPDATE erpcrm.watch SET problem = format('its key query no longer plans: %s', SQLERRM)
				 WHERE watch_id = w.watch_id;
				RAISE WARNING 'the key query of erpcrm watch % of mapping "%" no longer plans: %', w.watch_id, w.mapping, SQLERRM
					USING HINT = format('Its keys wait. Watch %s again with a key query that fits: erpcrm.unwatch(%L, %L) and erpcrm.watch().',
										w.source::regclass, w.mapping, w.source::regclass::text);
			END;
		END IF;
		BEGIN
			tree := erpcrm._compile_key(w.source, w.key_expr);
			IF tree IS DISTINCT FROM w.key_tree THEN
				UPDATE erpcrm.watch SET key_tree = tree WHERE watch_id = w.watch_id;
			END IF;
			CONTINUE;
		EXCEPTION WHEN OTHERS THEN
			err := SQLERRM;
		END;
		BEGIN
			renamed := erpcrm._rename_key(w.source, w.key_tree);
		EXCEPTION WHEN OTHERS THEN
			RAISE EXCEPTION 'this change would break erpcrm watch % of mapping "%" on table %', w.watch_id, w.mapping, w.source::regclass
				USING ERRCODE = 'dependent_objects_still_exist',
					  DETAIL = format('Its key %s no longer fits the table: %s.', w.key_expr, err),
					  HINT = format('Stop watching the table first with SELECT erpcrm.unwatch(%L, %L), make the change, then watch it again with a key that fits.',
									w.mapping, w.source::regclass::text);
		END;
		UPDATE erpcrm.watch
		   SET key_expr = renamed, key_tree = erpcrm._compile_key(w.source, renamed)
		 WHERE watch_id = w.watch_id;
		RAISE NOTICE 'the key of erpcrm watch % of mapping "%" is now %', w.watch_id, w.mapping, renamed;
	END LOOP;
END
$$;

/*
 * TRUNCATE of one partition fires no trigger of its partitioned table: every
 * partition of a watched partitioned table gets the watch's TRUNCATE
 * trigger, and a partition detached loses it.  With p_dirty (after DDL), a
 * partition with rows attached or detached changes what the table holds
 * without any row change: every key of the watch's mapping is marked.
 */
CREATE FUNCTION erpcrm._sync_partition_triggers(p_dirty boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	has_rows boolean;
BEGIN
	FOR r IN SELECT x.watch_id, x.mapping_id, x.trigger_name || '_t' AS tname, p.relid
			   FROM erpcrm.watch x JOIN pg_class c ON c.oid = x.source
			  CROSS JOIN LATERAL pg_partition_tree(x.source) p
			  WHERE c.relkind = 'p' AND p.relid <> x.source
				AND NOT EXISTS (SELECT FROM pg_trigger t
								 WHERE t.tgrelid = p.relid AND t.tgname = x.trigger_name || '_t')
	LOOP
		EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s '
					   'FOR EACH STATEMENT EXECUTE FUNCTION erpcrm.capture(%L)',
					   r.tname, r.relid::regclass, r.watch_id);
		IF p_dirty THEN
			EXECUTE format('SELECT EXISTS (SELECT FROM %s)', r.relid::regclass) INTO has_rows;
			IF has_rows THEN
				INSERT INTO erpcrm.outbox (mapping_id, erp_id) VALUES (r.mapping_id, NULL);
			END IF;
		END IF;
	END LOOP;
	FOR r IN SELECT t.tgname, t.tgrelid, x.mapping_id
			   FROM pg_trigger t
			   JOIN erpcrm.watch x ON t.tgname = x.trigger_name || '_t' AND t.tgrelid <> x.source
			  WHERE t.tgfoid = 'erpcrm.capture()'::regprocedure
				AND NOT EXISTS (SELECT FROM pg_partition_ancestors(t.tgrelid) a WHERE a.relid = x.source)
	LOOP
		EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.tgrelid::regclass);
		IF p_dirty THEN
			EXECUTE format('SELECT EXISTS (SELECT FROM %s)', r.tgrelid::regclass) INTO has_rows;
			IF has_rows THEN
				INSERT INTO erpcrm.outbox (mapping_id, erp_id) VALUES (r.mapping_id, NULL);
			END IF;
		END IF;
	END LOOP;
END
$$;

/*
 * Sources of mappings: a view dropped and created again under its name is
 * found again; a view renamed or moved is followed.  Returns how many
 * mappings changed.
 */
CREATE FUNCTION erpcrm._resolve_sources()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n integer;
	k integer;
BEGIN
	/* (the view created again may hold other rows: every key is marked) */
	WITH found AS (
		UPDATE erpcrm.mapping m SET source = to_regclass(m.source_name)
		 WHERE m.source_name IS NOT NULL
		   AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source)
		   AND to_regclass(m.source_name) IS NOT NULL
		RETURNING m.mapping_id
	)
	INSERT INTO erpcrm.outbox (mapping_id, erp_id) SELECT found.mapping_id, NULL FROM found;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE erpcrm.mapping m SET source_name = erpcrm._relation_name(m.source)
	 WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source)
	   AND m.source_name IS DISTINCT FROM erpcrm._relation_name(m.source);
	GET DIAGNOSTICS k = ROW_COUNT;
	RETURN n + k;
END
$$;

CREATE FUNCTION erpcrm._on_ddl_end()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t oid;
BEGIN
	/* temporary objects (an ERP's scratch tables) concern no watch */
	IF NOT EXISTS (SELECT FROM pg_event_trigger_ddl_commands() c
					WHERE c.schema_name IS NULL OR c.schema_name NOT LIKE 'pg\_temp%') THEN
		RETURN;
	END IF;
	IF EXISTS (SELECT FROM erpcrm.watch) THEN
		IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() c
					WHERE c.classid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_type'::regclass,
										'pg_catalog.pg_namespace'::regclass, 'pg_catalog.pg_operator'::regclass)
					   OR (c.classid = 'pg_catalog.pg_class'::regclass AND EXISTS
							(SELECT FROM erpcrm.watch w WHERE w.key_query IS NOT NULL))) THEN
			/* a function, type or schema a key may name, or a table a key query reads */
			PERFORM erpcrm._check_watches(NULL);
		ELSE
			FOR t IN
				SELECT DISTINCT CASE WHEN c.classid = 'pg_catalog.pg_trigger'::regclass
									 THEN (SELECT g.tgrelid FROM pg_trigger g WHERE g.oid = c.objid)
									 ELSE c.objid END
				  FROM pg_event_trigger_ddl_commands() c
				 WHERE c.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_trigger'::regclass)
			LOOP
				IF EXISTS (SELECT FROM erpcrm.watch w WHERE w.source = t) THEN
					PERFORM erpcrm._check_watches(t);
				END IF;
			END LOOP;
		END IF;
		IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() c
					WHERE c.classid = 'pg_catalog.pg_class'::regclass) THEN
			PERFORM erpcrm._sync_partition_triggers(true);
		END IF;
	END IF;
	IF EXISTS (SELECT FROM erpcrm.mapping) THEN
		PERFORM erpcrm._resolve_sources();
	END IF;
END
$$;

CREATE FUNCTION erpcrm._on_sql_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	o record;
	w record;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_event_trigger_dropped_objects() d WHERE NOT d.is_temporary) THEN
		RETURN;
	END IF;
	/* a watch's trigger dropped by hand, its table still there */
	FOR o IN SELECT d.address_names FROM pg_event_trigger_dropped_objects() d
			  WHERE d.object_type = 'trigger' AND cardinality(d.address_names) = 3
	LOOP
		SELECT x.watch_id, x.source, m.name AS mapping INTO w
		  FROM erpcrm.watch x JOIN erpcrm.mapping m USING (mapping_id)
		 WHERE o.address_names[3] IN (x.trigger_name, x.trigger_name || '_i', x.trigger_name || '_u',
									  x.trigger_name || '_d', x.trigger_name || '_t')
		   AND x.source = to_regclass(format('%I.%I', o.address_names[1], o.address_names[2]));
		IF FOUND THEN
			RAISE EXCEPTION 'trigger % on % belongs to erpcrm watch % of mapping "%"',
							o.address_names[3], w.source::regclass, w.watch_id, w.mapping
				USING ERRCODE = 'dependent_objects_still_exist',
					  HINT = format('Stop watching the table with SELECT erpcrm.unwatch(%L, %L).',
									w.mapping, w.source::regclass::text);
		END IF;
	END LOOP;

	/* watches of tables that are gone (DROP TABLE, DROP SCHEMA ... CASCADE) */
	FOR w IN DELETE FROM erpcrm.watch x
			  WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = x.source)
			 RETURNING x.watch_id, x.mapping_id
	LOOP
		DELETE FROM erpcrm.fan_out f WHERE f.watch_id = w.watch_id;
		RAISE NOTICE 'erpcrm watch % of mapping "%" is dropped with its table', w.watch_id,
			(SELECT m.name FROM erpcrm.mapping m WHERE m.mapping_id = w.mapping_id);
	END LOOP;

	/* a function, type or operator a key uses, or a table a key query reads */
	IF EXISTS (SELECT FROM pg_event_trigger_dropped_objects() d
				WHERE NOT d.is_temporary
				  AND (d.object_type IN ('function', 'operator', 'cast')
					   /* not the row type of a dropped table */
					   OR (d.object_type IN ('type', 'domain') AND d.original)
					   OR (d.object_type IN ('table', 'view', 'table column') AND EXISTS
							(SELECT FROM erpcrm.watch x WHERE x.key_query IS NOT NULL)))) THEN
		PERFORM erpcrm._check_watches(NULL);
	END IF;

	/* mappings whose view is gone wait for a view of the same name */
	FOR w IN SELECT m.name, m.source_name FROM erpcrm.mapping m
			  WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source)
				AND m.source IN (SELECT d.objid FROM pg_event_trigger_dropped_objects() d)
	LOOP
		RAISE NOTICE 'mapping "%" lost its source %', w.name, w.source_name
			USING DETAIL = 'Changes are still captured; they are delivered once a view of that name exists again.';
	END LOOP;
END
$$;

SELECT erpcrm._sync_partition_triggers();

CREATE EVENT TRIGGER erpcrm_ddl_end ON ddl_command_end
	EXECUTE FUNCTION erpcrm._on_ddl_end();
CREATE EVENT TRIGGER erpcrm_sql_drop ON sql_drop
	EXECUTE FUNCTION erpcrm._on_sql_drop();

/*
 * Fan-out: the worker turns the keys captured by watches with a key query
 * into keys of their mappings, in the outbox, before it folds.  One watch's
 * failing query does not stop the others: its keys stay, and the error is
 * kept in erpcrm.watch.problem (shown by erpcrm.status).
 */
CREATE FUNCTION erpcrm._fan_out()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w record;
	keys text[];
	whole boolean;
	n bigint := 0;
	k bigint;
BEGIN
	DELETE FROM erpcrm.fan_out f
	 WHERE NOT EXISTS (SELECT FROM erpcrm.watch x WHERE x.watch_id = f.watch_id AND x.key_query IS NOT NULL);
	FOR w IN SELECT x.watch_id, x.mapping_id, x.key_query, x.owner
			   FROM erpcrm.watch x
			  WHERE x.key_query IS NOT NULL
				AND EXISTS (SELECT FROM erpcrm.fan_out f WHERE f.watch_id = x.watch_id)
			  ORDER BY x.watch_id
	LOOP
		BEGIN
			WITH d AS (
				DELETE FROM erpcrm.fan_out f WHERE f.watch_id = w.watch_id
				RETURNING f.erp_id, f.erp_ids
			)
			SELECT array_agg(DISTINCT c.v) FILTER (WHERE c.v IS NOT NULL),
				   bool_or(d.erp_id IS NULL AND d.erp_ids IS NULL)
			  INTO keys, whole
			  FROM d LEFT JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS c(v) ON true;
			IF whole THEN
				/* TRUNCATE: every key of the mapping */
				INSERT INTO erpcrm.outbox (mapping_id, erp_id) VALUES (w.mapping_id, NULL);
				k := 1;
			ELSIF keys IS NOT NULL THEN
				INSERT INTO erpcrm.outbox (mapping_id, erp_id)
				SELECT DISTINCT w.mapping_id, r.k
				  FROM erpcrm._fan_out_keys(w.key_query, w.owner, keys) AS r(k);
				GET DIAGNOSTICS k = ROW_COUNT;
			END IF;
			n := n + COALESCE(k, 0);
			UPDATE erpcrm.watch SET problem = NULL WHERE watch_id = w.watch_id AND problem IS NOT NULL;
		EXCEPTION WHEN OTHERS THEN
			UPDATE erpcrm.watch SET problem = format('its key query failed: %s (SQLSTATE %s)', SQLERRM, SQLSTATE)
			 WHERE watch_id = w.watch_id;
		END;
	END LOOP;
	RETURN n;
END
$$;

/* The worker, before each fold: find sources again, fan out. */
CREATE FUNCTION erpcrm._before_fold()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM erpcrm._resolve_sources();
	RETURN erpcrm._fan_out();
END
$$;
COMMENT ON FUNCTION erpcrm._before_fold() IS 'worker: find mapping sources again by name, resolve the key queries of watches';

/*
 * What is wrong with a mapping, in plain words, or NULL.  A watched table
 * locked by long DDL (VACUUM FULL) is not waited for: its key is checked
 * the next time.
 */
CREATE FUNCTION erpcrm._mapping_problem(p_mapping_id integer)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '50ms'
AS $$
DECLARE
	m erpcrm.mapping;
	w record;
	problems text[] := '{}';
BEGIN
	SELECT * INTO m FROM erpcrm.mapping WHERE mapping_id = p_mapping_id;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source) THEN
		problems := problems || format('its source %s does not exist; changes wait until it is created again',
									   COALESCE(m.source_name, m.source::oid::text));
	ELSIF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = m.source AND a.attname = 'erp_id'
						 AND a.attnum > 0 AND NOT a.attisdropped) THEN
		problems := problems || format('its source %s has no column erp_id', m.source::regclass);
	END IF;
	FOR w IN SELECT t.name FROM erpcrm.association a JOIN erpcrm.mapping t ON t.mapping_id = a.target_id
			  WHERE a.mapping_id = p_mapping_id AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source)
			  ORDER BY t.name
	LOOP
		problems := problems || format('waits for mapping "%s", whose source does not exist', w.name);
	END LOOP;
	FOR w IN SELECT x.* FROM erpcrm.watch x WHERE x.mapping_id = p_mapping_id ORDER BY x.watch_id LOOP
		IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = w.source AND t.tgenabled = 'D'
					  AND t.tgname IN (w.trigger_name, w.trigger_name || '_i', w.trigger_name || '_u',
									   w.trigger_name || '_d', w.trigger_name || '_t')) THEN
			problems := problems || format('a trigger of watch %s on %s is disabled (ALTER TABLE ... ENABLE TRIGGER)',
										   w.watch_id, w.source::regclass);
		ELSIF NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = w.source AND t.tgname = w.trigger_name || '_t')
		   OR NOT (EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = w.source AND t.tgname = w.trigger_name)
				   OR (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = w.source
						AND t.tgname IN (w.trigger_name || '_i', w.trigger_name || '_u', w.trigger_name || '_d')) = 3) THEN
			problems := problems || format('a trigger of watch %s on %s is missing', w.watch_id, w.source::regclass);
		END IF;
		BEGIN
			PERFORM erpcrm._compile_key(w.source, w.key_expr);
		EXCEPTION WHEN lock_not_available THEN
			NULL;
		WHEN OTHERS THEN
			problems := problems || format('the key %s of watch %s no longer fits %s: %s', w.key_expr, w.watch_id, w.source::regclass, SQLERRM);
		END;
		IF w.problem IS NOT NULL THEN
			problems := problems || format('watch %s on %s: %s', w.watch_id, w.source::regclass, w.problem);
		END IF;
	END LOOP;
	RETURN NULLIF(array_to_string(problems, '; '), '');
END
$$;
COMMENT ON FUNCTION erpcrm._mapping_problem(integer) IS 'what keeps a mapping from capturing or delivering, in plain words, or NULL';

/* Keys that still have to reach HubSpot: unresolved fan-out keys count too. */
CREATE OR REPLACE FUNCTION erpcrm._outstanding(p_mapping_id integer)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT (SELECT count(*) FROM erpcrm.outbox o
			 WHERE p_mapping_id IS NULL OR o.mapping_id = p_mapping_id)
		 + (SELECT count(*) FROM erpcrm.fan_out f JOIN erpcrm.watch w USING (watch_id)
			 WHERE w.problem IS NULL AND (p_mapping_id IS NULL OR w.mapping_id = p_mapping_id))
		 + (SELECT count(*) FROM erpcrm.sync_state s
			 WHERE s.state IN ('pending', 'in_flight')
			   AND (p_mapping_id IS NULL OR s.mapping_id = p_mapping_id));
$$;

/*
 * erpcrm.status names the source even when it is gone, and says what is
 * wrong (problem).
 */
DROP VIEW erpcrm.status;
CREATE VIEW erpcrm.status AS
SELECT m.name AS mapping,
	   m.object_type,
	   COALESCE((SELECT format('%I.%I', n.nspname, c.relname)
				   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
				  WHERE c.oid = m.source), m.source_name) AS source,
	   m.paused OR c.paused AS paused,
	   COALESCE(o.n, 0) + COALESCE(f.n, 0) AS unfolded,
	   COALESCE(s.pending, 0) AS pending,
	   COALESCE(s.in_flight, 0) AS in_flight,
	   COALESCE(s.failed, 0) AS failed,
	   COALESCE(s.synced, 0) AS synced,
	   COALESCE(s.archived, 0) AS archived,
	   pg_catalog.now() - s.oldest_dirty AS oldest_pending_age,
	   s.last_success,
	   round(COALESCE(s.recent, 0) / 60.0, 1) AS per_second,
	   CASE WHEN COALESCE(s.pending, 0) + COALESCE(s.in_flight, 0) = 0 THEN interval '0'
			WHEN COALESCE(s.recent, 0) = 0 THEN NULL
			ELSE make_interval(secs => (s.pending + s.in_flight) / (s.recent / 60.0))
	   END AS time_left,
	   erpcrm._mapping_problem(m.mapping_id) AS problem
  FROM erpcrm.mapping m
 CROSS JOIN erpcrm.control c
  LEFT JOIN (SELECT mapping_id,
					count(*) FILTER (WHERE state = 'pending') AS pending,
					count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
					count(*) FILTER (WHERE state = 'failed') AS failed,
					count(*) FILTER (WHERE state = 'synced') AS synced,
					count(*) FILTER (WHERE state = 'archived') AS archived,
					min(dirty_since) FILTER (WHERE state IN ('pending', 'in_flight')) AS oldest_dirty,
					max(last_synced_at) AS last_success,
					count(*) FILTER (WHERE last_synced_at > pg_catalog.now() - interval '1 minute') AS recent
			   FROM erpcrm.sync_state GROUP BY mapping_id) s
	ON s.mapping_id = m.mapping_id
  LEFT JOIN (SELECT mapping_id, sum(COALESCE(pg_catalog.cardinality(erp_ids), 1)) AS n
			   FROM erpcrm.outbox GROUP BY mapping_id) o
	ON o.mapping_id = m.mapping_id
  LEFT JOIN (SELECT w.mapping_id, sum(COALESCE(pg_catalog.cardinality(x.erp_ids), 1)) AS n
			   FROM erpcrm.fan_out x JOIN erpcrm.watch w USING (watch_id) GROUP BY w.mapping_id) f
	ON f.mapping_id = m.mapping_id;
COMMENT ON VIEW erpcrm.status IS 'per mapping: how many keys are pending, in flight, failed, synced, archived, and what is wrong with it';

REVOKE ALL ON FUNCTION erpcrm._relation_name(oid), erpcrm._mapping_source_name(),
	erpcrm._rename_key(regclass, text), erpcrm._check_key_query(text, regrole),
	erpcrm._fan_out_keys(text, regrole, text[]), erpcrm._drop_watch(integer),
	erpcrm.watch(text, regclass, text, text), erpcrm._check_watches(oid),
	erpcrm._sync_partition_triggers(boolean),
	erpcrm._resolve_sources(), erpcrm._on_ddl_end(), erpcrm._on_sql_drop(),
	erpcrm._fan_out(), erpcrm._before_fold(), erpcrm._mapping_problem(integer),
	erpcrm._outstanding(integer)
	FROM PUBLIC;
REVOKE ALL ON erpcrm.status FROM PUBLIC;
GRANT SELECT ON erpcrm.status, erpcrm.fan_out TO erpcrm_monitor, pg_monitor;
GRANT EXECUTE ON FUNCTION erpcrm._mapping_problem(integer) TO erpcrm_monitor, pg_monitor;
GRANT EXECUTE ON FUNCTION erpcrm.watch(text, regclass, text, text), erpcrm._before_fold()
	TO erpcrm_admin;


-- ===================================================================
-- Part 3: one bad row fails alone (values, keys, discard)
-- ===================================================================

/*
 * Keys are text of at most 2048 bytes.  A longer key cannot be a row of
 * sync_state (its primary key index takes about 2.7 kB at most), so it is
 * recorded under a stand-in made of its first 64 characters, its length and
 * its md5, as failed with category ERP_KEY_TOO_LONG.  Rows of a view whose
 * erp_id is NULL are recorded under the empty key '' as failed with category
 * ERP_NULL_ID.  Neither ever blocks the fold or the other keys.
 */
CREATE FUNCTION erpcrm._key_ref(k text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN k IS NULL THEN ''
			WHEN pg_catalog.octet_length(k) <= 2048 THEN k
			ELSE pg_catalog.left(k, 64) || '... (' || pg_catalog.octet_length(k)
				 || ' bytes, md5 ' || pg_catalog.md5(k) || ')' END;
COMMENT ON FUNCTION erpcrm._key_ref(text) IS 'the sync_state key of an ERP key: the key itself, a stand-in for a key over 2048 bytes, or the empty key for NULL';

/* Keys over the limit: parked under their stand-in, as failed. */
CREATE FUNCTION erpcrm._park_long_keys(p_mapping_id integer, p_keys text[])
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	WITH ins AS (
		INSERT INTO erpcrm.sync_state AS s (mapping_id, erp_id, state, error_category,
											error_message, error_at)
		SELECT p_mapping_id, erpcrm._key_ref(k.k), 'failed', 'ERP_KEY_TOO_LONG',
			   'the key is ' || octet_length(k.k) || ' bytes long, and erpcrm keys are at most 2048 bytes; it begins with: '
			   || "left"(k.k, 64), now()
		  FROM (SELECT DISTINCT u.k FROM unnest(p_keys) AS u(k)
				 WHERE octet_length(u.k) > 2048) AS k
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'failed' END,
			attempts = 0,
			next_attempt_at = now(),
			dirty_since = COALESCE(s.dirty_since, now()),
			http_status = NULL, correlation_id = NULL,
			error_category = excluded.error_category,
			error_message = excluded.error_message,
			error_at = now()
		RETURNING 1)
	SELECT count(*) FROM ins;
END;

/* _fold, as of 1.2: a key over 2048 bytes is parked, and the rest folded. */
CREATE OR REPLACE FUNCTION erpcrm._fold()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint := 0;
	whole integer[];
	mid integer;
	long_keys record;
BEGIN
	FOR long_keys IN
		WITH d AS (
			DELETE FROM erpcrm.outbox RETURNING mapping_id, erp_id, erp_ids
		), keys AS MATERIALIZED (
			SELECT DISTINCT d.mapping_id, k.erp_id
			  FROM d CROSS JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS k(erp_id)
			 WHERE k.erp_id IS NOT NULL
			   AND EXISTS (SELECT FROM erpcrm.mapping m WHERE m.mapping_id = d.mapping_id)
		), ins AS (
			INSERT INTO erpcrm.sync_state AS s (mapping_id, erp_id)
			SELECT keys.mapping_id, keys.erp_id FROM keys
			 WHERE octet_length(keys.erp_id) <= 2048
			ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
				change_seq = s.change_seq + 1,
				state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'pending' END,
				attempts = CASE WHEN s.state = 'in_flight' THEN s.attempts ELSE 0 END,
				next_attempt_at = CASE WHEN s.state = 'in_flight' THEN s.next_attempt_at ELSE now() END,
				dirty_since = COALESCE(s.dirty_since, now())
			RETURNING 1
		)
		SELECT NULL::integer AS mapping_id, NULL::text[] AS erp_ids,
			   (SELECT count(*) FROM ins) AS n,
			   (SELECT array_agg(DISTINCT d.mapping_id) FROM d
				 WHERE d.erp_id IS NULL AND d.erp_ids IS NULL) AS whole
		UNION ALL
		SELECT keys.mapping_id, array_agg(keys.erp_id), NULL, NULL FROM keys
		 WHERE octet_length(keys.erp_id) > 2048
		 GROUP BY keys.mapping_id
	LOOP
		IF long_keys.mapping_id IS NULL THEN
			n := n + long_keys.n;
			whole := long_keys.whole;
		ELSE
			n := n + erpcrm._park_long_keys(long_keys.mapping_id, long_keys.erp_ids);
		END IF;
	END LOOP;

	/*
	 * A TRUNCATE marks every key of its mappings.  A view that cannot list
	 * its keys (an erp_id that raises for one row) must not stop the fold
	 * of the others: its marker goes back to the outbox, to be tried again
	 * at the next fold, and the server log says why.
	 */
	IF whole IS NOT NULL THEN
		FOREACH mid IN ARRAY whole LOOP
			BEGIN
				n := n + erpcrm._dirty_all(mid);
			EXCEPTION WHEN OTHERS THEN
				INSERT INTO erpcrm.outbox (mapping_id, erp_id) VALUES (mid, NULL);
				RAISE WARNING 'the keys of mapping "%" could not be listed after a TRUNCATE: % (SQLSTATE %)',
					(SELECT m.name FROM erpcrm.mapping m WHERE m.mapping_id = mid), SQLERRM, SQLSTATE
					USING DETAIL = 'Every key of the mapping is marked at the next fold that can read its view; the other mappings go on.',
						  HINT = 'Fix the rows or the view whose erp_id raises the error.';
			END;
		END LOOP;
	END IF;
	RETURN n;
END
$$;

/* The keys of a view, read as a given role, plus one NULL for NULL keys. */
CREATE FUNCTION erpcrm._view_keys_all(regclass, regrole)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'erpcrm_view_keys_v2'
LANGUAGE C STRICT;
REVOKE ALL ON FUNCTION erpcrm._view_keys_all(regclass, regrole) FROM PUBLIC;

/*
 * _dirty_all (resync, TRUNCATE), as of 1.2: keys over 2048 bytes are parked
 * under their stand-in; rows with a NULL erp_id are recorded as one failed
 * key '' (ERP_NULL_ID), with a warning, instead of being skipped.
 */
CREATE OR REPLACE FUNCTION erpcrm._dirty_all(p_mapping_id integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping;
	n bigint;
	long_keys text[];
	has_null boolean;
BEGIN
	SELECT * INTO m FROM erpcrm.mapping WHERE mapping_id = p_mapping_id;
	IF NOT FOUND THEN
		RETURN 0;
	END IF;
	WITH keys AS MATERIALIZED (
		SELECT k FROM erpcrm._view_keys_all(m.source, m.owner) AS k
	), ins AS (
		INSERT INTO erpcrm.sync_state AS s (mapping_id, erp_id)
		SELECT p_mapping_id, keys.k FROM keys
		 WHERE octet_length(keys.k) <= 2048
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'pending' END,
			attempts = CASE WHEN s.state = 'in_flight' THEN s.attempts ELSE 0 END,
			next_attempt_at = CASE WHEN s.state = 'in_flight' THEN s.next_attempt_at ELSE now() END,
			dirty_since = COALESCE(s.dirty_since, now())
		RETURNING 1
	), gone AS (
		/* keys known from before that are no longer in the view */
		UPDATE erpcrm.sync_state s SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'pending' END,
			attempts = CASE WHEN s.state = 'in_flight' THEN s.attempts ELSE 0 END,
			next_attempt_at = CASE WHEN s.state = 'in_flight' THEN s.next_attempt_at ELSE now() END,
			dirty_since = COALESCE(s.dirty_since, now())
		 WHERE s.mapping_id = p_mapping_id AND s.state <> 'archived'
		   AND NOT EXISTS (SELECT FROM keys WHERE erpcrm._key_ref(keys.k) = s.erp_id)
		RETURNING 1
	)
	SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM gone),
		   (SELECT array_agg(keys.k) FROM keys WHERE octet_length(keys.k) > 2048),
		   EXISTS (SELECT FROM keys WHERE keys.k IS NULL)
	  INTO n, long_keys, has_null;

	IF long_keys IS NOT NULL THEN
		n := n + erpcrm._park_long_keys(p_mapping_id, long_keys);
		RAISE WARNING '% keys of mapping "%" are longer than 2048 bytes and cannot be sent',
			cardinality(long_keys), m.name
			USING HINT = 'They are listed in erpcrm.failures with category ERP_KEY_TOO_LONG. Shorten the erp_id in the view.';
	END IF;
	IF has_null THEN
		INSERT INTO erpcrm.sync_state AS s (mapping_id, erp_id, state, error_category,
											error_message, error_at)
		VALUES (p_mapping_id, '', 'failed', 'ERP_NULL_ID',
				format('rows of %s have a NULL erp_id: they cannot be sent to HubSpot', m.source), now())
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'failed' END,
			attempts = 0, next_attempt_at = now(),
			dirty_since = COALESCE(s.dirty_since, now()),
			http_status = NULL, correlation_id = NULL,
			error_category = excluded.error_category,
			error_message = excluded.error_message,
			error_at = now();
		n := n + 1;
		RAISE WARNING 'rows of % have a NULL erp_id and cannot be sent to HubSpot', m.source
			USING DETAIL = format('Mapping "%s" records them as the failed key '''' with category ERP_NULL_ID.', m.name),
				  HINT = 'Give every row of the view an erp_id, or filter such rows out in the view.';
	END IF;
	RETURN n;
END
$$;

/*
 * Keys whose retry only they need (a row the view cannot read, an input or
 * an association HubSpot keeps refusing) are parked as failed once they
 * have used up p_max_attempts (erpcrm.max_attempts).
 */
CREATE FUNCTION erpcrm._give_up(p_mapping_id integer, p_erp_ids text[], p_max_attempts integer)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	WITH u AS (
		UPDATE erpcrm.sync_state s
		   SET state = 'failed',
			   next_attempt_at = now(),
			   error_message = s.error_message || ' (given up after ' || s.attempts || ' attempts)'
		 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
		   AND s.state = 'pending' AND s.change_seq = s.sent_seq
		   AND s.attempts >= p_max_attempts
		RETURNING 1)
	SELECT count(*) FROM u;
END;

/* Of these keys, those HubSpot last failed on alone (their error says so). */
CREATE FUNCTION erpcrm._failing_alone(p_mapping_id integer, p_erp_ids text[], p_prefix text)
RETURNS TABLE (erp_id text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT s.erp_id FROM erpcrm.sync_state s
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND starts_with(s.error_message, p_prefix);
END;

/*
 * A DBA stops one key: it is not sent again until it changes in the ERP
 * again or is requeued (requeue, requeue_failed, resync).
 */
ALTER TABLE erpcrm.sync_state DROP CONSTRAINT sync_state_state_check;
ALTER TABLE erpcrm.sync_state ADD CONSTRAINT sync_state_state_check
	CHECK (state IN ('pending', 'in_flight', 'synced', 'failed', 'archived', 'discarded'));

CREATE FUNCTION erpcrm.discard(mapping text, erp_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(discard.mapping);
	k text := erpcrm._key_ref(discard.erp_id);
	st text;
BEGIN
	SELECT s.state INTO st FROM erpcrm.sync_state s
	 WHERE s.mapping_id = m.mapping_id AND s.erp_id = k FOR UPDATE;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF st = 'in_flight' THEN
		RAISE EXCEPTION 'key "%" of mapping "%" is being sent right now', k, m.name
			USING ERRCODE = 'object_in_use',
				  HINT = 'Try again in a moment.';
	END IF;
	/* changes captured before the discard are part of what is discarded */
	DELETE FROM erpcrm.outbox o WHERE o.mapping_id = m.mapping_id AND o.erp_id = discard.erp_id;
	UPDATE erpcrm.outbox o SET erp_ids = array_remove(o.erp_ids, discard.erp_id)
	 WHERE o.mapping_id = m.mapping_id AND discard.erp_id = ANY (o.erp_ids);
	UPDATE erpcrm.sync_state s
	   SET state = 'discarded', attempts = 0, next_attempt_at = now(),
		   http_status = NULL, correlation_id = NULL,
		   error_category = 'DISCARDED',
		   error_message = format('discarded by %s (it was %s%s)', erpcrm._caller(), st,
								  CASE WHEN s.error_message IS NOT NULL
									   THEN ': ' || s.error_message ELSE '' END),
		   error_at = now()
	 WHERE s.mapping_id = m.mapping_id AND s.erp_id = k;
	RETURN true;
END
$$;
COMMENT ON FUNCTION erpcrm.discard(text, text) IS 'stop sending one key until it changes again or is requeued';

/* key_status, as of 1.2: a key over 2048 bytes is found under its stand-in. */
CREATE OR REPLACE FUNCTION erpcrm.key_status(mapping text, erp_id text)
RETURNS TABLE (
	state text, hubspot_id text, attempts integer,
	next_attempt_at timestamptz, dirty_since timestamptz, last_synced_at timestamptz,
	http_status integer, error_category text, error_message text,
	correlation_id text, error_at timestamptz, unfolded boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(key_status.mapping);
BEGIN
	RETURN QUERY
	SELECT COALESCE(s.state, 'unknown'), s.hubspot_id, s.attempts, s.next_attempt_at,
		   s.dirty_since, s.last_synced_at, s.http_status, s.error_category,
		   s.error_message, s.correlation_id, s.error_at,
		   EXISTS (SELECT FROM erpcrm.outbox o
					WHERE o.mapping_id = m.mapping_id
					  AND (o.erp_id = key_status.erp_id
						   OR key_status.erp_id = ANY (o.erp_ids)
						   OR (o.erp_id IS NULL AND o.erp_ids IS NULL)))
	  FROM (SELECT 1) AS one
	  LEFT JOIN erpcrm.sync_state s
		ON s.mapping_id = m.mapping_id AND s.erp_id = erpcrm._key_ref(key_status.erp_id);
END
$$;

REVOKE ALL ON FUNCTION erpcrm._key_ref(text), erpcrm._park_long_keys(integer, text[]),
	erpcrm._give_up(integer, text[], integer),
	erpcrm._failing_alone(integer, text[], text),
	erpcrm.discard(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._give_up(integer, text[], integer),
	erpcrm._failing_alone(integer, text[], text),
	erpcrm.discard(text, text) TO erpcrm_admin;


-- ===================================================================
-- Part 4: flat cost at scale (claim, done, fold, next-due)
-- ===================================================================

/*
 * Every statement of a batch touches only the batch's keys, through an
 * index, whatever the statistics say: keys are looked up with
 * "erp_id = ANY (array)" on the primary key (no join the planner could turn
 * into a hash of the mapping's rows), and a key's new HubSpot id is found by
 * its position in the array.  Claiming is planned with the batch size known
 * (a custom plan each time), so its LIMIT walks the due index.
 */
CREATE OR REPLACE FUNCTION erpcrm._claim(p_mapping_id integer, n integer)
RETURNS TABLE (erp_id text, hubspot_id text, change_seq bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
	keys text[];
BEGIN
	keys := ARRAY(
		SELECT c.erp_id FROM erpcrm.sync_state c
		 WHERE c.mapping_id = p_mapping_id AND c.state = 'pending'
		   AND c.next_attempt_at <= pg_catalog.now()
		 ORDER BY c.next_attempt_at, c.erp_id
		 LIMIT n
		 FOR UPDATE SKIP LOCKED);
	IF pg_catalog.cardinality(keys) = 0 THEN
		RETURN;
	END IF;
	RETURN QUERY
	UPDATE erpcrm.sync_state s
	   SET state = 'in_flight', sent_seq = s.change_seq
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (keys)
	RETURNING s.erp_id, s.hubspot_id, s.change_seq;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._claim(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._claim(integer, integer) TO erpcrm_admin;

/* Keys in flight, for recovery after a crash: as many as the batches on
 * their way, looked up without reading the mapping's history. */
CREATE INDEX sync_state_in_flight ON erpcrm.sync_state (mapping_id)
	WHERE state = 'in_flight';

/* Objects associated to a key's old HubSpot id are sent again (as of 1.1). */
CREATE OR REPLACE FUNCTION erpcrm._redirty_dependents(p_mapping_id integer, p_erp_ids text[], p_hubspot_ids text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old_ids text[];
	n bigint := 0;
BEGIN
	IF NOT EXISTS (SELECT FROM erpcrm.association a WHERE a.target_id = p_mapping_id) THEN
		RETURN 0;
	END IF;
	SELECT pg_catalog.array_agg(s.hubspot_id) INTO old_ids
	  FROM erpcrm.sync_state s
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND s.hubspot_id IS NOT NULL
	   AND s.hubspot_id <> p_hubspot_ids[pg_catalog.array_position(p_erp_ids, s.erp_id)];
	IF old_ids IS NULL THEN
		RETURN 0;
	END IF;
	UPDATE erpcrm.sync_state r
	   SET change_seq = r.change_seq + 1,
		   state = CASE WHEN r.state = 'in_flight' THEN r.state ELSE 'pending' END,
		   attempts = CASE WHEN r.state = 'in_flight' THEN r.attempts ELSE 0 END,
		   next_attempt_at = CASE WHEN r.state = 'in_flight' THEN r.next_attempt_at ELSE pg_catalog.now() END,
		   dirty_since = COALESCE(r.dirty_since, pg_catalog.now())
	  FROM erpcrm.association a, pg_catalog.unnest(old_ids) AS o(id)
	 WHERE a.target_id = p_mapping_id AND r.mapping_id = a.mapping_id
	   AND r.state IN ('synced', 'failed', 'pending')
	   AND pg_catalog.strpos(';' || r.assoc_state || ';', ';' || a.column_name || '=' || o.id || ';') > 0;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._redirty_dependents(integer, text[], text[]) FROM PUBLIC;

/*
 * _done, as of 1.2: the same outcome as 1.1, by primary key lookups only;
 * dependents are looked at only when some association points at the
 * mapping.
 */
CREATE OR REPLACE FUNCTION erpcrm._done(p_mapping_id integer, p_erp_ids text[], p_hubspot_ids text[],
										p_archived boolean DEFAULT false, p_in_erp boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	gone bigint := 0;
	n bigint;
BEGIN
	IF NOT p_archived THEN
		PERFORM erpcrm._redirty_dependents(p_mapping_id, p_erp_ids, p_hubspot_ids);
	END IF;
	/* keys that left the view before ever reaching HubSpot leave no trace */
	IF NOT p_in_erp THEN
		DELETE FROM erpcrm.sync_state s
		 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
		   AND s.state = 'in_flight'
		   AND s.hubspot_id IS NULL AND s.change_seq = s.sent_seq;
		GET DIAGNOSTICS gone = ROW_COUNT;
	END IF;
	UPDATE erpcrm.sync_state s
	   SET state = CASE WHEN s.change_seq <> s.sent_seq THEN 'pending'
						WHEN p_archived THEN 'archived' ELSE 'synced' END,
		   hubspot_id = CASE WHEN p_archived THEN s.hubspot_id
							 ELSE COALESCE(p_hubspot_ids[pg_catalog.array_position(p_erp_ids, s.erp_id)],
										   s.hubspot_id) END,
		   attempts = 0,
		   next_attempt_at = pg_catalog.now(),
		   last_synced_at = pg_catalog.now(),
		   in_erp = p_in_erp,
		   dirty_since = CASE WHEN s.change_seq <> s.sent_seq THEN s.dirty_since END,
		   http_status = NULL, error_category = NULL, error_message = NULL,
		   correlation_id = NULL, error_at = NULL
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND s.state = 'in_flight';
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN gone + n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._done(integer, text[], text[], boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._done(integer, text[], text[], boolean, boolean) TO erpcrm_admin;

CREATE OR REPLACE FUNCTION erpcrm._set_assoc_state(p_mapping_id integer, p_erp_ids text[], p_states text[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	/* (an unchanged state writes no new row version) */
	UPDATE erpcrm.sync_state s
	   SET assoc_state = p_states[pg_catalog.array_position(p_erp_ids, s.erp_id)]
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND s.assoc_state IS DISTINCT FROM p_states[pg_catalog.array_position(p_erp_ids, s.erp_id)];
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._set_assoc_state(integer, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._set_assoc_state(integer, text[], text[]) TO erpcrm_admin;



-- ===================================================================
-- Part 5: links, corrections and HubSpot set-up
-- ===================================================================

/*
 * Links to objects that are not in HubSpot (issue 11, points 4 and 5).
 *
 * The rule: a link (an association, or an as_property such as a line
 * item's hs_product_id) is made while its target is a live object in
 * HubSpot.  A row whose target is not in the target's view (a discontinued
 * product), or whose target erpcrm archived, is sent without the link, and
 * the missing link is recorded in sync_state.unlinked and shown in
 * erpcrm.unlinked.  When the target is archived later, its dependents are
 * sent again and lose the link; when it reaches HubSpot again, they are
 * sent again and get it back.  So what HubSpot holds does not depend on the
 * order of events.
 *
 * archived_at says that erpcrm archived the key's HubSpot object (and when):
 * a key that is dirtied again while still out of its view is not archived a
 * second time.
 */
ALTER TABLE erpcrm.sync_state
	ADD COLUMN unlinked jsonb,
	ADD COLUMN archived_at timestamptz;
COMMENT ON COLUMN erpcrm.sync_state.unlinked IS 'links not made because the target is not a live HubSpot object: {association column: target erp_id}';
COMMENT ON COLUMN erpcrm.sync_state.archived_at IS 'when erpcrm archived this key''s HubSpot object (NULL: not archived)';
CREATE INDEX sync_state_unlinked ON erpcrm.sync_state (mapping_id) WHERE unlinked IS NOT NULL;
UPDATE erpcrm.sync_state SET archived_at = COALESCE(last_synced_at, pg_catalog.now())
 WHERE state = 'archived' AND hubspot_id IS NOT NULL;

/* Which of these keys erpcrm already archived in HubSpot (worker). */
CREATE FUNCTION erpcrm._archived_keys(p_mapping_id integer, p_erp_ids text[])
RETURNS SETOF text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT s.erp_id FROM erpcrm.sync_state s
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND s.archived_at IS NOT NULL AND s.hubspot_id IS NOT NULL;
END;

/*
 * After _done (worker): the missing links of the keys just synced, the keys
 * just archived, and the dependents that must be sent again because a
 * target came or went.
 *   p_synced / p_unlinked: keys synced now, and their missing links as a
 *     jsonb object text (NULL: every link made);
 *   p_archived: keys archived now (or found archived already).
 */
CREATE FUNCTION erpcrm._links_done(p_mapping_id integer, p_synced text[], p_unlinked text[],
								   p_archived text[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint := 0;
	k bigint;
	archived_ids text[];
	dep record;
BEGIN
	/* by primary key lookups only (part 4): no join to hash the mapping */
	IF p_synced IS NOT NULL AND cardinality(p_synced) > 0 THEN
		UPDATE erpcrm.sync_state s
		   SET unlinked = p_unlinked[array_position(p_synced, s.erp_id)]::jsonb, archived_at = NULL
		 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_synced)
		   AND (s.unlinked IS DISTINCT FROM p_unlinked[array_position(p_synced, s.erp_id)]::jsonb
				OR s.archived_at IS NOT NULL);
	END IF;
	IF p_archived IS NOT NULL AND cardinality(p_archived) > 0 THEN
		WITH u AS (
			UPDATE erpcrm.sync_state s
			   SET archived_at = COALESCE(s.archived_at, now()), unlinked = NULL
			 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_archived)
			RETURNING s.hubspot_id)
		SELECT array_agg(u.hubspot_id) INTO archived_ids FROM u WHERE u.hubspot_id IS NOT NULL;
	END IF;
	IF NOT EXISTS (SELECT FROM erpcrm.association a WHERE a.target_id = p_mapping_id) THEN
		RETURN 0;
	END IF;

	/* dependents linked to an object that is archived now lose the link */
	IF archived_ids IS NOT NULL THEN
		UPDATE erpcrm.sync_state r
		   SET change_seq = r.change_seq + 1,
			   state = CASE WHEN r.state = 'in_flight' THEN r.state ELSE 'pending' END,
			   attempts = CASE WHEN r.state = 'in_flight' THEN r.attempts ELSE 0 END,
			   next_attempt_at = CASE WHEN r.state = 'in_flight' THEN r.next_attempt_at ELSE now() END,
			   dirty_since = COALESCE(r.dirty_since, now())
		  FROM erpcrm.association a, unnest(archived_ids) AS o(id)
		 WHERE a.target_id = p_mapping_id AND r.mapping_id = a.mapping_id
		   AND r.state IN ('synced', 'failed', 'pending', 'in_flight')
		   AND strpos(';' || r.assoc_state || ';', ';' || a.column_name || '=' || o.id || ';') > 0;
		GET DIAGNOSTICS k = ROW_COUNT;
		n := n + k;
	END IF;

	/* dependents sent without a link to a key that is in HubSpot now get it */
	/* (one association at a time: the dependents' unlinked keys are read
	 * through sync_state_unlinked, never the dependent mapping whole) */
	IF p_synced IS NOT NULL AND cardinality(p_synced) > 0 THEN
		FOR dep IN SELECT a.mapping_id, a.column_name FROM erpcrm.association a
					WHERE a.target_id = p_mapping_id LOOP
			UPDATE erpcrm.sync_state r
			   SET change_seq = r.change_seq + 1,
				   state = CASE WHEN r.state = 'in_flight' THEN r.state ELSE 'pending' END,
				   attempts = CASE WHEN r.state = 'in_flight' THEN r.attempts ELSE 0 END,
				   next_attempt_at = CASE WHEN r.state = 'in_flight' THEN r.next_attempt_at ELSE now() END,
				   dirty_since = COALESCE(r.dirty_since, now())
			 WHERE r.mapping_id = dep.mapping_id
			   AND r.unlinked IS NOT NULL
			   AND r.unlinked ->> dep.column_name = ANY (p_synced)
			   AND r.state IN ('synced', 'failed', 'pending', 'in_flight');
			GET DIAGNOSTICS k = ROW_COUNT;
			n := n + k;
		END LOOP;
	END IF;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._archived_keys(integer, text[]),
	erpcrm._links_done(integer, text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._archived_keys(integer, text[]),
	erpcrm._links_done(integer, text[], text[], text[]) TO erpcrm_admin;

/*
 * Which of these keys a match search found nothing for, at least p_settle_ms
 * ago (worker): they are searched once more, then created.
 */
CREATE FUNCTION erpcrm._searched_keys(p_mapping_id integer, p_erp_ids text[], p_settle_ms integer)
RETURNS SETOF text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT s.erp_id FROM erpcrm.sync_state s
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND s.error_category = 'WAITING_FOR_SEARCH'
	   AND s.error_at <= now() - make_interval(secs => p_settle_ms / 1000.0);
END;
REVOKE ALL ON FUNCTION erpcrm._searched_keys(integer, text[], integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._searched_keys(integer, text[], integer) TO erpcrm_admin;

/* Objects sent without a link, and why. */
CREATE VIEW erpcrm.unlinked AS
SELECT m.name AS mapping, s.erp_id, s.hubspot_id, u.key AS "column",
	   t.name AS target, u.value AS target_erp_id,
	   CASE WHEN ts.archived_at IS NOT NULL
			THEN 'the target left ' || t.source::pg_catalog.text || ' and was archived in HubSpot'
			WHEN ts.hubspot_id IS NOT NULL AND ts.state <> 'archived'
			THEN 'the target is on its way back to HubSpot'
			ELSE 'the target is not in ' || t.source::pg_catalog.text END AS reason,
	   s.last_synced_at
  FROM erpcrm.sync_state s
  JOIN erpcrm.mapping m ON m.mapping_id = s.mapping_id
 CROSS JOIN LATERAL pg_catalog.jsonb_each_text(s.unlinked) AS u(key, value)
  JOIN erpcrm.association a ON a.mapping_id = s.mapping_id AND a.column_name = u.key
  JOIN erpcrm.mapping t ON t.mapping_id = a.target_id
  LEFT JOIN erpcrm.sync_state ts ON ts.mapping_id = t.mapping_id AND ts.erp_id = u.value
 WHERE s.unlinked IS NOT NULL;
COMMENT ON VIEW erpcrm.unlinked IS 'objects sent to HubSpot without a link, because the linked object is not in HubSpot';
REVOKE ALL ON erpcrm.unlinked FROM PUBLIC;
GRANT SELECT ON erpcrm.unlinked TO erpcrm_monitor, pg_monitor;


-- ===================================================================
-- Part 6: monitoring
-- ===================================================================

/*
 * erpcrm.status: one row per mapping, in a stable order (by name).  Part 2's
 * view, restated with the order.
 */
CREATE OR REPLACE VIEW erpcrm.status AS
SELECT m.name AS mapping,
	   m.object_type,
	   COALESCE((SELECT format('%I.%I', n.nspname, c.relname)
				   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
				  WHERE c.oid = m.source), m.source_name) AS source,
	   m.paused OR c.paused AS paused,
	   COALESCE(o.n, 0) + COALESCE(f.n, 0) AS unfolded,
	   COALESCE(s.pending, 0) AS pending,
	   COALESCE(s.in_flight, 0) AS in_flight,
	   COALESCE(s.failed, 0) AS failed,
	   COALESCE(s.synced, 0) AS synced,
	   COALESCE(s.archived, 0) AS archived,
	   pg_catalog.now() - s.oldest_dirty AS oldest_pending_age,
	   s.last_success,
	   round(COALESCE(s.recent, 0) / 60.0, 1) AS per_second,
	   CASE WHEN COALESCE(s.pending, 0) + COALESCE(s.in_flight, 0) = 0 THEN interval '0'
			WHEN COALESCE(s.recent, 0) = 0 THEN NULL
			ELSE make_interval(secs => (s.pending + s.in_flight) / (s.recent / 60.0))
	   END AS time_left,
	   erpcrm._mapping_problem(m.mapping_id) AS problem
  FROM erpcrm.mapping m
 CROSS JOIN erpcrm.control c
  LEFT JOIN (SELECT mapping_id,
					count(*) FILTER (WHERE state = 'pending') AS pending,
					count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
					count(*) FILTER (WHERE state = 'failed') AS failed,
					count(*) FILTER (WHERE state = 'synced') AS synced,
					count(*) FILTER (WHERE state = 'archived') AS archived,
					min(dirty_since) FILTER (WHERE state IN ('pending', 'in_flight')) AS oldest_dirty,
					max(last_synced_at) AS last_success,
					count(*) FILTER (WHERE last_synced_at > pg_catalog.now() - interval '1 minute') AS recent
			   FROM erpcrm.sync_state GROUP BY mapping_id) s
	ON s.mapping_id = m.mapping_id
  LEFT JOIN (SELECT mapping_id, sum(COALESCE(pg_catalog.cardinality(erp_ids), 1)) AS n
			   FROM erpcrm.outbox GROUP BY mapping_id) o
	ON o.mapping_id = m.mapping_id
  LEFT JOIN (SELECT w.mapping_id, sum(COALESCE(pg_catalog.cardinality(x.erp_ids), 1)) AS n
			   FROM erpcrm.fan_out x JOIN erpcrm.watch w USING (watch_id) GROUP BY w.mapping_id) f
	ON f.mapping_id = m.mapping_id
 ORDER BY m.name;


-- ===================================================================
-- red: review of 1.2 from outside (Part 1, security; restated here, after
-- the Parts whose functions it changes)
-- ===================================================================

/*
 * red: a mapping whose view was dropped waits for a view of the same name
 * (Part 2).  It adopts only a view whose owner has the privileges of the
 * mapping's owner (its own view, or a superuser's): the worker reads the
 * view as the mapping's owner, so a view that another role created under
 * that name, in a schema others may create in, would run that role's
 * functions with the owner's rights (a superuser's, for a mapping a
 * superuser defined).  Such a view is left alone, and erpcrm.status says so.
 */
CREATE OR REPLACE FUNCTION erpcrm._resolve_sources()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n integer;
	k integer;
BEGIN
	/* (Part 2: the view found again may hold other rows: every key is marked) */
	WITH found AS (
		UPDATE erpcrm.mapping m SET source = c.oid
		  FROM pg_class c
		 WHERE m.source_name IS NOT NULL
		   AND NOT EXISTS (SELECT FROM pg_class x WHERE x.oid = m.source)
		   AND c.oid = to_regclass(m.source_name)
		   AND pg_has_role(c.relowner, m.owner, 'USAGE')
		RETURNING m.mapping_id
	)
	INSERT INTO erpcrm.outbox (mapping_id, erp_id) SELECT found.mapping_id, NULL FROM found;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE erpcrm.mapping m SET source_name = erpcrm._relation_name(m.source)
	 WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source)
	   AND m.source_name IS DISTINCT FROM erpcrm._relation_name(m.source);
	GET DIAGNOSTICS k = ROW_COUNT;
	RETURN n + k;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._resolve_sources() FROM PUBLIC;

/* red: Part 2's _mapping_problem, saying why a view of that name is not read. */
CREATE OR REPLACE FUNCTION erpcrm._mapping_problem(p_mapping_id integer)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '50ms'
AS $$
DECLARE
	m erpcrm.mapping;
	w record;
	problems text[] := '{}';
BEGIN
	SELECT * INTO m FROM erpcrm.mapping WHERE mapping_id = p_mapping_id;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source) THEN
		SELECT c.relowner::regrole INTO w FROM pg_class c WHERE c.oid = to_regclass(m.source_name)
		   AND NOT pg_has_role(c.relowner, m.owner, 'USAGE');
		IF FOUND THEN
			/* red: a view of that name that is not the owner's is not adopted */
			problems := problems || format('its source %s is owned by %s, who lacks the privileges of the mapping''s owner %s: it is not read; changes wait until the owner maps it with erpcrm.map()',
										   m.source_name, w.relowner, m.owner);
		ELSE
			problems := problems || format('its source %s does not exist; changes wait until it is created again',
										   COALESCE(m.source_name, m.source::oid::text));
		END IF;
	ELSIF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = m.source AND a.attname = 'erp_id'
						 AND a.attnum > 0 AND NOT a.attisdropped) THEN
		problems := problems || format('its source %s has no column erp_id', m.source::regclass);
	END IF;
	FOR w IN SELECT t.name FROM erpcrm.association a JOIN erpcrm.mapping t ON t.mapping_id = a.target_id
			  WHERE a.mapping_id = p_mapping_id AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.source)
			  ORDER BY t.name
	LOOP
		problems := problems || format('waits for mapping "%s", whose source does not exist', w.name);
	END LOOP;
	FOR w IN SELECT x.* FROM erpcrm.watch x WHERE x.mapping_id = p_mapping_id ORDER BY x.watch_id LOOP
		IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = w.source AND t.tgenabled = 'D'
					  AND t.tgname IN (w.trigger_name, w.trigger_name || '_i', w.trigger_name || '_u',
									   w.trigger_name || '_d', w.trigger_name || '_t')) THEN
			problems := problems || format('a trigger of watch %s on %s is disabled (ALTER TABLE ... ENABLE TRIGGER)',
										   w.watch_id, w.source::regclass);
		ELSIF NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = w.source AND t.tgname = w.trigger_name || '_t')
		   OR NOT (EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = w.source AND t.tgname = w.trigger_name)
				   OR (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = w.source
						AND t.tgname IN (w.trigger_name || '_i', w.trigger_name || '_u', w.trigger_name || '_d')) = 3) THEN
			problems := problems || format('a trigger of watch %s on %s is missing', w.watch_id, w.source::regclass);
		END IF;
		BEGIN
			PERFORM erpcrm._compile_key(w.source, w.key_expr);
		EXCEPTION WHEN lock_not_available THEN
			NULL;
		WHEN OTHERS THEN
			problems := problems || format('the key %s of watch %s no longer fits %s: %s', w.key_expr, w.watch_id, w.source::regclass, SQLERRM);
		END;
		IF w.problem IS NOT NULL THEN
			problems := problems || format('watch %s on %s: %s', w.watch_id, w.source::regclass, w.problem);
		END IF;
	END LOOP;
	RETURN NULLIF(array_to_string(problems, '; '), '');
END
$$;
REVOKE ALL ON FUNCTION erpcrm._mapping_problem(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._mapping_problem(integer) TO erpcrm_monitor, pg_monitor;

/*
 * red: which objects the DDL command now running (in an event trigger of
 * erpcrm) created, changed or dropped.
 */
CREATE FUNCTION erpcrm._ddl_objects()
RETURNS SETOF oid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	BEGIN
		RETURN QUERY SELECT d.objid FROM pg_event_trigger_dropped_objects() d;
		RETURN;
	EXCEPTION WHEN OTHERS THEN
		NULL;					/* not in sql_drop */
	END;
	RETURN QUERY SELECT c.objid FROM pg_event_trigger_ddl_commands() c;
END
$$;

/* red: does the running DDL touch this watch's table, or an object its key names? */
CREATE FUNCTION erpcrm._touches_watch(p_source oid, p_tree text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT EXISTS (SELECT FROM erpcrm._ddl_objects() o
					WHERE o = p_source
					   OR p_tree ~ (':[a-z]+ ' || o::text || '[ )}]'))
$$;

/*
 * red: does a key's last compiled tree name a function, operator or type
 * that no longer exists?  Then it was broken before the DDL now running
 * (unless that DDL dropped it, which _touches_watch sees).
 */
CREATE FUNCTION erpcrm._key_was_broken(p_tree text)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT EXISTS (SELECT FROM regexp_matches(p_tree, ':(funcid|opfuncid|opno) ([0-9]+)', 'g') m
					WHERE NOT EXISTS (SELECT FROM pg_proc p WHERE p.oid = m[2]::oid)
					  AND NOT EXISTS (SELECT FROM pg_operator o WHERE o.oid = m[2]::oid))
		OR EXISTS (SELECT FROM regexp_matches(p_tree, ':(consttype|vartype|resulttype|funcresulttype|opresulttype) ([0-9]+)', 'g') m
					WHERE NOT EXISTS (SELECT FROM pg_type t WHERE t.oid = m[2]::oid))
$$;

/* red: Part 2's _check_watches, not failing unrelated DDL over a key broken before. */
CREATE OR REPLACE FUNCTION erpcrm._check_watches(p_table oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w record;
	tree text;
	renamed text;
	err text;
BEGIN
	FOR w IN SELECT x.watch_id, x.source, x.key_expr, x.key_tree, x.key_query, x.owner,
					m.name AS mapping
			   FROM erpcrm.watch x JOIN erpcrm.mapping m USING (mapping_id)
			  WHERE (p_table IS NULL OR x.source = p_table)
				AND EXISTS (SELECT FROM pg_class c WHERE c.oid = x.source)
			  ORDER BY x.watch_id
	LOOP
		IF w.key_query IS NOT NULL THEN
			BEGIN
				PERFORM erpcrm._check_key_query(w.key_query, w.owner);
			EXCEPTION WHEN OTHERS THEN
				UPDATE erpcrm.watch SET problem = format('its key query no longer plans: %s', SQLERRM)
				 WHERE watch_id = w.watch_id;
				RAISE WARNING 'the key query of erpcrm watch % of mapping "%" no longer plans: %', w.watch_id, w.mapping, SQLERRM
					USING HINT = format('Its keys wait. Watch %s again with a key query that fits: erpcrm.unwatch(%L, %L) and erpcrm.watch().',
										w.source::regclass, w.mapping, w.source::regclass::text);
			END;
		END IF;
		BEGIN
			tree := erpcrm._compile_key(w.source, w.key_expr);
			IF tree IS DISTINCT FROM w.key_tree THEN
				UPDATE erpcrm.watch SET key_tree = tree WHERE watch_id = w.watch_id;
			END IF;
			CONTINUE;
		EXCEPTION WHEN OTHERS THEN
			err := SQLERRM;
		END;
		BEGIN
			renamed := erpcrm._rename_key(w.source, w.key_tree);
		EXCEPTION WHEN OTHERS THEN
			/*
			 * red: a key broken before this command, by a way erpcrm could
			 * not check (event triggers off in replica mode), must not make
			 * every unrelated DDL of the database fail, whoever runs it: it
			 * is reported by erpcrm.status (the capture marks every key of
			 * the mapping, and warns), and only a command that touches the
			 * watch's table or the objects its key names is refused.
			 */
			IF p_table IS NULL AND NOT erpcrm._touches_watch(w.source, w.key_tree)
			   AND erpcrm._key_was_broken(w.key_tree) THEN
				CONTINUE;		/* erpcrm.status shows it */
			END IF;
			RAISE EXCEPTION 'this change would break erpcrm watch % of mapping "%" on table %', w.watch_id, w.mapping, w.source::regclass
				USING ERRCODE = 'dependent_objects_still_exist',
					  DETAIL = format('Its key %s no longer fits the table: %s.', w.key_expr, err),
					  HINT = format('Stop watching the table first with SELECT erpcrm.unwatch(%L, %L), make the change, then watch it again with a key that fits.',
									w.mapping, w.source::regclass::text);
		END;
		UPDATE erpcrm.watch
		   SET key_expr = renamed, key_tree = erpcrm._compile_key(w.source, renamed)
		 WHERE watch_id = w.watch_id;
		RAISE NOTICE 'the key of erpcrm watch % of mapping "%" is now %', w.watch_id, w.mapping, renamed;
	END LOOP;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._ddl_objects(), erpcrm._touches_watch(oid, text),
	erpcrm._key_was_broken(text), erpcrm._check_watches(oid) FROM PUBLIC;

/*
 * red: a watched partitioned table has a row trigger that PostgreSQL clones
 * onto every partition created or attached later, and cloning it asks the
 * role running CREATE TABLE ... PARTITION OF (or ATTACH PARTITION) for
 * EXECUTE on erpcrm.capture(): without it, the ERP's owner can no longer
 * add a partition to its own table.  capture() cannot be called except as
 * a trigger, and a capture trigger that is not on its watch's table (or a
 * partition of it) refuses to run, so EXECUTE lets no one write to erpcrm's
 * outbox what erpcrm.watch() did not ask for.
 */
GRANT EXECUTE ON FUNCTION erpcrm.capture() TO PUBLIC;

/* ------------------------------------------------------------------
 * Part 7: preview and owners
 * ------------------------------------------------------------------
 */

/*
 * The requests the worker would send to HubSpot for one key, built by the
 * worker's own code (worker/delivery.c, worker/json.c, worker/values.c)
 * from the view row read as the mapping's owner, in a security-restricted
 * operation, as the worker reads it.  Nothing is sent, nothing changes.
 */
CREATE FUNCTION erpcrm._preview(mapping_id integer, erp_id text, hubspot_id text)
RETURNS TABLE (step integer, method text, path text, body json, note text)
LANGUAGE C
AS 'MODULE_PATHNAME', 'erpcrm_preview_v1';
REVOKE ALL ON FUNCTION erpcrm._preview(integer, text, text) FROM PUBLIC;

CREATE FUNCTION erpcrm.preview(mapping text, erp_id text)
RETURNS TABLE (step integer, method text, path text, body json, note text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(preview.mapping);
BEGIN
	IF preview.erp_id IS NULL THEN
		RAISE EXCEPTION 'the key must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY
	SELECT p.step, p.method, p.path, p.body, p.note
	  FROM erpcrm._preview(m.mapping_id, preview.erp_id,
						   (SELECT s.hubspot_id FROM erpcrm.sync_state s
							 WHERE s.mapping_id = m.mapping_id
							   AND s.erp_id = preview.erp_id)) AS p;
END
$$;
COMMENT ON FUNCTION erpcrm.preview(text, text) IS 'the HubSpot requests the worker would send for one key (method, path, JSON body), or what the key waits for; a dry run, nothing is sent';
REVOKE ALL ON FUNCTION erpcrm.preview(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.preview(text, text) TO erpcrm_admin;

/*
 * red: preview() reads the view as the mapping's owner; another erpcrm_admin
 * must not see through it rows it cannot SELECT (Part 7's, restated).
 */
CREATE OR REPLACE FUNCTION erpcrm.preview(mapping text, erp_id text)
RETURNS TABLE (step integer, method text, path text, body json, note text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(preview.mapping);
BEGIN
	/* red: the view is read as its owner; show it only to who may read it */
	IF NOT has_table_privilege(erpcrm._caller(), m.source, 'SELECT') THEN
		RAISE EXCEPTION 'permission denied to preview mapping "%"', m.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('preview() shows the rows of %s, which needs SELECT on it, as erpcrm.map() does.', m.source_name);
	END IF;
	IF preview.erp_id IS NULL THEN
		RAISE EXCEPTION 'the key must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY
	SELECT p.step, p.method, p.path, p.body, p.note
	  FROM erpcrm._preview(m.mapping_id, preview.erp_id,
						   (SELECT s.hubspot_id FROM erpcrm.sync_state s
							 WHERE s.mapping_id = m.mapping_id
							   AND s.erp_id = preview.erp_id)) AS p;
END
$$;
REVOKE ALL ON FUNCTION erpcrm.preview(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.preview(text, text) TO erpcrm_admin;

/*
 * Owners by e-mail.  The worker copies HubSpot's owners (GET /crm/v3/owners,
 * active and deactivated) into erpcrm.hubspot_owner when it starts and
 * every hour; erpcrm.owner_id(email) answers from that copy, so that mapping
 * views can write erpcrm.owner_id(s.email) AS hubspot_owner_id.
 */
CREATE TABLE erpcrm.hubspot_owner (
	owner_id		text PRIMARY KEY,
	email			text,
	archived		boolean NOT NULL DEFAULT false,
	refreshed_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX hubspot_owner_email ON erpcrm.hubspot_owner (pg_catalog.lower(email));
COMMENT ON TABLE erpcrm.hubspot_owner IS 'the copy of HubSpot''s owners that erpcrm.owner_id() reads; the worker refreshes it at start and every hour';
REVOKE ALL ON erpcrm.hubspot_owner FROM PUBLIC;
GRANT SELECT ON erpcrm.hubspot_owner TO erpcrm_admin, erpcrm_monitor;

/* Rows read whose e-mail matched no active owner, per mapping. */
CREATE TABLE erpcrm.owner_miss (
	mapping_id		integer PRIMARY KEY REFERENCES erpcrm.mapping ON DELETE CASCADE,
	unknown_owners	bigint NOT NULL DEFAULT 0,
	last_at			timestamptz
);
REVOKE ALL ON erpcrm.owner_miss FROM PUBLIC;

CREATE FUNCTION erpcrm.owner_id(email text)
RETURNS text
LANGUAGE C STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'erpcrm_owner_id_v1';
COMMENT ON FUNCTION erpcrm.owner_id(text) IS 'the HubSpot owner id of an e-mail (case-insensitive), from the worker''s copy of HubSpot''s owners; NULL for an unknown or deactivated owner, for mapping views';
REVOKE ALL ON FUNCTION erpcrm.owner_id(text) FROM PUBLIC;
/* like erpcrm.hubspot_id(): for the roles that define mappings */
GRANT EXECUTE ON FUNCTION erpcrm.owner_id(text) TO erpcrm_admin;

/* The worker: the owners it read (all of them, archived as 'true' or 'false'), replacing the copy. */
CREATE FUNCTION erpcrm._owners_refreshed(p_ids text[], p_emails text[], p_archived text[])
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	DELETE FROM erpcrm.hubspot_owner o WHERE o.owner_id <> ALL (p_ids);
	INSERT INTO erpcrm.hubspot_owner AS o (owner_id, email, archived, refreshed_at)
	SELECT DISTINCT ON (x.id) x.id, x.email, x.archived::boolean, pg_catalog.now()
	  FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_emails),
				   pg_catalog.unnest(p_archived)) AS x(id, email, archived)
	 ORDER BY x.id, x.archived
	ON CONFLICT (owner_id) DO UPDATE
	   SET email = excluded.email, archived = excluded.archived, refreshed_at = excluded.refreshed_at;
	/* the counts are about the copy that was used */
	UPDATE erpcrm.owner_miss SET unknown_owners = 0;
$$;
REVOKE ALL ON FUNCTION erpcrm._owners_refreshed(text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._owners_refreshed(text[], text[], text[]) TO erpcrm_admin;

/* The worker: rows of one batch whose e-mail matched no active owner. */
CREATE FUNCTION erpcrm._owner_misses(p_mapping_id integer, p_n bigint)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO erpcrm.owner_miss AS o (mapping_id, unknown_owners, last_at)
	VALUES (p_mapping_id, p_n, pg_catalog.now())
	ON CONFLICT (mapping_id) DO UPDATE
	   SET unknown_owners = o.unknown_owners + excluded.unknown_owners, last_at = excluded.last_at;
$$;
REVOKE ALL ON FUNCTION erpcrm._owner_misses(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._owner_misses(integer, bigint) TO erpcrm_admin;

/*
 * erpcrm.status gains unknown_owners (Part 6's view, restated with one more
 * column at the end).
 */
CREATE OR REPLACE VIEW erpcrm.status AS
SELECT m.name AS mapping,
	   m.object_type,
	   COALESCE((SELECT format('%I.%I', n.nspname, c.relname)
				   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
				  WHERE c.oid = m.source), m.source_name) AS source,
	   m.paused OR c.paused AS paused,
	   COALESCE(o.n, 0) + COALESCE(f.n, 0) AS unfolded,
	   COALESCE(s.pending, 0) AS pending,
	   COALESCE(s.in_flight, 0) AS in_flight,
	   COALESCE(s.failed, 0) AS failed,
	   COALESCE(s.synced, 0) AS synced,
	   COALESCE(s.archived, 0) AS archived,
	   pg_catalog.now() - s.oldest_dirty AS oldest_pending_age,
	   s.last_success,
	   round(COALESCE(s.recent, 0) / 60.0, 1) AS per_second,
	   CASE WHEN COALESCE(s.pending, 0) + COALESCE(s.in_flight, 0) = 0 THEN interval '0'
			WHEN COALESCE(s.recent, 0) = 0 THEN NULL
			ELSE make_interval(secs => (s.pending + s.in_flight) / (s.recent / 60.0))
	   END AS time_left,
	   erpcrm._mapping_problem(m.mapping_id) AS problem,
	   COALESCE(om.unknown_owners, 0) AS unknown_owners
  FROM erpcrm.mapping m
 CROSS JOIN erpcrm.control c
  LEFT JOIN (SELECT mapping_id,
					count(*) FILTER (WHERE state = 'pending') AS pending,
					count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
					count(*) FILTER (WHERE state = 'failed') AS failed,
					count(*) FILTER (WHERE state = 'synced') AS synced,
					count(*) FILTER (WHERE state = 'archived') AS archived,
					min(dirty_since) FILTER (WHERE state IN ('pending', 'in_flight')) AS oldest_dirty,
					max(last_synced_at) AS last_success,
					count(*) FILTER (WHERE last_synced_at > pg_catalog.now() - interval '1 minute') AS recent
			   FROM erpcrm.sync_state GROUP BY mapping_id) s
	ON s.mapping_id = m.mapping_id
  LEFT JOIN (SELECT mapping_id, sum(COALESCE(pg_catalog.cardinality(erp_ids), 1)) AS n
			   FROM erpcrm.outbox GROUP BY mapping_id) o
	ON o.mapping_id = m.mapping_id
  LEFT JOIN (SELECT w.mapping_id, sum(COALESCE(pg_catalog.cardinality(x.erp_ids), 1)) AS n
			   FROM erpcrm.fan_out x JOIN erpcrm.watch w USING (watch_id) GROUP BY w.mapping_id) f
	ON f.mapping_id = m.mapping_id
  LEFT JOIN erpcrm.owner_miss om ON om.mapping_id = m.mapping_id
 ORDER BY m.name;
COMMENT ON COLUMN erpcrm.status.unknown_owners IS 'rows read since the last refresh of HubSpot''s owners whose e-mail (erpcrm.owner_id) matched no active owner';

/*
 * lead: resync() of a mapping whose view is gone says so by the mapping's
 * name, with the reason erpcrm.status gives, instead of failing on a
 * relation OID.  A view created again under the name is found first.
 */
CREATE OR REPLACE FUNCTION erpcrm.resync(mapping text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(resync.mapping);
	n bigint;
	tries integer := 0;
BEGIN
	PERFORM erpcrm._resolve_sources();
	IF NOT EXISTS (SELECT FROM erpcrm.mapping x JOIN pg_catalog.pg_class c ON c.oid = x.source
					WHERE x.mapping_id = m.mapping_id) THEN
		RAISE EXCEPTION 'the view of mapping "%" does not exist', m.name
			USING ERRCODE = 'undefined_table',
				  DETAIL = pg_catalog.format('erpcrm.status says: %s.', erpcrm._mapping_problem(m.mapping_id)),
				  HINT = 'Create the view again under that name, or define the mapping again with erpcrm.map().';
	END IF;
	LOOP
		BEGIN
			n := erpcrm._dirty_all(m.mapping_id);
			EXIT;
		EXCEPTION WHEN deadlock_detected THEN
			tries := tries + 1;
			IF tries >= 5 THEN
				RAISE;
			END IF;
			PERFORM pg_catalog.pg_sleep(0.05 * tries);
		END;
	END LOOP;
	PERFORM erpcrm._wake();
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm.resync(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.resync(text) TO erpcrm_admin;

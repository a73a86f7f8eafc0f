/* erpcrm--1.0--1.1.sql: deals, line items and HubSpot setup */

\echo Use "ALTER EXTENSION erpcrm UPDATE TO '1.1'" to load this file. \quit

/*
 * Packed outbox rows: a transaction that captures many keys of one mapping
 * writes them a few hundred to a row (erp_ids), stored inline, uncompressed.
 */
ALTER TABLE erpcrm.outbox ADD COLUMN erp_ids text[];
ALTER TABLE erpcrm.outbox ALTER COLUMN erp_ids SET STORAGE PLAIN;
COMMENT ON COLUMN erpcrm.outbox.erp_ids IS 'several keys in one row (erp_id is then NULL); both NULL: every key of the mapping';

/*
 * An association may also be
 *   - a property: the target's HubSpot id is sent as that property instead
 *     of a v4 association (a line item's hs_product_id), with the same
 *     waiting for the target;
 *   - the owner's source: a row whose hubspot_owner_id is empty takes the
 *     HubSpot owner of the target (an invoice deal takes its company's).
 */
ALTER TABLE erpcrm.association
	ADD COLUMN as_property text
		CHECK (as_property IS NULL OR as_property ~ '^[a-z][a-z0-9_]{0,99}$'),
	ADD COLUMN inherit_owner boolean NOT NULL DEFAULT false;

/* A mapping may adopt existing HubSpot records that match on a property. */
ALTER TABLE erpcrm.mapping
	ADD COLUMN match_property text
		CHECK (match_property IS NULL OR match_property ~ '^[a-z][a-z0-9_]{0,99}$');

/* Pipelines and stages prepared by erpcrm.setup_hubspot(), for views. */
CREATE TABLE erpcrm.pipeline_stage (
	pipeline		text NOT NULL,
	stage			text NOT NULL,
	pipeline_id		text NOT NULL,
	stage_id		text NOT NULL,
	display_order	integer NOT NULL,
	PRIMARY KEY (pipeline, stage)
);
COMMENT ON TABLE erpcrm.pipeline_stage IS 'HubSpot ids of the pipelines and stages erpcrm.setup_hubspot() prepared';
SELECT pg_catalog.pg_extension_config_dump('erpcrm.pipeline_stage', '');

/* ------------------------------------------------------------------
 * map() learns match_property
 * ------------------------------------------------------------------
 */
CREATE FUNCTION erpcrm.set_match(mapping text, match_property text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(set_match.mapping);
BEGIN
	IF match_property IS NOT NULL THEN
		IF NOT EXISTS (SELECT FROM pg_attribute
						WHERE attrelid = m.source AND attname = match_property
						  AND attnum > 0 AND NOT attisdropped) THEN
			RAISE EXCEPTION 'relation % of mapping "%" has no column "%" to match on', m.source, m.name, match_property
				USING ERRCODE = 'undefined_column',
					  HINT = 'Match on a column of the view, such as domain, nip or email.';
		END IF;
		IF match_property = 'erp_id' OR match_property = m.id_property THEN
			RAISE EXCEPTION 'mapping "%" cannot match on its own id property', m.name
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'Matching finds HubSpot records that have no ERP id yet, by another property.';
		END IF;
	END IF;
	UPDATE erpcrm.mapping SET match_property = set_match.match_property
	 WHERE mapping_id = m.mapping_id;
END
$$;
COMMENT ON FUNCTION erpcrm.set_match(text, text) IS 'before creating an object, adopt a HubSpot record with the same value of this property and no ERP id (NULL: never)';

/* ------------------------------------------------------------------
 * associate() learns as_property and inherit_owner
 * ------------------------------------------------------------------
 */
DROP FUNCTION erpcrm.associate(text, text, text, integer, text);
CREATE FUNCTION erpcrm.associate(
	mapping text,
	column_name text,
	target text,
	type_id integer DEFAULT NULL,
	category text DEFAULT 'HUBSPOT_DEFINED',
	as_property text DEFAULT NULL,
	inherit_owner boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(mapping);
	t erpcrm.mapping;
	col_type regtype;
BEGIN
	SELECT * INTO t FROM erpcrm.mapping WHERE name = target;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'association target mapping "%" does not exist', target
			USING ERRCODE = 'undefined_object',
				  HINT = 'Define the target with erpcrm.map() before associating to it.';
	END IF;
	SELECT atttypid::regtype INTO col_type
	  FROM pg_attribute
	 WHERE attrelid = m.source AND attname = column_name AND attnum > 0 AND NOT attisdropped;
	IF col_type IS NULL THEN
		RAISE EXCEPTION 'relation % of mapping "%" has no column "%"', m.source, mapping, column_name
			USING ERRCODE = 'undefined_column',
				  DETAIL = 'An association column holds the erp_id of the associated object.',
				  HINT = format('Add the column to the view, for example: SELECT customer_id::text AS %s.', column_name);
	END IF;
	IF column_name = 'erp_id' OR column_name = m.id_property THEN
		RAISE EXCEPTION 'column "%" is the key of mapping "%" and cannot be an association', column_name, mapping
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF category IS NULL OR category NOT IN ('HUBSPOT_DEFINED', 'USER_DEFINED') THEN
		RAISE EXCEPTION 'invalid association category "%"', category
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use HUBSPOT_DEFINED or USER_DEFINED.';
	END IF;
	IF type_id IS NOT NULL AND type_id <= 0 THEN
		RAISE EXCEPTION 'invalid association type id %', type_id
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Leave it NULL for HubSpot''s default association, or give a positive associationTypeId.';
	END IF;
	IF as_property IS NOT NULL AND NOT erpcrm._valid_property_name(as_property) THEN
		RAISE EXCEPTION 'invalid property name "%"', as_property
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'as_property names the HubSpot property that receives the target''s HubSpot id, such as hs_product_id.';
	END IF;
	IF as_property IS NOT NULL AND EXISTS (SELECT FROM pg_attribute
											WHERE attrelid = m.source AND attname = as_property
											  AND attnum > 0 AND NOT attisdropped) THEN
		RAISE EXCEPTION 'relation % already has a column "%"', m.source, as_property
			USING ERRCODE = 'duplicate_column',
				  DETAIL = 'erpcrm fills that property with the target''s HubSpot id.',
				  HINT = 'Remove the column from the view.';
	END IF;
	IF inherit_owner AND NOT EXISTS (SELECT FROM pg_attribute
									  WHERE attrelid = m.source AND attname = 'hubspot_owner_id'
										AND attnum > 0 AND NOT attisdropped) THEN
		RAISE EXCEPTION 'relation % of mapping "%" has no column "hubspot_owner_id"', m.source, mapping
			USING ERRCODE = 'undefined_column',
				  DETAIL = 'inherit_owner fills hubspot_owner_id where the view leaves it NULL.',
				  HINT = 'Add the column to the view, NULL where the ERP knows no owner.';
	END IF;
	IF t.mapping_id = m.mapping_id OR erpcrm._closes_cycle(m.mapping_id, t.mapping_id) THEN
		RAISE EXCEPTION 'association from "%" to "%" would make a cycle', mapping, target
			USING ERRCODE = 'invalid_object_definition',
				  DETAIL = 'An object is sent after the objects it is associated to, so associations cannot go round in a circle.',
				  HINT = 'Declare the association in one direction only; HubSpot shows it from both sides.';
	END IF;

	INSERT INTO erpcrm.association AS a
		(mapping_id, column_name, target_id, type_id, category, as_property, inherit_owner)
	VALUES (m.mapping_id, associate.column_name, t.mapping_id, associate.type_id,
			associate.category, associate.as_property, associate.inherit_owner)
	ON CONFLICT ON CONSTRAINT association_pkey DO UPDATE
		SET type_id = excluded.type_id, category = excluded.category,
			as_property = excluded.as_property, inherit_owner = excluded.inherit_owner;
END
$$;
COMMENT ON FUNCTION erpcrm.associate(text, text, text, integer, text, text, boolean) IS 'make a view column that holds another mapping''s erp_id a HubSpot association (or, with as_property, a property holding its HubSpot id)';

/* ------------------------------------------------------------------
 * Helpers for mapping views
 * ------------------------------------------------------------------
 */

/* The HubSpot id of an object erpcrm delivered, or NULL. */
CREATE FUNCTION erpcrm.hubspot_id(mapping text, erp_id text)
RETURNS text
LANGUAGE sql STABLE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT s.hubspot_id
	  FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
	 WHERE m.name = hubspot_id.mapping AND s.erp_id = hubspot_id.erp_id
	   AND s.state <> 'archived';
$$;
COMMENT ON FUNCTION erpcrm.hubspot_id(text, text) IS 'the HubSpot id of a delivered object, for mapping views';

/* The HubSpot id of a stage prepared by erpcrm.setup_hubspot(). */
CREATE FUNCTION erpcrm.stage_id(pipeline text, stage text)
RETURNS text
LANGUAGE sql STABLE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT p.stage_id FROM erpcrm.pipeline_stage p
	 WHERE p.pipeline = stage_id.pipeline AND p.stage = stage_id.stage;
$$;
COMMENT ON FUNCTION erpcrm.stage_id(text, text) IS 'HubSpot id of a deal stage prepared by erpcrm.setup_hubspot(), for mapping views';

CREATE FUNCTION erpcrm.pipeline_id(pipeline text)
RETURNS text
LANGUAGE sql STABLE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT min(p.pipeline_id) FROM erpcrm.pipeline_stage p
	 WHERE p.pipeline = pipeline_id.pipeline;
$$;
COMMENT ON FUNCTION erpcrm.pipeline_id(text) IS 'HubSpot id of a deal pipeline prepared by erpcrm.setup_hubspot(), for mapping views';

/* ------------------------------------------------------------------
 * HubSpot setup from SQL (C: HTTP calls from this session)
 * ------------------------------------------------------------------
 */
CREATE FUNCTION erpcrm.setup_hubspot(
	pipeline text DEFAULT 'Invoices (ERP)',
	stages text[] DEFAULT '{Issued,Partially paid,Paid,Overdue,Corrected}',
	won_stages text[] DEFAULT '{Paid}',
	lost_stages text[] DEFAULT '{Corrected}',
	OUT object_type text,
	OUT kind text,
	OUT name text,
	OUT result text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'erpcrm_setup_hubspot_v1'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION erpcrm.setup_hubspot(text, text[], text[], text[]) IS 'prepare the HubSpot portal for the mappings: unique id properties, custom properties, property group, the invoice pipeline';

/* ------------------------------------------------------------------
 * Progress of backfills: rate and time left
 * ------------------------------------------------------------------
 */
CREATE OR REPLACE VIEW erpcrm.status AS
SELECT m.name AS mapping,
	   m.object_type,
	   m.source,
	   m.paused OR c.paused AS paused,
	   COALESCE(o.n, 0) AS unfolded,
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
	   END AS time_left
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
	ON o.mapping_id = m.mapping_id;

/* ------------------------------------------------------------------
 * Privileges
 * ------------------------------------------------------------------
 */
REVOKE ALL ON erpcrm.pipeline_stage FROM PUBLIC;
REVOKE ALL ON FUNCTION erpcrm.set_match(text, text),
	erpcrm.associate(text, text, text, integer, text, text, boolean),
	erpcrm.hubspot_id(text, text), erpcrm.stage_id(text, text),
	erpcrm.pipeline_id(text),
	erpcrm.setup_hubspot(text, text[], text[], text[]) FROM PUBLIC;
GRANT SELECT ON erpcrm.pipeline_stage TO erpcrm_monitor, pg_monitor;
GRANT EXECUTE ON FUNCTION erpcrm.set_match(text, text),
	erpcrm.associate(text, text, text, integer, text, text, boolean),
	erpcrm.hubspot_id(text, text), erpcrm.stage_id(text, text),
	erpcrm.pipeline_id(text),
	erpcrm.setup_hubspot(text, text[], text[], text[]) TO erpcrm_admin;

/* The worker records when each call was made, not when it wrote the row. */
CREATE FUNCTION erpcrm._log_call(p_called_at timestamptz, p_method text, p_path text,
								 p_status integer, p_latency_ms double precision,
								 p_inputs integer, p_category text, p_correlation_id text,
								 p_mapping_id integer, p_retention interval)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO erpcrm.api_call VALUES (p_called_at, p_method, p_path, p_status,
		p_latency_ms, p_inputs, p_category, p_correlation_id, p_mapping_id);
	IF random() < 0.01 THEN
		DELETE FROM erpcrm.api_call WHERE called_at < now() - p_retention;
	END IF;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._log_call(timestamptz, text, text, integer, double precision,
	integer, text, text, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._log_call(timestamptz, text, text, integer, double precision,
	integer, text, text, integer, interval) TO erpcrm_admin;

/* ------------------------------------------------------------------
 * Is HubSpot reachable, is the token right?
 * ------------------------------------------------------------------
 */
CREATE FUNCTION erpcrm.check_connection(OUT "check" text, OUT ok boolean, OUT detail text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'erpcrm_check_connection_v1'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION erpcrm.check_connection() IS 'check the token, its scopes, the portal and the rate limits, in plain words';
REVOKE ALL ON FUNCTION erpcrm.check_connection() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.check_connection() TO erpcrm_admin;

/* ------------------------------------------------------------------
 * Associations made, per key: unchanged ones are not made again, and an
 * association whose target changed is removed
 * ------------------------------------------------------------------
 */
ALTER TABLE erpcrm.sync_state ADD COLUMN assoc_state text;
COMMENT ON COLUMN erpcrm.sync_state.assoc_state IS 'associations made for this key: column=hubspot id, separated by ;';

CREATE FUNCTION erpcrm._set_assoc_state(p_mapping_id integer, p_erp_ids text[], p_states text[])
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	WITH u AS (
		UPDATE erpcrm.sync_state s SET assoc_state = d.state
		  FROM unnest(p_erp_ids, p_states) AS d(erp_id, state)
		 WHERE s.mapping_id = p_mapping_id AND s.erp_id = d.erp_id
		RETURNING 1)
	SELECT count(*) FROM u;
END;
REVOKE ALL ON FUNCTION erpcrm._set_assoc_state(integer, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._set_assoc_state(integer, text[], text[]) TO erpcrm_admin;

/* ------------------------------------------------------------------
 * Capture per statement: new watches read a statement's rows from its
 * transition tables instead of firing once per row (partitions and
 * inheritance children, which cannot have transition tables, keep row
 * triggers; so do watches made by 1.0)
 * ------------------------------------------------------------------
 */
CREATE OR REPLACE FUNCTION erpcrm._drop_watch(p_watch_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w erpcrm.watch;
	suffix text;
BEGIN
	DELETE FROM erpcrm.watch WHERE watch_id = p_watch_id RETURNING * INTO w;
	IF FOUND AND EXISTS (SELECT FROM pg_class WHERE oid = w.source) THEN
		FOREACH suffix IN ARRAY ARRAY['', '_i', '_u', '_d', '_t'] LOOP
			IF EXISTS (SELECT FROM pg_trigger
						WHERE tgrelid = w.source AND tgname = w.trigger_name || suffix) THEN
				EXECUTE format('DROP TRIGGER %I ON %s', w.trigger_name || suffix, w.source);
			END IF;
		END LOOP;
	END IF;
END
$$;

CREATE OR REPLACE FUNCTION erpcrm.watch(mapping text, source regclass, key text)
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
	IF EXISTS (SELECT FROM erpcrm.watch w
				WHERE w.mapping_id = m.mapping_id AND w.source = watch.source AND w.key_expr = key) THEN
		SELECT watch_id INTO wid FROM erpcrm.watch w
		 WHERE w.mapping_id = m.mapping_id AND w.source = watch.source AND w.key_expr = key;
		RETURN wid;
	END IF;

	tree := erpcrm._compile_key(source, key);

	INSERT INTO erpcrm.watch (mapping_id, source, key_expr, key_tree, trigger_name)
	VALUES (m.mapping_id, source, key, tree, '')
	RETURNING watch_id INTO wid;
	tname := format('erpcrm_watch_%s', wid);
	UPDATE erpcrm.watch SET trigger_name = tname WHERE watch_id = wid;

	IF EXISTS (SELECT FROM pg_inherits WHERE inhrelid = source) THEN
		/* a partition or an inheritance child cannot have transition tables */
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
	RETURN wid;
END
$$;

/* Folding and key status read packed rows too. */
CREATE OR REPLACE FUNCTION erpcrm._fold()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
	whole integer[];
	mid integer;
BEGIN
	WITH d AS (
		DELETE FROM erpcrm.outbox RETURNING mapping_id, erp_id, erp_ids
	), keys AS (
		SELECT DISTINCT d.mapping_id, k.erp_id
		  FROM d CROSS JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS k(erp_id)
		 WHERE k.erp_id IS NOT NULL
		   AND EXISTS (SELECT FROM erpcrm.mapping m WHERE m.mapping_id = d.mapping_id)
	), ins AS (
		INSERT INTO erpcrm.sync_state AS s (mapping_id, erp_id)
		SELECT keys.mapping_id, keys.erp_id FROM keys
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'pending' END,
			attempts = CASE WHEN s.state = 'in_flight' THEN s.attempts ELSE 0 END,
			next_attempt_at = CASE WHEN s.state = 'in_flight' THEN s.next_attempt_at ELSE now() END,
			dirty_since = COALESCE(s.dirty_since, now())
		RETURNING 1
	)
	SELECT (SELECT count(*) FROM ins),
		   (SELECT array_agg(DISTINCT d.mapping_id) FROM d
			 WHERE d.erp_id IS NULL AND d.erp_ids IS NULL)
	  INTO n, whole;

	IF whole IS NOT NULL THEN
		FOREACH mid IN ARRAY whole LOOP
			n := n + erpcrm._dirty_all(mid);
		END LOOP;
	END IF;
	RETURN n;
END
$$;

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
		ON s.mapping_id = m.mapping_id AND s.erp_id = key_status.erp_id;
END
$$;

/* A resync while the worker records a batch may meet it in a deadlock: try again. */
CREATE OR REPLACE FUNCTION erpcrm.resync(mapping text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	mid integer := (erpcrm._mapping(resync.mapping)).mapping_id;
	n bigint;
	tries integer := 0;
BEGIN
	LOOP
		BEGIN
			n := erpcrm._dirty_all(mid);
			EXIT;
		EXCEPTION WHEN deadlock_detected THEN
			tries := tries + 1;
			IF tries >= 5 THEN
				RAISE;
			END IF;
			PERFORM pg_sleep(0.05 * tries);
		END;
	END LOOP;
	PERFORM erpcrm._wake();
	RETURN n;
END
$$;

/* Claiming takes due keys in (next_attempt_at, erp_id) order straight from
 * the index, without sorting a large backlog on every batch. */
DROP INDEX erpcrm.sync_state_due;
CREATE INDEX sync_state_due ON erpcrm.sync_state (mapping_id, next_attempt_at, erp_id)
	WHERE state = 'pending';

/* pg_dump and restore: the identity sequences go along; the control row is
 * made by the install script, so the dump leaves it out. */
SELECT pg_catalog.pg_extension_config_dump('erpcrm.mapping_mapping_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.watch_watch_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.control', 'WHERE false');

/* ------------------------------------------------------------------
 * Mapping views are read as the role that defined the mapping, never as
 * the extension's owner or the worker's role: a function in a view cannot
 * borrow their privileges.
 * ------------------------------------------------------------------
 */
ALTER TABLE erpcrm.mapping ADD COLUMN owner regrole;
UPDATE erpcrm.mapping m SET owner = c.relowner::regrole
  FROM pg_class c WHERE c.oid = m.source;
ALTER TABLE erpcrm.mapping ALTER COLUMN owner SET NOT NULL;
COMMENT ON COLUMN erpcrm.mapping.owner IS 'the role that defined the mapping; its view is read with this role''s privileges';

/* The keys of a view, read as a given role (C: SECURITY_RESTRICTED_OPERATION). */
CREATE FUNCTION erpcrm._view_keys(regclass, regrole)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'erpcrm_view_keys_v1'
LANGUAGE C STRICT;
REVOKE ALL ON FUNCTION erpcrm._view_keys(regclass, regrole) FROM PUBLIC;

CREATE OR REPLACE FUNCTION erpcrm._dirty_all(p_mapping_id integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping;
	n bigint;
BEGIN
	SELECT * INTO m FROM erpcrm.mapping WHERE mapping_id = p_mapping_id;
	IF NOT FOUND THEN
		RETURN 0;
	END IF;
	WITH keys AS MATERIALIZED (
		SELECT k FROM erpcrm._view_keys(m.source, m.owner) AS k
	), ins AS (
		INSERT INTO erpcrm.sync_state AS s (mapping_id, erp_id)
		SELECT p_mapping_id, keys.k FROM keys
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
		   AND NOT EXISTS (SELECT FROM keys WHERE keys.k = s.erp_id)
		RETURNING 1
	)
	SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM gone) INTO n;
	RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION erpcrm.map(
	name text,
	source regclass,
	object_type text,
	id_property text DEFAULT 'erp_id',
	on_delete text DEFAULT 'archive',
	batch_size integer DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old erpcrm.mapping;
	id integer;
BEGIN
	IF name IS NULL OR length(name) NOT BETWEEN 1 AND 63 THEN
		RAISE EXCEPTION 'invalid mapping name'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A mapping name is between 1 and 63 characters long.';
	END IF;
	IF source IS NULL THEN
		RAISE EXCEPTION 'the source of mapping "%" must not be null', name
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF object_type IS NULL OR NOT (object_type IN ('companies', 'contacts', 'products', 'deals', 'line_items')
			OR object_type ~ '^[0-9]+-[0-9]+$'
			OR object_type ~ '^p[0-9]+_[a-z][a-z0-9_]*$') THEN
		RAISE EXCEPTION 'unknown HubSpot object type "%"', object_type
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use companies, contacts, products, deals, line_items, or a custom object type id such as 2-1234567.';
	END IF;
	IF id_property IS NULL OR NOT erpcrm._valid_property_name(id_property) THEN
		RAISE EXCEPTION 'invalid id property "%"', id_property
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The id property is a HubSpot property with unique values, such as erp_id.';
	END IF;
	IF on_delete IS NULL OR on_delete NOT IN ('archive', 'keep') THEN
		RAISE EXCEPTION 'invalid on_delete action "%"', on_delete
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use archive (archive the HubSpot object when its key leaves the view) or keep.';
	END IF;
	IF batch_size IS NOT NULL AND batch_size NOT BETWEEN 1 AND 100 THEN
		RAISE EXCEPTION 'batch size % is out of range', batch_size
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'HubSpot accepts at most 100 inputs per batch call.';
	END IF;
	IF NOT has_table_privilege(erpcrm._caller(), source, 'SELECT') THEN
		RAISE EXCEPTION 'permission denied for relation %', source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Whoever defines a mapping must be able to read its source.';
	END IF;

	PERFORM erpcrm._check_source(source, id_property);

	SELECT * INTO old FROM erpcrm.mapping m WHERE m.name = map.name FOR UPDATE;
	IF FOUND THEN
		IF old.object_type <> map.object_type
			AND EXISTS (SELECT FROM erpcrm.sync_state s
						 WHERE s.mapping_id = old.mapping_id AND s.hubspot_id IS NOT NULL) THEN
			RAISE EXCEPTION 'cannot change the object type of mapping "%" from % to %', name, old.object_type, object_type
				USING ERRCODE = 'object_in_use',
					  DETAIL = 'Objects of this mapping already exist in HubSpot.',
					  HINT = 'Drop the mapping with erpcrm.unmap() and define a new one.';
		END IF;
		UPDATE erpcrm.mapping m
		   SET source = map.source, object_type = map.object_type,
			   id_property = map.id_property, on_delete = map.on_delete,
			   batch_size = map.batch_size, owner = erpcrm._caller()
		 WHERE m.mapping_id = old.mapping_id;
		id := old.mapping_id;
	ELSE
		INSERT INTO erpcrm.mapping (name, source, object_type, id_property, on_delete, batch_size, owner)
		VALUES (name, source, object_type, id_property, on_delete, batch_size, erpcrm._caller())
		RETURNING mapping_id INTO id;
	END IF;
	RETURN id;
END
$$;

/*
 * When an object gets a new HubSpot id (it left its view and came back, or
 * was deleted by hand in HubSpot and recreated by the upsert), the objects
 * associated to its old id are sent again, so that their associations
 * follow.
 */
CREATE FUNCTION erpcrm._redirty_dependents(p_mapping_id integer, p_erp_ids text[], p_hubspot_ids text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old_ids text[];
	n bigint := 0;
BEGIN
	SELECT array_agg(s.hubspot_id) INTO old_ids
	  FROM erpcrm.sync_state s
	  JOIN unnest(p_erp_ids, p_hubspot_ids) AS d(erp_id, hubspot_id)
		ON s.mapping_id = p_mapping_id AND s.erp_id = d.erp_id
	 WHERE s.hubspot_id IS NOT NULL AND d.hubspot_id IS NOT NULL
	   AND s.hubspot_id <> d.hubspot_id;
	IF old_ids IS NULL
	   OR NOT EXISTS (SELECT FROM erpcrm.association a WHERE a.target_id = p_mapping_id) THEN
		RETURN 0;
	END IF;
	UPDATE erpcrm.sync_state r
	   SET change_seq = r.change_seq + 1,
		   state = CASE WHEN r.state = 'in_flight' THEN r.state ELSE 'pending' END,
		   attempts = CASE WHEN r.state = 'in_flight' THEN r.attempts ELSE 0 END,
		   next_attempt_at = CASE WHEN r.state = 'in_flight' THEN r.next_attempt_at ELSE now() END,
		   dirty_since = COALESCE(r.dirty_since, now())
	  FROM erpcrm.association a, unnest(old_ids) AS o(id)
	 WHERE a.target_id = p_mapping_id AND r.mapping_id = a.mapping_id
	   AND r.state IN ('synced', 'failed', 'pending')
	   AND strpos(';' || r.assoc_state || ';', ';' || a.column_name || '=' || o.id || ';') > 0;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

/*
 * _done, as of 1.1: objects associated to a key's old HubSpot id are sent
 * again; keys that left the view before ever reaching HubSpot leave no
 * trace (1.0 counted them as archived).
 */
CREATE OR REPLACE FUNCTION erpcrm._done(p_mapping_id integer, p_erp_ids text[], p_hubspot_ids text[],
										p_archived boolean DEFAULT false, p_in_erp boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF NOT p_archived THEN
		PERFORM erpcrm._redirty_dependents(p_mapping_id, p_erp_ids, p_hubspot_ids);
	END IF;
	WITH gone AS (
		DELETE FROM erpcrm.sync_state s
		 USING unnest(p_erp_ids) AS d(erp_id)
		 WHERE s.mapping_id = p_mapping_id AND s.erp_id = d.erp_id
		   AND s.state = 'in_flight' AND NOT p_in_erp
		   AND s.hubspot_id IS NULL AND s.change_seq = s.sent_seq
		RETURNING 1
	), u AS (
		UPDATE erpcrm.sync_state s
		   SET state = CASE WHEN s.change_seq <> s.sent_seq THEN 'pending'
							WHEN p_archived THEN 'archived' ELSE 'synced' END,
			   hubspot_id = CASE WHEN p_archived THEN s.hubspot_id
								 ELSE COALESCE(d.hubspot_id, s.hubspot_id) END,
			   attempts = 0,
			   next_attempt_at = now(),
			   last_synced_at = now(),
			   in_erp = p_in_erp,
			   dirty_since = CASE WHEN s.change_seq <> s.sent_seq THEN s.dirty_since END,
			   http_status = NULL, error_category = NULL, error_message = NULL,
			   correlation_id = NULL, error_at = NULL
		  FROM unnest(p_erp_ids, p_hubspot_ids) AS d(erp_id, hubspot_id)
		 WHERE s.mapping_id = p_mapping_id AND s.erp_id = d.erp_id
		   AND s.state = 'in_flight'
		   AND NOT (NOT p_in_erp AND s.hubspot_id IS NULL AND s.change_seq = s.sent_seq)
		RETURNING 1)
	SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM u) INTO n;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._redirty_dependents(integer, text[], text[]) FROM PUBLIC;

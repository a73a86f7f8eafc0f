/* erpcrm--1.2--1.3.sql: layers, send only what changed, drift, the way back, reach */

\echo Use "ALTER EXTENSION erpcrm UPDATE TO '1.3'" to load this file. \quit

/*
 * Each part below belongs to one line of work; keep additions inside their
 * part so that parallel work merges cleanly.  Every object created or
 * changed here is also in the complete install script erpcrm--1.3.sql, and
 * the catalog test compares a fresh install with an upgraded one.
 */

-- ===================================================================
-- Part 1: layers (one step helper, one backoff formula)
-- ===================================================================

-- ===================================================================
-- Part 2: flat cost at scale (fewer row versions per key)
-- ===================================================================

-- ===================================================================
-- Part 3: fingerprints, refresh and erasure
-- ===================================================================

-- ===================================================================
-- Part 4: drift (reconcile)
-- ===================================================================

-- ===================================================================
-- Part 5: the way back (subscriptions and inbox)
-- ===================================================================

-- ===================================================================
-- Part 6: reach (many databases, native objects, API versions)
-- ===================================================================

/*
 * The HubSpot portal of this database, when it is not the cluster's: its
 * API URL, the file that holds its token, its call budget.  NULL columns
 * fall back on erpcrm.hubspot_url, erpcrm.token / erpcrm.token_file and
 * erpcrm.max_calls_per_10s.  Superusers only: nobody else can read or
 * change it.  It names a file, never a token (a token in a table would
 * travel in dumps, backups and replicas).  A change wakes the worker.
 */
CREATE TABLE erpcrm.portal (
	only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	hubspot_url text
		CHECK (hubspot_url ~ '^https?://[^/]' AND hubspot_url !~ '/$'),
	token_file text CHECK (token_file ~ '^/'),
	max_calls_per_10s integer CHECK (max_calls_per_10s BETWEEN 1 AND 10000)
);
COMMENT ON TABLE erpcrm.portal IS 'this database''s HubSpot portal (superusers only): API URL, token file, call budget; NULL means the cluster''s setting';
REVOKE ALL ON erpcrm.portal FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('erpcrm.portal', '');

CREATE FUNCTION erpcrm._portal_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'erpcrm_portal_changed_v1'
LANGUAGE C;
COMMENT ON FUNCTION erpcrm._portal_changed() IS 'trigger: a change of erpcrm.portal makes the worker read it again at commit';
REVOKE ALL ON FUNCTION erpcrm._portal_changed() FROM PUBLIC;

CREATE TRIGGER portal_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON erpcrm.portal
	FOR EACH STATEMENT EXECUTE FUNCTION erpcrm._portal_changed();

/* Every worker of the cluster, from the launcher's shared memory. */
CREATE FUNCTION erpcrm._workers(
	OUT pid integer,
	OUT database name,
	OUT state text,
	OUT detail text,
	OUT started_at timestamptz,
	OUT last_wake timestamptz,
	OUT last_call timestamptz,
	OUT backoff_until timestamptz,
	OUT window_remaining bigint,
	OUT daily_remaining bigint,
	OUT calls bigint,
	OUT rate_limited bigint,
	OUT objects_sent bigint,
	OUT limiter integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'erpcrm_workers_v1'
LANGUAGE C;
REVOKE ALL ON FUNCTION erpcrm._workers() FROM PUBLIC;

CREATE VIEW erpcrm.workers AS
SELECT * FROM erpcrm._workers();
COMMENT ON VIEW erpcrm.workers IS 'every erpcrm worker of the cluster, one per database served (superusers only: it names every database)';
REVOKE ALL ON erpcrm.workers FROM PUBLIC;

/*
 * HubSpot's native orders (0-123) are a mapping target by name: map()
 * accepts 'orders' (restated with that one change).
 */
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
	IF object_type IS NULL OR NOT (object_type IN ('companies', 'contacts', 'products', 'deals', 'line_items', 'orders')
			OR object_type ~ '^[0-9]+-[0-9]+$'
			OR object_type ~ '^p[0-9]+_[a-z][a-z0-9_]*$') THEN
		RAISE EXCEPTION 'unknown HubSpot object type "%"', object_type
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use companies, contacts, products, deals, line_items, orders, or a custom object type id such as 2-1234567.';
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

/* The launcher starts a worker here as soon as this script commits. */
CREATE FUNCTION erpcrm._launcher_notify()
RETURNS boolean
AS 'MODULE_PATHNAME', 'erpcrm_launcher_notify_v1'
LANGUAGE C;
COMMENT ON FUNCTION erpcrm._launcher_notify() IS 'install and update scripts: the launcher looks at this database when the transaction commits';
REVOKE ALL ON FUNCTION erpcrm._launcher_notify() FROM PUBLIC;
SELECT erpcrm._launcher_notify();

-- ===================================================================
-- Part 7: packaging and catalog
-- ===================================================================

/*
 * _log_call without the time of the call was the worker's under 1.0 only;
 * the worker of 1.1 and later passes the time of each call.
 */
DROP FUNCTION erpcrm._log_call(text, text, integer, double precision, integer, text, text,
							   integer, interval);

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


-- ===================================================================
-- Part 3: one bad row fails alone (values, keys, discard)
-- ===================================================================


-- ===================================================================
-- Part 4: flat cost at scale (claim, done, fold, next-due)
-- ===================================================================


-- ===================================================================
-- Part 5: links, corrections and HubSpot set-up
-- ===================================================================


-- ===================================================================
-- Part 6: monitoring
-- ===================================================================


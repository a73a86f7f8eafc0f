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

/*
 * Drift (issue 13, point 3): erpcrm.reconcile(mapping) reads HubSpot back
 * and reports in erpcrm.drift what differs from what erpcrm sent: objects
 * missing (deleted or merged by hand), ERP-owned properties edited by hand,
 * associations removed, and HubSpot records carrying an ERP id that no
 * mapping of their object type knows.  The calls are made by the worker,
 * which is the only process that calls HubSpot in the background: a run is
 * a row of erpcrm.reconcile_run that the worker takes up when no key is due,
 * one batch of keys at a time, within the rate limit and the run's budget
 * of calls.  repair => true sends again what erpcrm owns; records with
 * unknown ERP ids are only reported.
 */
ALTER TABLE erpcrm.mapping ADD COLUMN reconcile_every interval
	CHECK (reconcile_every >= interval '1 minute');
COMMENT ON COLUMN erpcrm.mapping.reconcile_every IS 'the worker reconciles the mapping with HubSpot this often (NULL: only when erpcrm.reconcile() is called)';

CREATE TABLE erpcrm.reconcile_run (
	run_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	mapping_id		integer NOT NULL REFERENCES erpcrm.mapping ON DELETE CASCADE,
	repair			boolean NOT NULL DEFAULT false,
	budget			integer NOT NULL CHECK (budget > 0),
	requested_by	text NOT NULL,
	requested_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	started_at		timestamptz,
	finished_at		timestamptz,
	state			text NOT NULL DEFAULT 'queued'
					CHECK (state IN ('queued', 'running', 'done', 'budget_spent', 'cancelled', 'failed')),
	phase			text NOT NULL DEFAULT 'objects'
					CHECK (phase IN ('objects', 'unknown')),
	start_after		text NOT NULL DEFAULT '',
	cursor			text NOT NULL DEFAULT '',
	search_after	text NOT NULL DEFAULT '0',
	keys_total		bigint,
	keys_checked	bigint NOT NULL DEFAULT 0,
	records_scanned bigint NOT NULL DEFAULT 0,
	calls			integer NOT NULL DEFAULT 0,
	found			integer NOT NULL DEFAULT 0,
	requeued		integer NOT NULL DEFAULT 0,
	detail			text
);
CREATE INDEX reconcile_run_mapping ON erpcrm.reconcile_run (mapping_id, run_id);
CREATE UNIQUE INDEX reconcile_run_active ON erpcrm.reconcile_run (mapping_id)
	WHERE state IN ('queued', 'running');
COMMENT ON TABLE erpcrm.reconcile_run IS 'reconciles of a mapping with HubSpot, asked for by erpcrm.reconcile() or reconcile_every, run by the worker';

CREATE TABLE erpcrm.drift_item (
	mapping_id		integer NOT NULL REFERENCES erpcrm.mapping ON DELETE CASCADE,
	run_id			bigint NOT NULL REFERENCES erpcrm.reconcile_run ON DELETE CASCADE,
	erp_id			text NOT NULL,
	hubspot_id		text,
	kind			text NOT NULL
					CHECK (kind IN ('missing', 'edited', 'association_removed', 'unknown_erp_id')),
	property		text,
	erp_value		text,
	hubspot_value	text,
	detail			text,
	found_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	requeued_at		timestamptz
);
CREATE INDEX drift_item_key ON erpcrm.drift_item (mapping_id, erp_id);
COMMENT ON TABLE erpcrm.drift_item IS 'what the latest reconcile of each key found different in HubSpot';

/*
 * Where HubSpot differs from the ERP, as the latest check of each key (and
 * each HubSpot record) found it.  status: found; requeued (repair sent the
 * key again, not delivered yet); repaired (delivered since); reported (an
 * unknown ERP id: never changed by erpcrm).
 */
CREATE VIEW erpcrm.drift AS
SELECT m.name AS mapping,
	   d.erp_id,
	   d.hubspot_id,
	   d.kind,
	   d.property,
	   d.erp_value,
	   d.hubspot_value,
	   d.detail,
	   d.found_at,
	   CASE WHEN d.kind = 'unknown_erp_id' THEN 'reported'
			WHEN d.requeued_at IS NULL THEN 'found'
			WHEN s.state = 'synced' AND s.last_synced_at >= d.requeued_at THEN 'repaired'
			ELSE 'requeued' END AS status,
	   d.run_id
  FROM erpcrm.drift_item d
  JOIN erpcrm.mapping m ON m.mapping_id = d.mapping_id
  LEFT JOIN erpcrm.sync_state s ON s.mapping_id = d.mapping_id AND s.erp_id = d.erp_id
								 AND d.kind <> 'unknown_erp_id';
COMMENT ON VIEW erpcrm.drift IS 'where HubSpot differs from what erpcrm sent, as erpcrm.reconcile() found it';

/* The runs, with their progress. */
CREATE VIEW erpcrm.reconcile_runs AS
SELECT r.run_id,
	   m.name AS mapping,
	   r.state,
	   r.phase,
	   r.repair,
	   r.requested_by,
	   r.requested_at,
	   r.started_at,
	   r.finished_at,
	   r.keys_checked,
	   r.keys_total,
	   r.records_scanned,
	   r.calls,
	   r.budget,
	   r.found,
	   r.requeued,
	   NULLIF(r.start_after, '') AS started_after,
	   r.detail
  FROM erpcrm.reconcile_run r
  JOIN erpcrm.mapping m ON m.mapping_id = r.mapping_id;
COMMENT ON VIEW erpcrm.reconcile_runs IS 'each reconcile of a mapping with HubSpot: state, progress, calls spent, drift found';

/*
 * A run that stopped on its budget is continued by the next run of the
 * mapping, where it stopped, so that a small budget given every day still
 * covers every key in time.
 */
CREATE FUNCTION erpcrm._reconcile_queue(p_mapping_id integer, p_repair boolean,
										p_budget integer, p_requested_by text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	prev erpcrm.reconcile_run;
	id bigint;
BEGIN
	SELECT * INTO prev FROM erpcrm.reconcile_run r
	 WHERE r.mapping_id = p_mapping_id AND r.state IN ('done', 'budget_spent', 'cancelled', 'failed')
	 ORDER BY r.run_id DESC LIMIT 1;
	INSERT INTO erpcrm.reconcile_run (mapping_id, repair, budget, requested_by,
									  phase, start_after, cursor, search_after)
	VALUES (p_mapping_id, p_repair, p_budget, p_requested_by,
			CASE WHEN prev.state = 'budget_spent' THEN prev.phase ELSE 'objects' END,
			CASE WHEN prev.state = 'budget_spent' AND prev.phase = 'objects' THEN prev.cursor ELSE '' END,
			CASE WHEN prev.state = 'budget_spent' AND prev.phase = 'objects' THEN prev.cursor ELSE '' END,
			CASE WHEN prev.state = 'budget_spent' AND prev.phase = 'unknown' THEN prev.search_after ELSE '0' END)
	RETURNING run_id INTO id;
	PERFORM erpcrm._wake();
	RETURN id;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._reconcile_queue(integer, boolean, integer, text) FROM PUBLIC;

CREATE FUNCTION erpcrm.reconcile(mapping text, repair boolean DEFAULT false,
								 budget integer DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(reconcile.mapping);
	active bigint;
	need integer;
BEGIN
	IF reconcile.repair IS NULL THEN
		RAISE EXCEPTION 'repair must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	/* one batch read, one read of the missing by id, one per association */
	need := 2 + (SELECT count(*) FROM erpcrm.association a
				  WHERE a.mapping_id = m.mapping_id AND a.as_property IS NULL);
	IF reconcile.budget IS NULL OR reconcile.budget < need THEN
		RAISE EXCEPTION 'a budget of % calls is too small to reconcile mapping "%"', reconcile.budget, m.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('One batch of up to 100 keys of this mapping takes up to %s calls.', need);
	END IF;
	SELECT r.run_id INTO active FROM erpcrm.reconcile_run r
	 WHERE r.mapping_id = m.mapping_id AND r.state IN ('queued', 'running');
	IF FOUND THEN
		RAISE EXCEPTION 'mapping "%" is being reconciled already (run %)', m.name, active
			USING ERRCODE = 'object_in_use',
				  HINT = 'Follow it in erpcrm.reconcile_runs, or stop it with erpcrm.cancel_reconcile().';
	END IF;
	RETURN erpcrm._reconcile_queue(m.mapping_id, reconcile.repair, reconcile.budget,
								   erpcrm._caller()::text);
END
$$;
COMMENT ON FUNCTION erpcrm.reconcile(text, boolean, integer) IS 'ask the worker to compare HubSpot with what erpcrm sent for a mapping, within a budget of calls; the findings go to erpcrm.drift; repair sends again what erpcrm owns; returns the run id';
REVOKE ALL ON FUNCTION erpcrm.reconcile(text, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.reconcile(text, boolean, integer) TO erpcrm_admin;

CREATE FUNCTION erpcrm.cancel_reconcile(mapping text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(cancel_reconcile.mapping);
BEGIN
	UPDATE erpcrm.reconcile_run r
	   SET state = 'cancelled', finished_at = pg_catalog.now(),
		   detail = pg_catalog.format('cancelled by %s', erpcrm._caller())
	 WHERE r.mapping_id = m.mapping_id AND r.state IN ('queued', 'running');
	RETURN FOUND;
END
$$;
COMMENT ON FUNCTION erpcrm.cancel_reconcile(text) IS 'stop the reconcile of a mapping that is queued or running; what it found stays in erpcrm.drift';
REVOKE ALL ON FUNCTION erpcrm.cancel_reconcile(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.cancel_reconcile(text) TO erpcrm_admin;

/*
 * The worker: queue the runs that reconcile_every makes due, and take the
 * oldest queued or running run (one at a time).
 */
CREATE FUNCTION erpcrm._reconcile_next()
RETURNS SETOF erpcrm.reconcile_run
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m record;
	r erpcrm.reconcile_run;
BEGIN
	FOR m IN
		SELECT x.mapping_id FROM erpcrm.mapping x
		 WHERE x.reconcile_every IS NOT NULL
		   AND NOT EXISTS (SELECT FROM erpcrm.reconcile_run q
							WHERE q.mapping_id = x.mapping_id
							  AND (q.state IN ('queued', 'running')
								   OR q.requested_at > pg_catalog.now() - x.reconcile_every))
	LOOP
		PERFORM erpcrm._reconcile_queue(m.mapping_id, false, 1000, 'reconcile_every');
	END LOOP;
	SELECT * INTO r FROM erpcrm.reconcile_run q
	 WHERE q.state IN ('queued', 'running')
	 ORDER BY q.run_id LIMIT 1
	   FOR UPDATE;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	IF r.state = 'queued' THEN
		UPDATE erpcrm.reconcile_run q
		   SET state = 'running', started_at = pg_catalog.now(),
			   keys_total = (SELECT count(*) FROM erpcrm.sync_state s
							  WHERE s.mapping_id = r.mapping_id AND s.state = 'synced'
								AND s.hubspot_id IS NOT NULL)
		 WHERE q.run_id = r.run_id
		RETURNING * INTO r;
	END IF;
	RETURN NEXT r;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._reconcile_next() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._reconcile_next() TO erpcrm_admin;

/*
 * The next keys a run checks: delivered, not dirty, after its cursor, in
 * the primary key's order.
 */
CREATE FUNCTION erpcrm._reconcile_keys(p_run_id bigint, n integer)
RETURNS TABLE (erp_id text, hubspot_id text, change_seq bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT s.erp_id, s.hubspot_id, s.change_seq
	  FROM erpcrm.reconcile_run r
	  JOIN erpcrm.sync_state s ON s.mapping_id = r.mapping_id AND s.erp_id > r.cursor
	 WHERE r.run_id = p_run_id AND s.state = 'synced' AND s.hubspot_id IS NOT NULL
	 ORDER BY s.erp_id
	 LIMIT n;
END;
REVOKE ALL ON FUNCTION erpcrm._reconcile_keys(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._reconcile_keys(bigint, integer) TO erpcrm_admin;

/*
 * One batch of a run checked: its keys' earlier findings are replaced by
 * these, of the keys that did not change meanwhile (a key dirtied while
 * HubSpot was read will be sent anyway).  With repair, the keys with drift
 * are sent again, as requeue() does.  p_last NULL: no keys are left, the
 * run goes on to the records with unknown ERP ids.
 */
CREATE FUNCTION erpcrm._reconcile_checked(p_run_id bigint, p_calls integer,
										  p_erp_ids text[], p_seqs bigint[], p_last text,
										  p_kinds text[], p_keys text[], p_hubspot_ids text[],
										  p_properties text[], p_erp_values text[],
										  p_hubspot_values text[], p_details text[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r erpcrm.reconcile_run;
	n integer;
	q integer := 0;
	same text[];
	fix text[];
BEGIN
	SELECT * INTO r FROM erpcrm.reconcile_run x WHERE x.run_id = p_run_id FOR UPDATE;
	IF NOT FOUND OR r.state <> 'running' THEN
		RETURN 0;				/* cancelled meanwhile */
	END IF;
	/* the keys that are as they were when HubSpot was read */
	same := ARRAY(
		SELECT k.erp_id FROM unnest(p_erp_ids, p_seqs) AS k(erp_id, seq)
		  JOIN erpcrm.sync_state s ON s.mapping_id = r.mapping_id AND s.erp_id = k.erp_id
		 WHERE s.state = 'synced' AND s.change_seq = k.seq);
	DELETE FROM erpcrm.drift_item d
	 WHERE d.mapping_id = r.mapping_id AND d.kind <> 'unknown_erp_id'
	   AND d.erp_id = ANY (same);
	INSERT INTO erpcrm.drift_item (mapping_id, run_id, erp_id, hubspot_id, kind, property,
								   erp_value, hubspot_value, detail)
	SELECT r.mapping_id, p_run_id, f.erp_id, f.hubspot_id, f.kind, f.property,
		   f.erp_value, f.hubspot_value, f.detail
	  FROM unnest(p_kinds, p_keys, p_hubspot_ids, p_properties, p_erp_values,
				  p_hubspot_values, p_details)
		   AS f(kind, erp_id, hubspot_id, property, erp_value, hubspot_value, detail)
	 WHERE f.erp_id = ANY (same);
	GET DIAGNOSTICS n = ROW_COUNT;
	IF r.repair AND n > 0 THEN
		/*
		 * What erpcrm owns is sent again: a missing object is upserted anew,
		 * edited properties are written again, and a key whose association
		 * was removed forgets that it made it, so that it is made again.  A
		 * record that lost its ERP id is left alone: an upsert would make a
		 * second record beside it.
		 */
		fix := ARRAY(
			SELECT DISTINCT f.erp_id
			  FROM unnest(p_kinds, p_keys, p_properties) AS f(kind, erp_id, property)
			  JOIN erpcrm.mapping m ON m.mapping_id = r.mapping_id
			 WHERE f.erp_id = ANY (same)
			   AND NOT (f.kind = 'edited' AND f.property = m.id_property));
		UPDATE erpcrm.sync_state s
		   SET state = 'pending', attempts = 0, next_attempt_at = pg_catalog.now(),
			   change_seq = s.change_seq + 1, dirty_since = COALESCE(s.dirty_since, pg_catalog.now()),
			   assoc_state = CASE WHEN s.erp_id = ANY (
									ARRAY(SELECT f.erp_id FROM unnest(p_kinds, p_keys) AS f(kind, erp_id)
										   WHERE f.kind = 'association_removed'))
								  THEN NULL ELSE s.assoc_state END
		 WHERE s.mapping_id = r.mapping_id AND s.state = 'synced' AND s.erp_id = ANY (fix);
		GET DIAGNOSTICS q = ROW_COUNT;
		UPDATE erpcrm.drift_item d SET requeued_at = pg_catalog.now()
		 WHERE d.run_id = p_run_id AND d.mapping_id = r.mapping_id AND d.erp_id = ANY (fix);
		PERFORM erpcrm._wake();
	END IF;
	UPDATE erpcrm.reconcile_run x
	   SET calls = x.calls + p_calls,
		   keys_checked = x.keys_checked + COALESCE(pg_catalog.cardinality(p_erp_ids), 0),
		   found = x.found + n, requeued = x.requeued + q,
		   cursor = COALESCE(p_last, x.cursor),
		   phase = CASE WHEN p_last IS NULL THEN 'unknown' ELSE x.phase END
	 WHERE x.run_id = p_run_id;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._reconcile_checked(bigint, integer, text[], bigint[], text, text[], text[],
												 text[], text[], text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._reconcile_checked(bigint, integer, text[], bigint[], text, text[], text[],
													text[], text[], text[], text[], text[]) TO erpcrm_admin;

/*
 * Of these ERP ids found on HubSpot records, the ones no mapping of the
 * run's object type and id property has ever sent (several mappings can
 * share one: invoices, orders and offers are all deals).
 */
CREATE FUNCTION erpcrm._reconcile_strangers(p_run_id bigint, p_erp_ids text[])
RETURNS SETOF text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT DISTINCT k.erp_id FROM unnest(p_erp_ids) AS k(erp_id)
	 WHERE NOT EXISTS (
		SELECT FROM erpcrm.reconcile_run r
		  JOIN erpcrm.mapping m ON m.mapping_id = r.mapping_id
		  JOIN erpcrm.mapping o ON o.object_type = m.object_type AND o.id_property = m.id_property
		  JOIN erpcrm.sync_state s ON s.mapping_id = o.mapping_id AND s.erp_id = k.erp_id
		 WHERE r.run_id = p_run_id);
END;
REVOKE ALL ON FUNCTION erpcrm._reconcile_strangers(bigint, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._reconcile_strangers(bigint, text[]) TO erpcrm_admin;

/*
 * One page of HubSpot's records that carry the id property, those with ids
 * above p_after up to p_last, checked: their earlier findings are replaced.
 * p_last NULL: the last page; the run is done.
 */
CREATE FUNCTION erpcrm._reconcile_scanned(p_run_id bigint, p_calls integer, p_scanned integer,
										  p_last text, p_hubspot_ids text[], p_erp_ids text[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r erpcrm.reconcile_run;
	n integer;
BEGIN
	SELECT * INTO r FROM erpcrm.reconcile_run x WHERE x.run_id = p_run_id FOR UPDATE;
	IF NOT FOUND OR r.state <> 'running' THEN
		RETURN 0;
	END IF;
	DELETE FROM erpcrm.drift_item d
	 WHERE d.mapping_id = r.mapping_id AND d.kind = 'unknown_erp_id'
	   AND d.hubspot_id ~ '^[0-9]+$'
	   AND d.hubspot_id::numeric > r.search_after::numeric
	   AND (p_last IS NULL OR d.hubspot_id::numeric <= p_last::numeric);
	INSERT INTO erpcrm.drift_item (mapping_id, run_id, erp_id, hubspot_id, kind, property,
								   hubspot_value, detail)
	SELECT r.mapping_id, p_run_id, f.erp_id, f.hubspot_id, 'unknown_erp_id', m.id_property,
		   f.erp_id, 'no mapping of this object type knows this ERP id; erpcrm leaves the record alone'
	  FROM unnest(p_hubspot_ids, p_erp_ids) AS f(hubspot_id, erp_id)
	  JOIN erpcrm.mapping m ON m.mapping_id = r.mapping_id;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE erpcrm.reconcile_run x
	   SET calls = x.calls + p_calls, records_scanned = x.records_scanned + p_scanned,
		   found = x.found + n,
		   search_after = COALESCE(p_last, x.search_after),
		   state = CASE WHEN p_last IS NULL THEN 'done' ELSE x.state END,
		   finished_at = CASE WHEN p_last IS NULL THEN pg_catalog.now() END,
		   detail = CASE WHEN p_last IS NULL
						 THEN pg_catalog.format('%s keys and %s HubSpot records checked',
												x.keys_checked, x.records_scanned + p_scanned) END
	 WHERE x.run_id = p_run_id;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._reconcile_scanned(bigint, integer, integer, text, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._reconcile_scanned(bigint, integer, integer, text, text[], text[]) TO erpcrm_admin;

/* A run stops: its budget is spent, or it cannot go on (detail says why). */
CREATE FUNCTION erpcrm._reconcile_stop(p_run_id bigint, p_calls integer, p_state text, p_detail text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE erpcrm.reconcile_run x
	   SET calls = x.calls + p_calls, state = p_state, detail = p_detail,
		   finished_at = pg_catalog.now()
	 WHERE x.run_id = p_run_id AND x.state = 'running';
END;
REVOKE ALL ON FUNCTION erpcrm._reconcile_stop(bigint, integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._reconcile_stop(bigint, integer, text, text) TO erpcrm_admin;

REVOKE ALL ON erpcrm.reconcile_run, erpcrm.reconcile_run_run_id_seq, erpcrm.drift_item,
	erpcrm.drift, erpcrm.reconcile_runs FROM PUBLIC;
GRANT SELECT ON erpcrm.drift, erpcrm.reconcile_runs, erpcrm.reconcile_run, erpcrm.drift_item
	TO erpcrm_monitor, pg_monitor;

/* map() learns reconcile_every */
DROP FUNCTION erpcrm.map(text, regclass, text, text, text, integer);
CREATE FUNCTION erpcrm.map(
	name text,
	source regclass,
	object_type text,
	id_property text DEFAULT 'erp_id',
	on_delete text DEFAULT 'archive',
	batch_size integer DEFAULT NULL,
	reconcile_every interval DEFAULT NULL)
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
	IF reconcile_every IS NOT NULL AND reconcile_every < interval '1 minute' THEN
		RAISE EXCEPTION 'reconcile_every % is too short', reconcile_every
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Reconcile at most once a minute; once a day is usual.';
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
			   batch_size = map.batch_size, owner = erpcrm._caller(),
			   reconcile_every = map.reconcile_every
		 WHERE m.mapping_id = old.mapping_id;
		id := old.mapping_id;
	ELSE
		INSERT INTO erpcrm.mapping (name, source, object_type, id_property, on_delete, batch_size, owner,
									reconcile_every)
		VALUES (name, source, object_type, id_property, on_delete, batch_size, erpcrm._caller(),
				reconcile_every)
		RETURNING mapping_id INTO id;
	END IF;
	RETURN id;
END
$$;
COMMENT ON FUNCTION erpcrm.map(text, regclass, text, text, text, integer, interval) IS 'define (or redefine) a mapping: a view whose rows become HubSpot objects';
REVOKE ALL ON FUNCTION erpcrm.map(text, regclass, text, text, text, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.map(text, regclass, text, text, text, integer, interval) TO erpcrm_admin;

-- ===================================================================
-- Part 5: the way back (subscriptions and inbox)
-- ===================================================================

-- ===================================================================
-- Part 6: reach (many databases, native objects, API versions)
-- ===================================================================

-- ===================================================================
-- Part 7: packaging and catalog
-- ===================================================================

/*
 * _log_call without the time of the call was the worker's under 1.0 only;
 * the worker of 1.1 and later passes the time of each call.
 */
DROP FUNCTION erpcrm._log_call(text, text, integer, double precision, integer, text, text,
							   integer, interval);

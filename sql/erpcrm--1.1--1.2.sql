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
BEGIN
	IF p_synced IS NOT NULL AND cardinality(p_synced) > 0 THEN
		UPDATE erpcrm.sync_state s
		   SET unlinked = d.unlinked::jsonb, archived_at = NULL
		  FROM unnest(p_synced, p_unlinked) AS d(erp_id, unlinked)
		 WHERE s.mapping_id = p_mapping_id AND s.erp_id = d.erp_id
		   AND (s.unlinked IS DISTINCT FROM d.unlinked::jsonb OR s.archived_at IS NOT NULL);
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
	IF p_synced IS NOT NULL AND cardinality(p_synced) > 0 THEN
		UPDATE erpcrm.sync_state r
		   SET change_seq = r.change_seq + 1,
			   state = CASE WHEN r.state = 'in_flight' THEN r.state ELSE 'pending' END,
			   attempts = CASE WHEN r.state = 'in_flight' THEN r.attempts ELSE 0 END,
			   next_attempt_at = CASE WHEN r.state = 'in_flight' THEN r.next_attempt_at ELSE now() END,
			   dirty_since = COALESCE(r.dirty_since, now())
		  FROM erpcrm.association a, unnest(p_synced) AS t(erp_id)
		 WHERE a.target_id = p_mapping_id AND r.mapping_id = a.mapping_id
		   AND r.unlinked IS NOT NULL
		   AND r.unlinked ->> a.column_name = t.erp_id
		   AND r.state IN ('synced', 'failed', 'pending', 'in_flight');
		GET DIAGNOSTICS k = ROW_COUNT;
		n := n + k;
	END IF;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._archived_keys(integer, text[]),
	erpcrm._links_done(integer, text[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._archived_keys(integer, text[]),
	erpcrm._links_done(integer, text[], text[], text[]) TO erpcrm_admin;

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

/* erpcrm.status: one row per mapping, in a stable order (by name). */
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
	ON o.mapping_id = m.mapping_id
 ORDER BY m.name;


/* erpcrm--1.1--1.2.sql: hardening, first run in the field, flat cost at scale */

\echo Use "ALTER EXTENSION erpcrm UPDATE TO '1.2'" to load this file. \quit

/*
 * Each part below belongs to one line of work; keep additions inside their
 * part so that parallel work merges cleanly.
 */

-- ===================================================================
-- Part 1: security (who runs what, as whom)
-- ===================================================================


-- ===================================================================
-- Part 2: DDL, dump/restore and watches
-- ===================================================================


-- ===================================================================
-- Part 3: one bad row fails alone (values, keys, discard)
-- ===================================================================


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


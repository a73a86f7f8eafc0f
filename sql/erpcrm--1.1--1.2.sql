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


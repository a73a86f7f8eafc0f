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

	IF whole IS NOT NULL THEN
		FOREACH mid IN ARRAY whole LOOP
			n := n + erpcrm._dirty_all(mid);
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


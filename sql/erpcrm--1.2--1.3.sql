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

/*
 * Fingerprints.  sync_state.fingerprint is a hash (8 bytes) of the exact
 * content HubSpot last accepted for the key: its properties, the HubSpot
 * object it updates (hubspot_id column) and the HubSpot ids of its
 * association targets, as the worker builds its request.  The worker
 * computes it (erpcrm._fingerprints() is the same C code, for refresh) and
 * writes it in the UPDATE of _done that records the send.  A dirtied key
 * whose view row still hashes the same, whose object HubSpot holds and
 * whose last attempt did not fail, is recorded as synced without a call.
 *
 * mapping.fingerprint_epoch is part of every hash: resync(force => true)
 * bumps it, so that no stored fingerprint matches and every key is sent.
 * Keys upgraded from 1.2 have no fingerprint: their first send records it.
 */
ALTER TABLE erpcrm.sync_state ADD COLUMN fingerprint bigint;
COMMENT ON COLUMN erpcrm.sync_state.fingerprint IS 'hash of the properties and association targets HubSpot last accepted for this key (NULL: unknown, the next send records it)';
ALTER TABLE erpcrm.mapping ADD COLUMN fingerprint_epoch integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN erpcrm.mapping.fingerprint_epoch IS 'part of every fingerprint of the mapping; erpcrm.resync(force => true) changes it so that every key is sent';
ALTER TABLE erpcrm.mapping ADD COLUMN refresh_every interval
	CHECK (refresh_every > interval '0');
COMMENT ON COLUMN erpcrm.mapping.refresh_every IS 'the worker runs erpcrm.refresh() of the mapping this often (NULL: never); set with erpcrm.set_refresh()';

/* Per mapping: sends saved, and the last refresh. */
CREATE TABLE erpcrm.fingerprint_stat (
	mapping_id		integer PRIMARY KEY REFERENCES erpcrm.mapping ON DELETE CASCADE,
	unchanged		bigint NOT NULL DEFAULT 0,
	refreshed_at	timestamptz,
	refresh_dirtied	bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE erpcrm.fingerprint_stat IS 'per mapping: dirtied keys recorded as synced without a call because HubSpot holds their content, and the last refresh';
REVOKE ALL ON erpcrm.fingerprint_stat FROM PUBLIC;
GRANT SELECT ON erpcrm.fingerprint_stat TO erpcrm_monitor, pg_monitor;

/*
 * The fingerprints of these keys' rows now, read as the worker reads them
 * (keys not in the view: no row; a row that cannot be read: NULL).
 */
CREATE FUNCTION erpcrm._fingerprints(p_mapping_id integer, p_erp_ids text[])
RETURNS TABLE (erp_id text, fingerprint bigint)
LANGUAGE C
AS 'MODULE_PATHNAME', 'erpcrm_fingerprints_v1';
REVOKE ALL ON FUNCTION erpcrm._fingerprints(integer, text[]) FROM PUBLIC;

/*
 * The fingerprint of one key's row now, for a DBA (compare it with
 * sync_state.fingerprint).  The view is read as the mapping's owner: shown
 * only to a role that may read the view.
 */
CREATE FUNCTION erpcrm.fingerprint(mapping text, erp_id text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(fingerprint.mapping);
BEGIN
	IF NOT pg_catalog.has_table_privilege(erpcrm._caller(), m.source, 'SELECT') THEN
		RAISE EXCEPTION 'permission denied to read mapping "%"', m.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('The fingerprint is computed from %s, which %s may not read.',
											 m.source, erpcrm._caller());
	END IF;
	RETURN (SELECT f.fingerprint
			  FROM erpcrm._fingerprints(m.mapping_id, ARRAY[fingerprint.erp_id]) AS f);
END
$$;
COMMENT ON FUNCTION erpcrm.fingerprint(text, text) IS 'the fingerprint of one key''s view row now, as the worker computes it (NULL: not in the view, or cannot be sent); compare with sync_state.fingerprint';
REVOKE ALL ON FUNCTION erpcrm.fingerprint(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.fingerprint(text, text) TO erpcrm_admin;

/* The worker: the fingerprints it may skip on (the last attempt did not fail). */
CREATE FUNCTION erpcrm._stored_fingerprints(p_mapping_id integer, p_erp_ids text[])
RETURNS TABLE (erp_id text, fingerprint bigint, epoch integer)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT s.erp_id, s.fingerprint, m.fingerprint_epoch
	  FROM erpcrm.mapping m JOIN erpcrm.sync_state s ON s.mapping_id = m.mapping_id
	 WHERE m.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND s.fingerprint IS NOT NULL AND s.hubspot_id IS NOT NULL
	   AND s.error_category IS NULL;
END;
REVOKE ALL ON FUNCTION erpcrm._stored_fingerprints(integer, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._stored_fingerprints(integer, text[]) TO erpcrm_admin;

CREATE FUNCTION erpcrm._fingerprint_epoch(p_mapping_id integer)
RETURNS integer
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT m.fingerprint_epoch FROM erpcrm.mapping m WHERE m.mapping_id = p_mapping_id;
END;
REVOKE ALL ON FUNCTION erpcrm._fingerprint_epoch(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._fingerprint_epoch(integer) TO erpcrm_admin;

/* The worker: keys of a batch recorded as synced without a call. */
CREATE FUNCTION erpcrm._unchanged(p_mapping_id integer, p_n bigint)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO erpcrm.fingerprint_stat AS f (mapping_id, unchanged)
	VALUES (p_mapping_id, p_n)
	ON CONFLICT (mapping_id) DO UPDATE SET unchanged = f.unchanged + excluded.unchanged;
$$;
REVOKE ALL ON FUNCTION erpcrm._unchanged(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._unchanged(integer, bigint) TO erpcrm_admin;

/*
 * _done, as of 1.3: the same as 1.2, and the fingerprint of what HubSpot
 * accepted is written in the same UPDATE (archived keys and keys out of
 * their view keep none).
 */
DROP FUNCTION erpcrm._done(integer, text[], text[], boolean, boolean);
CREATE FUNCTION erpcrm._done(p_mapping_id integer, p_erp_ids text[], p_hubspot_ids text[],
							 p_archived boolean DEFAULT false, p_in_erp boolean DEFAULT true,
							 p_fingerprints bigint[] DEFAULT NULL)
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
		   correlation_id = NULL, error_at = NULL,
		   fingerprint = CASE WHEN p_archived OR NOT p_in_erp THEN NULL
							  ELSE p_fingerprints[pg_catalog.array_position(p_erp_ids, s.erp_id)] END
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (p_erp_ids)
	   AND s.state = 'in_flight';
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN gone + n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._done(integer, text[], text[], boolean, boolean, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._done(integer, text[], text[], boolean, boolean, bigint[]) TO erpcrm_admin;

/*
 * The view of a mapping, found again by name if it was dropped and created
 * again; an error naming the mapping and erpcrm.status's reason when it is
 * gone (resync, refresh).
 */
CREATE FUNCTION erpcrm._require_view(p_mapping_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM erpcrm._resolve_sources();
	IF NOT EXISTS (SELECT FROM erpcrm.mapping x JOIN pg_catalog.pg_class c ON c.oid = x.source
					WHERE x.mapping_id = p_mapping_id) THEN
		RAISE EXCEPTION 'the view of mapping "%" does not exist',
			(SELECT x.name FROM erpcrm.mapping x WHERE x.mapping_id = p_mapping_id)
			USING ERRCODE = 'undefined_table',
				  DETAIL = pg_catalog.format('erpcrm.status says: %s.', erpcrm._mapping_problem(p_mapping_id)),
				  HINT = 'Create the view again under that name, or define the mapping again with erpcrm.map().';
	END IF;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._require_view(integer) FROM PUBLIC;

/*
 * resync(mapping, force): every key of the mapping is looked at again.
 * force (the default, as before 1.3) sends every key; force => false sends
 * only the keys whose rows differ from what HubSpot accepted.
 */
DROP FUNCTION erpcrm.resync(text);
CREATE FUNCTION erpcrm.resync(mapping text, force boolean DEFAULT true)
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
	PERFORM erpcrm._require_view(m.mapping_id);
	IF resync.force IS NULL THEN
		RAISE EXCEPTION 'force must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF resync.force THEN
		/* no stored fingerprint matches any more: every key is sent */
		UPDATE erpcrm.mapping x SET fingerprint_epoch = x.fingerprint_epoch + 1
		 WHERE x.mapping_id = m.mapping_id;
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
COMMENT ON FUNCTION erpcrm.resync(text, boolean) IS 'mark every key of a mapping dirty (initial load, backfill); force => false sends only the keys whose rows differ from what HubSpot accepted; returns how many';
REVOKE ALL ON FUNCTION erpcrm.resync(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.resync(text, boolean) TO erpcrm_admin;

/*
 * Refresh.  One step looks at up to p_n keys of sync_state after p_after
 * (in key order, by the primary key) and dirties those whose rows differ
 * from their fingerprint: synced keys whose row changed or left the view,
 * archived keys back in the view.  Keys in flight, pending, failed or
 * discarded are left as they are.  Keys new to the view are found by
 * _refresh_joined.  The worker runs each step in its own transaction.
 */
CREATE FUNCTION erpcrm._refresh_step(p_mapping_id integer, p_after text, p_n integer,
									 OUT last_key text, OUT dirtied bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
	keys text[];
	changed text[];
BEGIN
	dirtied := 0;
	/* the step's last key, and its keys whose state refresh looks at */
	SELECT pg_catalog.max(x.erp_id),
		   pg_catalog.array_agg(x.erp_id) FILTER (WHERE x.state IN ('synced', 'archived'))
	  INTO last_key, keys
	  FROM (SELECT s.erp_id, s.state FROM erpcrm.sync_state s
			 WHERE s.mapping_id = p_mapping_id AND (p_after IS NULL OR s.erp_id > p_after)
			 ORDER BY s.erp_id
			 LIMIT p_n) AS x;
	IF keys IS NULL THEN
		RETURN;
	END IF;
	/* the keys that differ, by a join of the step's keys with their rows */
	changed := ARRAY(
		WITH f AS MATERIALIZED (SELECT * FROM erpcrm._fingerprints(p_mapping_id, keys))
		SELECT s.erp_id
		  FROM pg_catalog.unnest(keys) AS k(erp_id)
		  JOIN erpcrm.sync_state s ON s.mapping_id = p_mapping_id AND s.erp_id = k.erp_id
		  LEFT JOIN f ON f.erp_id = k.erp_id
		 WHERE CASE WHEN s.state = 'archived' THEN f.erp_id IS NOT NULL
					WHEN f.erp_id IS NOT NULL
					THEN s.fingerprint IS NULL OR f.fingerprint IS NULL
						 OR s.fingerprint <> f.fingerprint
					ELSE COALESCE(s.in_erp, true) END);
	IF pg_catalog.cardinality(changed) = 0 THEN
		RETURN;
	END IF;
	UPDATE erpcrm.sync_state s
	   SET change_seq = s.change_seq + 1, state = 'pending', attempts = 0,
		   next_attempt_at = pg_catalog.now(),
		   dirty_since = COALESCE(s.dirty_since, pg_catalog.now())
	 WHERE s.mapping_id = p_mapping_id AND s.erp_id = ANY (changed)
	   AND s.state IN ('synced', 'archived');
	GET DIAGNOSTICS dirtied = ROW_COUNT;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._refresh_step(integer, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._refresh_step(integer, text, integer) TO erpcrm_admin;

/* Keys in the view that erpcrm does not know yet (one read of the view's keys). */
CREATE FUNCTION erpcrm._refresh_joined(p_mapping_id integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping;
	n bigint;
BEGIN
	SELECT * INTO m FROM erpcrm.mapping x WHERE x.mapping_id = p_mapping_id;
	IF NOT FOUND OR NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = m.source) THEN
		RETURN 0;
	END IF;
	INSERT INTO erpcrm.sync_state AS s (mapping_id, erp_id)
	SELECT p_mapping_id, k.k
	  FROM erpcrm._view_keys_all(m.source, m.owner) AS k(k)
	 WHERE k.k IS NOT NULL AND pg_catalog.octet_length(k.k) <= 2048
	   AND NOT EXISTS (SELECT FROM erpcrm.sync_state x
					    WHERE x.mapping_id = p_mapping_id AND x.erp_id = k.k)
	ON CONFLICT (mapping_id, erp_id) DO NOTHING;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._refresh_joined(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._refresh_joined(integer) TO erpcrm_admin;

/* The worker: a refresh of the mapping ended, having dirtied n keys. */
CREATE FUNCTION erpcrm._refreshed(p_mapping_id integer, p_n bigint)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO erpcrm.fingerprint_stat AS f (mapping_id, refreshed_at, refresh_dirtied)
	VALUES (p_mapping_id, pg_catalog.now(), p_n)
	ON CONFLICT (mapping_id) DO UPDATE
	   SET refreshed_at = excluded.refreshed_at, refresh_dirtied = excluded.refresh_dirtied;
$$;
REVOKE ALL ON FUNCTION erpcrm._refreshed(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._refreshed(integer, bigint) TO erpcrm_admin;

CREATE FUNCTION erpcrm.refresh(mapping text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(refresh.mapping);
	n bigint;
	step record;
	after text;
BEGIN
	PERFORM erpcrm._require_view(m.mapping_id);
	n := erpcrm._refresh_joined(m.mapping_id);
	LOOP
		step := erpcrm._refresh_step(m.mapping_id, after, 1000);
		EXIT WHEN step.last_key IS NULL;
		n := n + step.dirtied;
		after := step.last_key;
	END LOOP;
	PERFORM erpcrm._refreshed(m.mapping_id, n);
	IF n > 0 THEN
		PERFORM erpcrm._wake();
	END IF;
	RETURN n;
END
$$;
COMMENT ON FUNCTION erpcrm.refresh(text) IS 'compare a mapping''s view with the fingerprints of what HubSpot holds and mark dirty only the keys whose rows differ, left the view or joined it; returns how many';
REVOKE ALL ON FUNCTION erpcrm.refresh(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.refresh(text) TO erpcrm_admin;

CREATE FUNCTION erpcrm.set_refresh(mapping text, refresh_every interval)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(set_refresh.mapping);
BEGIN
	IF refresh_every IS NOT NULL AND refresh_every <= interval '0' THEN
		RAISE EXCEPTION 'refresh_every of mapping "%" must be a positive interval', m.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give an interval such as ''1 hour'', or NULL to stop refreshing.';
	END IF;
	UPDATE erpcrm.mapping x SET refresh_every = set_refresh.refresh_every
	 WHERE x.mapping_id = m.mapping_id;
	PERFORM erpcrm._wake();
END
$$;
COMMENT ON FUNCTION erpcrm.set_refresh(text, interval) IS 'let the worker run erpcrm.refresh() of the mapping this often (NULL: never), for views whose rows change with time';
REVOKE ALL ON FUNCTION erpcrm.set_refresh(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.set_refresh(text, interval) TO erpcrm_admin;

/* The worker: the mapping whose refresh is due first, if any. */
CREATE FUNCTION erpcrm._refresh_due()
RETURNS integer
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT m.mapping_id
	  FROM erpcrm.mapping m LEFT JOIN erpcrm.fingerprint_stat f USING (mapping_id)
	 WHERE m.refresh_every IS NOT NULL AND NOT m.paused
	   AND (f.refreshed_at IS NULL OR f.refreshed_at + m.refresh_every <= now())
	 ORDER BY f.refreshed_at NULLS FIRST, m.mapping_id
	 LIMIT 1;
END;
REVOKE ALL ON FUNCTION erpcrm._refresh_due() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._refresh_due() TO erpcrm_admin;

/* erpcrm.status gains unchanged and last_refresh (1.2's view, restated with two more columns at the end). */
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
	   COALESCE(om.unknown_owners, 0) AS unknown_owners,
	   COALESCE(fs.unchanged, 0) AS unchanged,
	   fs.refreshed_at AS last_refresh
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
  LEFT JOIN erpcrm.fingerprint_stat fs ON fs.mapping_id = m.mapping_id
 ORDER BY m.name;
COMMENT ON COLUMN erpcrm.status.unchanged IS 'dirtied keys recorded as synced without a call, because HubSpot already holds their content (fingerprints)';
COMMENT ON COLUMN erpcrm.status.last_refresh IS 'when the last erpcrm.refresh() of the mapping ended (by a DBA or the worker)';

-- ===================================================================
-- Part 4: drift (reconcile)
-- ===================================================================

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

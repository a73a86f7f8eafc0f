/* erpcrm--1.2--1.3.sql: layers, send only what changed, drift, the way back, reach */

\echo Use "ALTER EXTENSION erpcrm UPDATE TO '1.3'" to load this file. \quit

/*
 * Each part below belongs to one line of work; keep additions inside their
 * part so that parallel work merges cleanly.  Every object created or
 * changed here is also in the complete install script erpcrm--1.3.sql, and
 * the catalog test compares a fresh install with an upgraded one.
 */

-- ===================================================================
-- Part 2 (first, as every later part uses them): the due queue of its own
-- ===================================================================

/*
 * sync_state is split in two tables: sync_key (what HubSpot holds of a key,
 * written once per send) and sync_queue (the delivery in progress), read
 * together through the view erpcrm.sync_state.  The table is kept as
 * sync_key; the queued keys move to sync_queue, and a queued key keeps a
 * sync_key row only when HubSpot holds something of it.  The columns that
 * moved are dropped at the end of this script, once every object that
 * reads them reads the view.  (The fingerprint column of part 3 is added
 * here, as the view shows it.)
 */
ALTER TABLE erpcrm.sync_state ADD COLUMN fingerprint bigint;
ALTER TABLE erpcrm.sync_state RENAME TO sync_key;
ALTER TABLE erpcrm.sync_key RENAME CONSTRAINT sync_state_pkey TO sync_key_pkey;
ALTER TABLE erpcrm.sync_key RENAME CONSTRAINT sync_state_mapping_id_fkey TO sync_key_mapping_id_fkey;
ALTER INDEX erpcrm.sync_state_unlinked RENAME TO sync_key_unlinked;
DROP INDEX erpcrm.sync_state_due, erpcrm.sync_state_failed, erpcrm.sync_state_in_flight;

CREATE TABLE erpcrm.sync_queue (
	mapping_id		integer NOT NULL REFERENCES erpcrm.mapping ON DELETE CASCADE,
	erp_id			text NOT NULL,
	state			text NOT NULL DEFAULT 'pending',
	change_seq		bigint NOT NULL DEFAULT 1,
	sent_seq		bigint,
	attempts		integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	dirty_since		timestamptz DEFAULT pg_catalog.now(),
	http_status		integer,
	error_category	text,
	error_message	text,
	correlation_id	text,
	error_at		timestamptz,
	PRIMARY KEY (mapping_id, erp_id),
	CONSTRAINT sync_queue_state_check
		CHECK (state IN ('pending', 'in_flight', 'failed', 'discarded'))
) WITH (fillfactor = 60);
/*
 * Claiming takes due keys in (next_attempt_at, erp_id) order straight from
 * the index, without sorting a large backlog on every batch.  No index of
 * the queue mentions state, neither as a column nor in a predicate, and
 * its pages keep room (fillfactor): the claim, which changes only state
 * and sent_seq, is a HOT update that adds no index entry.  The claim skips
 * the few keys in flight (at most the batches on their way); failed and
 * discarded keys are found through the mapping's primary key range.  (Its
 * predicate, always true, keeps the planner from looking keys up through
 * it: only a query that says next_attempt_at IS NOT NULL, or compares it,
 * reads it.)
 */
CREATE INDEX sync_queue_due ON erpcrm.sync_queue (mapping_id, next_attempt_at, erp_id)
	WHERE next_attempt_at IS NOT NULL;
COMMENT ON TABLE erpcrm.sync_queue IS 'keys to send, in flight, failed or discarded: the delivery in progress (read erpcrm.sync_state)';

SELECT pg_catalog.pg_extension_config_dump('erpcrm.sync_queue', '');
REVOKE ALL ON erpcrm.sync_queue FROM PUBLIC;
GRANT SELECT ON erpcrm.sync_queue TO erpcrm_monitor, pg_monitor;

INSERT INTO erpcrm.sync_queue (mapping_id, erp_id, state, change_seq, sent_seq, attempts,
							   next_attempt_at, dirty_since, http_status, error_category,
							   error_message, correlation_id, error_at)
SELECT mapping_id, erp_id, state, change_seq, sent_seq, attempts,
	   CASE WHEN state IN ('failed', 'discarded') THEN 'infinity' ELSE next_attempt_at END,
	   dirty_since, http_status, error_category, error_message, correlation_id, error_at
  FROM erpcrm.sync_key
 WHERE state NOT IN ('synced', 'archived');
DELETE FROM erpcrm.sync_key
 WHERE state NOT IN ('synced', 'archived')
   AND hubspot_id IS NULL AND last_synced_at IS NULL AND in_erp IS NULL
   AND assoc_state IS NULL AND unlinked IS NULL AND archived_at IS NULL;
UPDATE erpcrm.sync_key
   SET sent_seq = CASE WHEN state IN ('synced', 'archived') THEN change_seq
					   ELSE COALESCE(sent_seq, 0) END,
	   state = CASE WHEN state IN ('synced', 'archived') THEN state ELSE 'synced' END;
ALTER TABLE erpcrm.sync_key DROP CONSTRAINT sync_state_state_check;
ALTER TABLE erpcrm.sync_key ADD CONSTRAINT sync_key_state_check CHECK (state IN ('synced', 'archived'));
ALTER TABLE erpcrm.sync_key ALTER COLUMN state SET DEFAULT 'synced';
ALTER TABLE erpcrm.sync_key ALTER COLUMN sent_seq SET DEFAULT 0;
ALTER TABLE erpcrm.sync_key ALTER COLUMN sent_seq SET NOT NULL;
COMMENT ON TABLE erpcrm.sync_key IS 'one row per (mapping, ERP key) that reached HubSpot: what HubSpot holds of it (read erpcrm.sync_state)';
COMMENT ON COLUMN erpcrm.sync_key.fingerprint IS 'hash of the properties and association targets HubSpot last accepted for this key (NULL: unknown, the next send records it)';

/*
 * One row per (mapping, ERP key): where that object stands with HubSpot.
 * A key in the queue shows the queue's state, with what HubSpot holds of it
 * if anything; a settled key shows its sync_key row.  (The settled keys
 * are one branch per state, so that a condition on the state leaves out
 * the branches that cannot match without reading them.)
 */
CREATE VIEW erpcrm.sync_state AS
SELECT q.mapping_id, q.erp_id, q.state, k.hubspot_id, q.change_seq, q.sent_seq,
	   q.attempts, q.next_attempt_at, q.dirty_since, k.last_synced_at, k.in_erp,
	   q.http_status, q.error_category, q.error_message, q.correlation_id, q.error_at,
	   k.assoc_state, k.unlinked, k.archived_at, k.fingerprint
  FROM erpcrm.sync_queue q
  LEFT JOIN erpcrm.sync_key k ON k.mapping_id = q.mapping_id AND k.erp_id = q.erp_id
UNION ALL
SELECT k.mapping_id, k.erp_id, 'synced'::text, k.hubspot_id, k.sent_seq, k.sent_seq,
	   0, k.last_synced_at, NULL::timestamptz, k.last_synced_at, k.in_erp,
	   NULL::integer, NULL::text, NULL::text, NULL::text, NULL::timestamptz,
	   k.assoc_state, k.unlinked, k.archived_at, k.fingerprint
  FROM erpcrm.sync_key k
 WHERE k.state = 'synced'
   AND NOT EXISTS (SELECT FROM erpcrm.sync_queue q
					WHERE q.mapping_id = k.mapping_id AND q.erp_id = k.erp_id)
UNION ALL
SELECT k.mapping_id, k.erp_id, 'archived'::text, k.hubspot_id, k.sent_seq, k.sent_seq,
	   0, k.last_synced_at, NULL::timestamptz, k.last_synced_at, k.in_erp,
	   NULL::integer, NULL::text, NULL::text, NULL::text, NULL::timestamptz,
	   k.assoc_state, k.unlinked, k.archived_at, k.fingerprint
  FROM erpcrm.sync_key k
 WHERE k.state = 'archived'
   AND NOT EXISTS (SELECT FROM erpcrm.sync_queue q
					WHERE q.mapping_id = k.mapping_id AND q.erp_id = k.erp_id);
ALTER VIEW erpcrm.sync_state ALTER COLUMN state SET DEFAULT 'pending';
ALTER VIEW erpcrm.sync_state ALTER COLUMN change_seq SET DEFAULT 1;
ALTER VIEW erpcrm.sync_state ALTER COLUMN attempts SET DEFAULT 0;
ALTER VIEW erpcrm.sync_state ALTER COLUMN next_attempt_at SET DEFAULT pg_catalog.now();
ALTER VIEW erpcrm.sync_state ALTER COLUMN dirty_since SET DEFAULT pg_catalog.now();
COMMENT ON VIEW erpcrm.sync_state IS 'one row per (mapping, ERP key): where that object stands with HubSpot (erpcrm.sync_key and erpcrm.sync_queue together)';
COMMENT ON COLUMN erpcrm.sync_state.assoc_state IS 'associations made for this key: column=hubspot id, separated by ;';
COMMENT ON COLUMN erpcrm.sync_state.unlinked IS 'links not made because the target is not a live HubSpot object: {association column: target erp_id}';
COMMENT ON COLUMN erpcrm.sync_state.archived_at IS 'when erpcrm archived this key''s HubSpot object (NULL: not archived)';
COMMENT ON COLUMN erpcrm.sync_state.fingerprint IS 'hash of the properties and association targets HubSpot last accepted for this key (NULL: unknown, the next send records it)';

/*
 * A write to erpcrm.sync_state (a DBA's repair, a test) goes to the two
 * tables: the queue holds a key whose state is pending, in flight, failed
 * or discarded; sync_key holds a key that is synced or archived, and a
 * queued key of which HubSpot holds something (an id, links, a
 * fingerprint).
 */
CREATE FUNCTION erpcrm._sync_state_write()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	settled boolean;
BEGIN
	IF TG_OP <> 'INSERT' THEN
		IF TG_OP = 'DELETE' OR NEW.mapping_id IS DISTINCT FROM OLD.mapping_id
		   OR NEW.erp_id IS DISTINCT FROM OLD.erp_id THEN
			DELETE FROM erpcrm.sync_queue q WHERE q.mapping_id = OLD.mapping_id AND q.erp_id = OLD.erp_id;
			DELETE FROM erpcrm.sync_key k WHERE k.mapping_id = OLD.mapping_id AND k.erp_id = OLD.erp_id;
		END IF;
		IF TG_OP = 'DELETE' THEN
			RETURN OLD;
		END IF;
	END IF;
	settled := NEW.state IN ('synced', 'archived');
	IF settled OR NEW.hubspot_id IS NOT NULL OR NEW.last_synced_at IS NOT NULL
	   OR NEW.in_erp IS NOT NULL OR NEW.assoc_state IS NOT NULL OR NEW.unlinked IS NOT NULL
	   OR NEW.archived_at IS NOT NULL OR NEW.fingerprint IS NOT NULL THEN
		INSERT INTO erpcrm.sync_key AS k (mapping_id, erp_id, state, hubspot_id, sent_seq,
										  last_synced_at, in_erp, assoc_state, unlinked,
										  archived_at, fingerprint)
		VALUES (NEW.mapping_id, NEW.erp_id, CASE WHEN settled THEN NEW.state ELSE 'synced' END,
				NEW.hubspot_id,
				CASE WHEN settled THEN COALESCE(NEW.change_seq, 0) ELSE COALESCE(NEW.sent_seq, 0) END,
				NEW.last_synced_at, NEW.in_erp, NEW.assoc_state, NEW.unlinked,
				NEW.archived_at, NEW.fingerprint)
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			state = CASE WHEN settled THEN excluded.state ELSE k.state END,
			hubspot_id = excluded.hubspot_id,
			sent_seq = CASE WHEN settled THEN excluded.sent_seq ELSE k.sent_seq END,
			last_synced_at = excluded.last_synced_at,
			in_erp = excluded.in_erp,
			assoc_state = excluded.assoc_state,
			unlinked = excluded.unlinked,
			archived_at = excluded.archived_at,
			fingerprint = excluded.fingerprint;
	ELSE
		DELETE FROM erpcrm.sync_key k WHERE k.mapping_id = NEW.mapping_id AND k.erp_id = NEW.erp_id;
	END IF;
	IF settled THEN
		DELETE FROM erpcrm.sync_queue q WHERE q.mapping_id = NEW.mapping_id AND q.erp_id = NEW.erp_id;
	ELSE
		INSERT INTO erpcrm.sync_queue AS q (mapping_id, erp_id, state, change_seq, sent_seq,
											attempts, next_attempt_at, dirty_since,
											http_status, error_category, error_message,
											correlation_id, error_at)
		VALUES (NEW.mapping_id, NEW.erp_id, NEW.state, COALESCE(NEW.change_seq, 1), NEW.sent_seq,
				COALESCE(NEW.attempts, 0),
				CASE WHEN NEW.state IN ('failed', 'discarded') THEN 'infinity'
					 WHEN NEW.next_attempt_at IS NULL OR NEW.next_attempt_at = 'infinity' THEN pg_catalog.now()
					 ELSE NEW.next_attempt_at END,
				NEW.dirty_since, NEW.http_status, NEW.error_category, NEW.error_message,
				NEW.correlation_id, NEW.error_at)
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			state = excluded.state, change_seq = excluded.change_seq,
			sent_seq = excluded.sent_seq, attempts = excluded.attempts,
			next_attempt_at = excluded.next_attempt_at, dirty_since = excluded.dirty_since,
			http_status = excluded.http_status, error_category = excluded.error_category,
			error_message = excluded.error_message, correlation_id = excluded.correlation_id,
			error_at = excluded.error_at;
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION erpcrm._sync_state_write() IS 'a write to the view erpcrm.sync_state, made to erpcrm.sync_key and erpcrm.sync_queue';
CREATE TRIGGER sync_state_write INSTEAD OF INSERT OR UPDATE OR DELETE ON erpcrm.sync_state
	FOR EACH ROW EXECUTE FUNCTION erpcrm._sync_state_write();
REVOKE ALL ON FUNCTION erpcrm._sync_state_write() FROM PUBLIC;
GRANT SELECT ON erpcrm.sync_state TO erpcrm_monitor, pg_monitor;

-- ===================================================================
-- Part 1: layers (one step helper, one backoff formula)
-- ===================================================================

/*
 * The one retry formula (C, worker/backoff.c), also the worker's own: after
 * the p_attempt-th failure in a row, min(p_retry_max, p_retry_base *
 * 2^(p_attempt - 1)) with +-25% jitter.
 */
CREATE FUNCTION erpcrm._backoff(p_retry_base interval, p_retry_max interval,
								p_attempt integer)
RETURNS interval
AS 'MODULE_PATHNAME', 'erpcrm_backoff_v1'
LANGUAGE C STRICT;
REVOKE ALL ON FUNCTION erpcrm._backoff(interval, interval, integer) FROM PUBLIC;

/*
 * Refuses a caller that is neither the worker nor has the privileges of
 * owner (with no owner: a superuser), inside a security-restricted operation
 * anyone: the functions through which the worker records what HubSpot
 * answered it call it first.  what says what was refused.
 */
CREATE FUNCTION erpcrm._check_worker(what text, owner regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'erpcrm_check_worker_v1'
LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION erpcrm._check_worker(text, regrole) FROM PUBLIC;

/*
 * Refuses a caller of the delivery path that is neither the worker nor has
 * the privileges of the mapping's owner (with no mapping: a superuser),
 * inside a security-restricted operation anyone: the worker's functions
 * that fold, claim and record keys call it first, once per batch (the
 * worker passes on a comparison).  what says what was refused.
 */
CREATE FUNCTION erpcrm._check_delivery(what text, mapping integer)
RETURNS void
AS 'MODULE_PATHNAME', 'erpcrm_check_delivery_v1'
LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION erpcrm._check_delivery(text, integer) FROM PUBLIC;

/* 1.3: only the worker records them (erpcrm._check_worker). */
/* The worker: the owners it read (all of them, archived as 'true' or 'false'), replacing the copy. */
CREATE OR REPLACE FUNCTION erpcrm._owners_refreshed(p_ids text[], p_emails text[], p_archived text[])
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT erpcrm._check_worker('record HubSpot''s owners', NULL);
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

/* The worker records each HubSpot call, when it was made; old rows are trimmed. */
CREATE OR REPLACE FUNCTION erpcrm._log_call(p_called_at timestamptz, p_method text, p_path text,
								 p_status integer, p_latency_ms double precision,
								 p_inputs integer, p_category text, p_correlation_id text,
								 p_mapping_id integer, p_retention interval)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM erpcrm._check_worker('record a HubSpot call in erpcrm.api_log',
		(SELECT m.owner FROM erpcrm.mapping m WHERE m.mapping_id = p_mapping_id));
	INSERT INTO erpcrm.api_call VALUES (p_called_at, p_method, p_path, p_status,
		p_latency_ms, p_inputs, p_category, p_correlation_id, p_mapping_id);
	IF random() < 0.01 THEN
		DELETE FROM erpcrm.api_call WHERE called_at < now() - p_retention;
	END IF;
END
$$;

/* The worker: rows of one batch whose e-mail matched no active owner. */
CREATE OR REPLACE FUNCTION erpcrm._owner_misses(p_mapping_id integer, p_n bigint)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT erpcrm._check_worker(pg_catalog.format('count the owners mapping "%s" named that HubSpot does not know', m.name), m.owner)
	  FROM erpcrm.mapping m WHERE m.mapping_id = p_mapping_id;
	INSERT INTO erpcrm.owner_miss AS o (mapping_id, unknown_owners, last_at)
	VALUES (p_mapping_id, p_n, pg_catalog.now())
	ON CONFLICT (mapping_id) DO UPDATE
	   SET unknown_owners = o.unknown_owners + excluded.unknown_owners, last_at = excluded.last_at;
$$;

/*
 * Keys that HubSpot refused or that could not be sent.
 *   retry_base NULL: the keys are failed, parked until requeued or changed
 *                    in the ERP again;
 *   retry_max NULL:  pending again after exactly retry_base, no attempt
 *                    counted (rate limits, waiting for a dependency, auth);
 *   otherwise:       pending again after erpcrm._backoff() (retry_base *
 *                    2^attempts, at most retry_max, with +-25% jitter); one
 *                    more attempt.
 * A key that changed in the ERP while in flight is pending again at once.
 */
CREATE OR REPLACE FUNCTION erpcrm._error(p_mapping_id integer, p_erp_ids text[],
							  p_http_status integer, p_category text, p_message text,
							  p_correlation_id text,
							  p_retry_base interval, p_retry_max interval)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT erpcrm._check_delivery('record the failure of the keys', p_mapping_id);
	/* by primary key lookups only, whatever the statistics (see _claim()) */
	WITH u AS (
		UPDATE erpcrm.sync_queue s
		   SET state = CASE WHEN s.change_seq <> s.sent_seq THEN 'pending'
							WHEN p_retry_base IS NULL THEN 'failed' ELSE 'pending' END,
			   attempts = s.attempts + CASE WHEN p_retry_base IS NOT NULL AND p_retry_max IS NULL
											THEN 0 ELSE 1 END,
			   next_attempt_at = CASE
					WHEN s.change_seq <> s.sent_seq THEN now()
					WHEN p_retry_base IS NULL THEN 'infinity'
					WHEN p_retry_max IS NULL THEN now() + p_retry_base
					ELSE now() + erpcrm._backoff(p_retry_base, p_retry_max, s.attempts + 1) END,
			   http_status = p_http_status,
			   error_category = p_category,
			   error_message = p_message,
			   correlation_id = p_correlation_id,
			   error_at = now()
		  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
		 WHERE s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
		   AND s.state = 'in_flight'
		RETURNING 1)
	SELECT count(*) FROM u;
END;

/*
 * Mark keys of a mapping dirty: the one statement that says what "send this
 * key again" does to sync_state (fold, resync, refresh, reconcile's repair).
 * A new key is recorded pending.  A known key is pending again now, with no
 * attempts counted and its dirty_since kept; a key in flight stays in flight
 * and is sent again when its send completes (its change_seq moves on).  NULL
 * keys are skipped; keys over 2048 bytes are parked under their stand-in.
 * Returns how many keys were marked.
 */
CREATE FUNCTION erpcrm._dirty(p_mapping_id integer, p_erp_ids text[])
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	/* (a key sent before counts its changes on from the one it sent) */
	WITH ins AS (
		INSERT INTO erpcrm.sync_queue AS s (mapping_id, erp_id, change_seq)
		SELECT p_mapping_id, k.k,
			   COALESCE((SELECT x.sent_seq FROM erpcrm.sync_key x
						  WHERE x.mapping_id = p_mapping_id AND x.erp_id = k.k), 0) + 1
		  FROM (SELECT DISTINCT u.k FROM unnest(p_erp_ids) AS u(k)
				 WHERE octet_length(u.k) <= 2048) AS k
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'pending' END,
			attempts = CASE WHEN s.state = 'in_flight' THEN s.attempts ELSE 0 END,
			next_attempt_at = CASE WHEN s.state = 'in_flight' THEN s.next_attempt_at ELSE now() END,
			dirty_since = COALESCE(s.dirty_since, now())
		RETURNING 1)
	SELECT (SELECT count(*) FROM ins)
		   + CASE WHEN EXISTS (SELECT FROM unnest(p_erp_ids) AS k(k) WHERE octet_length(k.k) > 2048)
				  THEN erpcrm._park_long_keys(p_mapping_id, p_erp_ids) ELSE 0 END;
END;
REVOKE ALL ON FUNCTION erpcrm._dirty(integer, text[]) FROM PUBLIC;

/* resync and TRUNCATE, as of 1.3: through _dirty() */
CREATE OR REPLACE FUNCTION erpcrm._dirty_all(p_mapping_id integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping;
	n bigint;
	in_view text[];
	gone text[];
	long_keys integer;
BEGIN
	SELECT * INTO m FROM erpcrm.mapping WHERE mapping_id = p_mapping_id;
	IF NOT FOUND THEN
		RETURN 0;
	END IF;
	/* the view's keys, and the keys known from before that left it */
	WITH keys AS MATERIALIZED (
		SELECT k FROM erpcrm._view_keys_all(m.source, m.owner) AS k
	)
	SELECT ARRAY(SELECT keys.k FROM keys),
		   ARRAY(SELECT s.erp_id FROM erpcrm.sync_state s
				  WHERE s.mapping_id = p_mapping_id AND s.state <> 'archived'
					AND NOT EXISTS (SELECT FROM keys WHERE erpcrm._key_ref(keys.k) = s.erp_id))
	  INTO in_view, gone;
	n := erpcrm._dirty(p_mapping_id, in_view || gone);

	SELECT count(*) INTO long_keys FROM unnest(in_view) AS k(k) WHERE octet_length(k.k) > 2048;
	IF long_keys > 0 THEN
		RAISE WARNING '% keys of mapping "%" are longer than 2048 bytes and cannot be sent',
			long_keys, m.name
			USING HINT = 'They are listed in erpcrm.failures with category ERP_KEY_TOO_LONG. Shorten the erp_id in the view.';
	END IF;
	IF array_position(in_view, NULL) IS NOT NULL THEN
		INSERT INTO erpcrm.sync_queue AS s (mapping_id, erp_id, state, error_category,
											error_message, error_at, change_seq, next_attempt_at)
		VALUES (p_mapping_id, '', 'failed', 'ERP_NULL_ID',
				format('rows of %s have a NULL erp_id: they cannot be sent to HubSpot', m.source), now(),
				COALESCE((SELECT k.sent_seq FROM erpcrm.sync_key k
						   WHERE k.mapping_id = p_mapping_id AND k.erp_id = ''), 0) + 1,
				'infinity')
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'failed' END,
			attempts = 0, next_attempt_at = CASE WHEN s.state = 'in_flight' THEN now() ELSE 'infinity' END,
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

/* the fold, as of 1.3: through _dirty(), one mapping at a time */
CREATE OR REPLACE FUNCTION erpcrm._fold()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint := 0;
	whole integer[] := '{}';
	mid integer;
	r record;
BEGIN
	PERFORM erpcrm._check_delivery('fold the outbox into the keys to deliver', NULL);
	/* the committed outbox, per mapping: its keys, and whether all of them */
	FOR r IN
		WITH d AS (
			DELETE FROM erpcrm.outbox RETURNING mapping_id, erp_id, erp_ids
		)
		SELECT d.mapping_id,
			   array_agg(k.erp_id) FILTER (WHERE k.erp_id IS NOT NULL) AS erp_ids,
			   bool_or(d.erp_id IS NULL AND d.erp_ids IS NULL) AS whole
		  FROM d CROSS JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS k(erp_id)
		 WHERE EXISTS (SELECT FROM erpcrm.mapping m WHERE m.mapping_id = d.mapping_id)
		 GROUP BY d.mapping_id
	LOOP
		IF r.erp_ids IS NOT NULL THEN
			n := n + erpcrm._dirty(r.mapping_id, r.erp_ids);
		END IF;
		IF r.whole THEN
			whole := whole || r.mapping_id;
		END IF;
	END LOOP;

	/*
	 * A TRUNCATE marks every key of its mappings.  A view that cannot list
	 * its keys (an erp_id that raises for one row) must not stop the fold
	 * of the others: its marker goes back to the outbox, to be tried again
	 * at the next fold, and the server log says why.
	 */
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
	RETURN n;
END
$$;

/* 1.3: the worker's alone (erpcrm._check_delivery), as the fold is */
CREATE OR REPLACE FUNCTION erpcrm._before_fold()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM erpcrm._check_delivery('find mapping sources again and fan out watched keys', NULL);
	PERFORM erpcrm._resolve_sources();
	RETURN erpcrm._fan_out();
END
$$;

/* requeue() and requeue_failed(), as of 1.3: through _dirty() */
CREATE OR REPLACE FUNCTION erpcrm.requeue(mapping text, erp_id text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(mapping);
BEGIN
	INSERT INTO erpcrm.outbox VALUES (m.mapping_id, requeue.erp_id);
	PERFORM erpcrm._dirty(m.mapping_id, ARRAY[requeue.erp_id]);
	PERFORM erpcrm._wake();
	RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION erpcrm.requeue_failed(mapping text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	mid integer;
	n bigint;
BEGIN
	IF mapping IS NOT NULL THEN
		mid := (erpcrm._mapping(mapping)).mapping_id;
	END IF;
	/* failed keys are never in flight: _dirty() makes them pending */
	SELECT COALESCE(sum(erpcrm._dirty(f.mapping_id, f.keys)), 0) INTO n
	  FROM (SELECT s.mapping_id, array_agg(s.erp_id) AS keys FROM erpcrm.sync_state s
			 WHERE s.state = 'failed' AND (mid IS NULL OR s.mapping_id = mid)
			 GROUP BY s.mapping_id) AS f;
	PERFORM erpcrm._wake();
	RETURN n;
END
$$;

-- ===================================================================
-- Part 2: flat cost at scale (fewer row versions per key)
-- ===================================================================

/*
 * Keys the worker claimed ahead (while the batch before them was on the
 * wire) and does not send after all, because it backs off (HubSpot's rate
 * limit, a refused token, an outage): pending again, as if never claimed.
 * No attempt is counted and their last error stays.  A key that changed
 * meanwhile is pending anyway.
 */
CREATE FUNCTION erpcrm._unclaim(p_mapping_id integer, p_erp_ids text[])
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT erpcrm._check_delivery('give back the claimed keys', p_mapping_id);
	/* by primary key lookups only, whatever the statistics (see _claim()) */
	WITH u AS (
		UPDATE erpcrm.sync_queue s
		   SET state = 'pending'
		  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
		 WHERE s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
		   AND s.state = 'in_flight'
		RETURNING 1)
	SELECT count(*) FROM u;
END;
COMMENT ON FUNCTION erpcrm._unclaim(integer, text[]) IS 'worker: give back keys claimed ahead and not sent';
REVOKE ALL ON FUNCTION erpcrm._unclaim(integer, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._unclaim(integer, text[]) TO erpcrm_admin;

/* The dependents of a target whose HubSpot id changed or that was archived
 * are found by the associations they hold (column=hubspot id), not by
 * reading the dependent mapping whole. */
CREATE INDEX sync_key_assoc ON erpcrm.sync_key
	USING gin (pg_catalog.string_to_array(assoc_state, ';'))
	WHERE assoc_state IS NOT NULL;

/*
 * Dependents of a target mapping linked to any of these HubSpot ids: sent
 * again (in flight too when p_in_flight).  One association at a time, found
 * through sync_key_assoc by the "column=hubspot id" entries of their
 * assoc_state, never by reading the dependent mapping whole.
 */
CREATE FUNCTION erpcrm._redirty_linked(p_target_id integer, p_hubspot_ids text[], p_in_flight boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint := 0;
	k bigint;
	dep record;
	links text[];
BEGIN
	FOR dep IN SELECT a.mapping_id, a.column_name FROM erpcrm.association a
				WHERE a.target_id = p_target_id LOOP
		links := ARRAY(SELECT dep.column_name || '=' || o.id
						 FROM pg_catalog.unnest(p_hubspot_ids) AS o(id));
		n := n + erpcrm._dirty(dep.mapping_id, ARRAY(
			SELECT x.erp_id
			  FROM (SELECT r.erp_id,
						   COALESCE((SELECT q.state FROM erpcrm.sync_queue q
									  WHERE q.mapping_id = r.mapping_id AND q.erp_id = r.erp_id),
									r.state) AS state
					  FROM erpcrm.sync_key r
					 WHERE pg_catalog.string_to_array(r.assoc_state, ';') OPERATOR(pg_catalog.&&) links
					   AND r.assoc_state IS NOT NULL
					   /* (+ 0: not by the primary key, which reads the mapping whole) */
					   AND r.mapping_id + 0 = dep.mapping_id) AS x
			 WHERE x.state IN ('synced', 'failed', 'pending') OR (p_in_flight AND x.state = 'in_flight')));
	END LOOP;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._redirty_linked(integer, text[], boolean) FROM PUBLIC;

/* Claimed keys are updated by their primary keys, whatever the statistics. */
CREATE OR REPLACE FUNCTION erpcrm._claim(p_mapping_id integer, n integer)
RETURNS TABLE (erp_id text, hubspot_id text, change_seq bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_sort = off
AS $$
DECLARE
	keys text[];
BEGIN
	PERFORM erpcrm._check_delivery('claim the keys', p_mapping_id);
	keys := ARRAY(
		SELECT c.erp_id FROM erpcrm.sync_queue c
		 WHERE c.mapping_id = p_mapping_id AND c.state = 'pending'
		   AND c.next_attempt_at <= pg_catalog.now()
		 ORDER BY c.next_attempt_at, c.erp_id
		 LIMIT n
		 FOR UPDATE SKIP LOCKED);
	IF pg_catalog.cardinality(keys) = 0 THEN
		RETURN;
	END IF;
	/* (the claim writes the queue only; the HubSpot id is read) */
	RETURN QUERY
	UPDATE erpcrm.sync_queue s
	   SET state = 'in_flight', sent_seq = s.change_seq
	  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(keys)]), keys) AS k(mapping_id, erp_id)
	 WHERE s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
	RETURNING s.erp_id,
			  (SELECT x.hubspot_id FROM erpcrm.sync_key x
				WHERE x.mapping_id = s.mapping_id AND x.erp_id = s.erp_id),
			  s.change_seq;
END
$$;

/* The other per-batch lookups of keys, by primary key in the same way. */
CREATE OR REPLACE FUNCTION erpcrm._failing_alone(p_mapping_id integer, p_erp_ids text[], p_prefix text)
RETURNS TABLE (erp_id text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT erpcrm._check_delivery('look up the failing keys', p_mapping_id);
	SELECT s.erp_id FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
	  JOIN erpcrm.sync_queue s ON s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
	 WHERE starts_with(s.error_message, p_prefix);
END;

CREATE OR REPLACE FUNCTION erpcrm._set_assoc_state(p_mapping_id integer, p_erp_ids text[], p_states text[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	n bigint;
BEGIN
	PERFORM erpcrm._check_delivery('record the associations of the keys', p_mapping_id);
	/* (an unchanged state writes no new row version) */
	UPDATE erpcrm.sync_key s
	   SET assoc_state = p_states[pg_catalog.array_position(p_erp_ids, s.erp_id)]
	  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
	 WHERE s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
	   AND s.assoc_state IS DISTINCT FROM p_states[pg_catalog.array_position(p_erp_ids, s.erp_id)];
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION erpcrm._archived_keys(p_mapping_id integer, p_erp_ids text[])
RETURNS SETOF text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT erpcrm._check_delivery('look up the archived keys', p_mapping_id);
	SELECT s.erp_id FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
	  JOIN erpcrm.sync_key s ON s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
	 WHERE s.archived_at IS NOT NULL AND s.hubspot_id IS NOT NULL;
END;

CREATE OR REPLACE FUNCTION erpcrm._searched_keys(p_mapping_id integer, p_erp_ids text[], p_settle_ms integer)
RETURNS SETOF text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT erpcrm._check_delivery('look up the searched keys', p_mapping_id);
	SELECT s.erp_id FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
	  JOIN erpcrm.sync_queue s ON s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
	 WHERE s.error_category = 'WAITING_FOR_SEARCH'
	   AND s.error_at <= now() - make_interval(secs => p_settle_ms / 1000.0);
END;

CREATE OR REPLACE FUNCTION erpcrm._give_up(p_mapping_id integer, p_erp_ids text[], p_max_attempts integer)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT erpcrm._check_delivery('give up the keys', p_mapping_id);
	/* by primary key lookups only, whatever the statistics (see _claim());
	 * (|| '': not through the due index, whose next_attempt_at comes
	 * before erp_id, which reads the mapping's whole backlog) */
	WITH u AS (
		UPDATE erpcrm.sync_queue s
		   SET state = 'failed',
			   next_attempt_at = 'infinity',
			   error_message = s.error_message || ' (given up after ' || s.attempts || ' attempts)'
		  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
		 WHERE s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
		   AND s.state || '' = 'pending' AND s.change_seq = s.sent_seq
		   AND s.attempts >= p_max_attempts
		RETURNING 1)
	SELECT count(*) FROM u;
END;

/* The dependents of a key whose HubSpot id changed, and those linked to a
 * key archived now, are found through sync_key_assoc. */
CREATE OR REPLACE FUNCTION erpcrm._redirty_dependents(p_mapping_id integer, p_erp_ids text[], p_hubspot_ids text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	old_ids text[];
	n bigint := 0;
BEGIN
	IF NOT EXISTS (SELECT FROM erpcrm.association a WHERE a.target_id = p_mapping_id) THEN
		RETURN 0;
	END IF;
	/* by primary key lookups only, as in _claim() */
	SELECT pg_catalog.array_agg(s.hubspot_id) INTO old_ids
	  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
	  JOIN erpcrm.sync_key s ON s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
	 WHERE s.hubspot_id IS NOT NULL
	   AND s.hubspot_id <> p_hubspot_ids[pg_catalog.array_position(p_erp_ids, s.erp_id)];
	IF old_ids IS NULL THEN
		RETURN 0;
	END IF;
	RETURN erpcrm._redirty_linked(p_mapping_id, old_ids, false);
END
$$;

CREATE OR REPLACE FUNCTION erpcrm._links_done(p_mapping_id integer, p_synced text[], p_unlinked text[],
								   p_archived text[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	n bigint := 0;
	k bigint;
	archived_ids text[];
	dep record;
BEGIN
	PERFORM erpcrm._check_delivery('record the links of the keys', p_mapping_id);
	/* by primary key lookups only, whatever the statistics (see _claim()) */
	IF p_synced IS NOT NULL AND cardinality(p_synced) > 0 THEN
		UPDATE erpcrm.sync_key s
		   SET unlinked = p_unlinked[array_position(p_synced, s.erp_id)]::jsonb, archived_at = NULL
		  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_synced)]), p_synced) AS k(mapping_id, erp_id)
		 WHERE s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
		   AND (s.unlinked IS DISTINCT FROM p_unlinked[array_position(p_synced, s.erp_id)]::jsonb
				OR s.archived_at IS NOT NULL);
	END IF;
	IF p_archived IS NOT NULL AND cardinality(p_archived) > 0 THEN
		WITH u AS (
			UPDATE erpcrm.sync_key s
			   SET archived_at = COALESCE(s.archived_at, now()), unlinked = NULL
			  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_archived)]), p_archived) AS k(mapping_id, erp_id)
			 WHERE s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
			RETURNING s.hubspot_id)
		SELECT array_agg(u.hubspot_id) INTO archived_ids FROM u WHERE u.hubspot_id IS NOT NULL;
	END IF;
	IF NOT EXISTS (SELECT FROM erpcrm.association a WHERE a.target_id = p_mapping_id) THEN
		RETURN 0;
	END IF;

	/* dependents linked to an object that is archived now lose the link */
	IF archived_ids IS NOT NULL THEN
		n := n + erpcrm._redirty_linked(p_mapping_id, archived_ids, true);
	END IF;

	/* dependents sent without a link to a key that is in HubSpot now get it */
	/* (one association at a time: the dependents' unlinked keys are read
	 * through sync_key_unlinked, never the dependent mapping whole) */
	IF p_synced IS NOT NULL AND cardinality(p_synced) > 0 THEN
		FOR dep IN SELECT a.mapping_id, a.column_name FROM erpcrm.association a
					WHERE a.target_id = p_mapping_id LOOP
			n := n + erpcrm._dirty(dep.mapping_id, ARRAY(
				SELECT r.erp_id FROM erpcrm.sync_key r
				 WHERE r.mapping_id = dep.mapping_id
				   AND r.unlinked IS NOT NULL
				   AND r.unlinked ->> dep.column_name = ANY (p_synced)
				   /* not discarded */
				   AND COALESCE((SELECT q.state FROM erpcrm.sync_queue q
								  WHERE q.mapping_id = r.mapping_id AND q.erp_id = r.erp_id),
								r.state) IN ('synced', 'failed', 'pending', 'in_flight')));
		END LOOP;
	END IF;
	RETURN n;
END
$$;


/* Recovery, long keys and discard: the queue. */
CREATE OR REPLACE FUNCTION erpcrm._recover()
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT erpcrm._check_delivery('put the keys in flight back to pending', NULL);
	/* each mapping's primary key range in the queue (no index mentions
	 * state, see sync_queue_due): the backlog, read once at start-up */
	WITH r AS (
		UPDATE erpcrm.sync_queue q SET state = 'pending', next_attempt_at = now()
		  FROM erpcrm.mapping m
		 WHERE q.mapping_id = m.mapping_id AND q.state = 'in_flight'
		RETURNING 1)
	SELECT count(*) FROM r;
END;

CREATE OR REPLACE FUNCTION erpcrm._park_long_keys(p_mapping_id integer, p_keys text[])
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	WITH ins AS (
		INSERT INTO erpcrm.sync_queue AS s (mapping_id, erp_id, state, error_category,
											error_message, error_at, change_seq, next_attempt_at)
		SELECT p_mapping_id, erpcrm._key_ref(k.k), 'failed', 'ERP_KEY_TOO_LONG',
			   'the key is ' || octet_length(k.k) || ' bytes long, and erpcrm keys are at most 2048 bytes; it begins with: '
			   || "left"(k.k, 64), now(),
			   COALESCE((SELECT x.sent_seq FROM erpcrm.sync_key x
						  WHERE x.mapping_id = p_mapping_id AND x.erp_id = erpcrm._key_ref(k.k)), 0) + 1,
			   'infinity'
		  FROM (SELECT DISTINCT u.k FROM unnest(p_keys) AS u(k)
				 WHERE octet_length(u.k) > 2048) AS k
		ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
			change_seq = s.change_seq + 1,
			state = CASE WHEN s.state = 'in_flight' THEN s.state ELSE 'failed' END,
			attempts = 0,
			next_attempt_at = CASE WHEN s.state = 'in_flight' THEN now() ELSE 'infinity' END,
			dirty_since = COALESCE(s.dirty_since, now()),
			http_status = NULL, correlation_id = NULL,
			error_category = excluded.error_category,
			error_message = excluded.error_message,
			error_at = now()
		RETURNING 1)
	SELECT count(*) FROM ins;
END;

CREATE OR REPLACE FUNCTION erpcrm.discard(mapping text, erp_id text)
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
	PERFORM FROM erpcrm.sync_queue q WHERE q.mapping_id = m.mapping_id AND q.erp_id = k FOR UPDATE;
	PERFORM FROM erpcrm.sync_key s WHERE s.mapping_id = m.mapping_id AND s.erp_id = k FOR UPDATE;
	SELECT s.state INTO st FROM erpcrm.sync_state s
	 WHERE s.mapping_id = m.mapping_id AND s.erp_id = k;
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
	   SET state = 'discarded', attempts = 0, next_attempt_at = 'infinity',
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
/* (sync_key.fingerprint is added at the top of this script, with the
 * view that shows it) */
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
SET enable_hashjoin = off
SET enable_mergejoin = off
BEGIN ATOMIC
	SELECT s.erp_id, s.fingerprint, m.fingerprint_epoch
	  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
	  JOIN erpcrm.sync_key s ON s.mapping_id = k.mapping_id AND s.erp_id = k.erp_id
	  JOIN erpcrm.mapping m ON m.mapping_id = p_mapping_id
	 WHERE s.fingerprint IS NOT NULL AND s.hubspot_id IS NOT NULL
	   AND NOT EXISTS (SELECT FROM erpcrm.sync_queue q
						WHERE q.mapping_id = k.mapping_id AND q.erp_id = k.erp_id
						  AND q.error_category IS NOT NULL);
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
	SELECT erpcrm._check_worker(pg_catalog.format('count the keys of mapping "%s" found unchanged', m.name), m.owner)
	  FROM erpcrm.mapping m WHERE m.mapping_id = p_mapping_id;
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
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	gone bigint := 0;
	n bigint;
BEGIN
	PERFORM erpcrm._check_delivery('record the delivery of the keys', p_mapping_id);
	/*
	 * Lock the batch's queue entries first.  A change committed while the
	 * batch was on its way (a resync, a fold) is then seen by the
	 * statements below, which take their snapshot after it: each key is
	 * either recorded or pending again, never left in flight between the
	 * two (their conditions are each other's opposite, and a row changed
	 * after the snapshot would match neither).
	 */
	PERFORM FROM erpcrm.sync_queue q,
			unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
	 WHERE q.mapping_id = k.mapping_id AND q.erp_id = k.erp_id AND q.state = 'in_flight'
	   FOR UPDATE OF q;
	IF NOT p_archived THEN
		PERFORM erpcrm._redirty_dependents(p_mapping_id, p_erp_ids, p_hubspot_ids);
	END IF;
	/* keys that left the view before ever reaching HubSpot leave no trace */
	IF NOT p_in_erp THEN
		WITH g AS (
			DELETE FROM erpcrm.sync_queue q
			 USING unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
			 WHERE q.mapping_id = k.mapping_id AND q.erp_id = k.erp_id
			   AND q.state = 'in_flight' AND q.change_seq = q.sent_seq
			   AND NOT EXISTS (SELECT FROM erpcrm.sync_key x
								WHERE x.mapping_id = q.mapping_id AND x.erp_id = q.erp_id
								  AND x.hubspot_id IS NOT NULL)
			RETURNING q.mapping_id, q.erp_id),
		d AS (
			DELETE FROM erpcrm.sync_key x USING g
			 WHERE x.mapping_id = g.mapping_id AND x.erp_id = g.erp_id)
		SELECT pg_catalog.count(*) INTO gone FROM g;
	END IF;
	/*
	 * The send is recorded once, in the key's sync_key row (made now for a
	 * key sent for the first time).  Its queue entry goes, or is pending
	 * again at once when the key changed while in flight.
	 */
	WITH sent AS (
		DELETE FROM erpcrm.sync_queue q
		 USING unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
		 WHERE q.mapping_id = k.mapping_id AND q.erp_id = k.erp_id
		   AND q.state = 'in_flight' AND q.change_seq = q.sent_seq
		RETURNING q.erp_id, q.sent_seq),
	changed AS (
		UPDATE erpcrm.sync_queue q
		   SET state = 'pending', attempts = 0, next_attempt_at = pg_catalog.now(),
			   http_status = NULL, error_category = NULL, error_message = NULL,
			   correlation_id = NULL, error_at = NULL
		  FROM unnest(pg_catalog.array_fill(p_mapping_id, ARRAY[pg_catalog.cardinality(p_erp_ids)]), p_erp_ids) AS k(mapping_id, erp_id)
		 WHERE q.mapping_id = k.mapping_id AND q.erp_id = k.erp_id
		   AND q.state = 'in_flight' AND q.change_seq <> q.sent_seq
		RETURNING q.erp_id, q.sent_seq)
	INSERT INTO erpcrm.sync_key AS s (mapping_id, erp_id, state, hubspot_id, sent_seq,
									  last_synced_at, in_erp, fingerprint)
	SELECT p_mapping_id, x.erp_id, CASE WHEN p_archived THEN 'archived' ELSE 'synced' END,
		   CASE WHEN NOT p_archived THEN p_hubspot_ids[pg_catalog.array_position(p_erp_ids, x.erp_id)] END,
		   x.sent_seq, pg_catalog.now(), p_in_erp,
		   CASE WHEN NOT p_archived AND p_in_erp
				THEN p_fingerprints[pg_catalog.array_position(p_erp_ids, x.erp_id)] END
	  FROM (SELECT * FROM sent UNION ALL SELECT * FROM changed) AS x
	ON CONFLICT (mapping_id, erp_id) DO UPDATE SET
		state = excluded.state,
		hubspot_id = CASE WHEN p_archived THEN s.hubspot_id
						  ELSE COALESCE(excluded.hubspot_id, s.hubspot_id) END,
		sent_seq = excluded.sent_seq,
		last_synced_at = excluded.last_synced_at,
		in_erp = excluded.in_erp,
		fingerprint = excluded.fingerprint;
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
	/* the step's last key, and its keys whose state refresh looks at: those
	 * HubSpot holds (sync_key) that are not in the queue */
	SELECT pg_catalog.max(x.erp_id),
		   pg_catalog.array_agg(x.erp_id) FILTER (WHERE NOT x.queued)
	  INTO last_key, keys
	  FROM (SELECT s.erp_id,
				   EXISTS (SELECT FROM erpcrm.sync_queue q
							WHERE q.mapping_id = s.mapping_id AND q.erp_id = s.erp_id) AS queued
			  FROM erpcrm.sync_key s
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
		  JOIN erpcrm.sync_key s ON s.mapping_id = p_mapping_id AND s.erp_id = k.erp_id
		  LEFT JOIN f ON f.erp_id = k.erp_id
		 WHERE CASE WHEN s.state = 'archived' THEN f.erp_id IS NOT NULL
					WHEN f.erp_id IS NOT NULL
					THEN s.fingerprint IS NULL OR f.fingerprint IS NULL
						 OR s.fingerprint <> f.fingerprint
					ELSE COALESCE(s.in_erp, true) END);
	IF pg_catalog.cardinality(changed) = 0 THEN
		RETURN;
	END IF;
	dirtied := erpcrm._dirty(p_mapping_id, changed);
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
	INSERT INTO erpcrm.sync_queue AS s (mapping_id, erp_id)
	SELECT p_mapping_id, k.k
	  FROM erpcrm._view_keys_all(m.source, m.owner) AS k(k)
	 WHERE k.k IS NOT NULL AND pg_catalog.octet_length(k.k) <= 2048
	   AND NOT EXISTS (SELECT FROM erpcrm.sync_key x
					    WHERE x.mapping_id = p_mapping_id AND x.erp_id = k.k)
	   AND NOT EXISTS (SELECT FROM erpcrm.sync_queue x
					    WHERE x.mapping_id = p_mapping_id AND x.erp_id = k.k)
	ON CONFLICT (mapping_id, erp_id) DO NOTHING;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._refresh_joined(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._refresh_joined(integer) TO erpcrm_admin;

/*
 * A refresh of the mapping ended, having dirtied n keys: refresh() says so
 * (for whoever calls it), the worker through _refreshed().
 */
CREATE FUNCTION erpcrm._refresh_ended(p_mapping_id integer, p_n bigint)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO erpcrm.fingerprint_stat AS f (mapping_id, refreshed_at, refresh_dirtied)
	VALUES (p_mapping_id, pg_catalog.now(), p_n)
	ON CONFLICT (mapping_id) DO UPDATE
	   SET refreshed_at = excluded.refreshed_at, refresh_dirtied = excluded.refresh_dirtied;
$$;
REVOKE ALL ON FUNCTION erpcrm._refresh_ended(integer, bigint) FROM PUBLIC;

/* The worker: a refresh of the mapping ended, having dirtied n keys. */
CREATE FUNCTION erpcrm._refreshed(p_mapping_id integer, p_n bigint)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT erpcrm._check_delivery('record the end of a refresh', p_mapping_id);
	SELECT erpcrm._refresh_ended(p_mapping_id, p_n);
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
	PERFORM erpcrm._refresh_ended(m.mapping_id, n);
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

/* erpcrm.status gains unchanged and last_refresh: restated once, in Part 4 (with drift). */

/*
 * Erasure (GDPR / RODO).  erpcrm.forget(mapping, erp_id) records a
 * tombstone for the key (a SHA-256 of the ERP key, never the key itself),
 * removes erpcrm's traces of it (sync state, outbox, drift findings, HubSpot
 * calls and inbox changes naming it, links other keys wait for) and queues
 * the erasure in HubSpot, which the worker carries out: contacts by
 * HubSpot's GDPR delete (permanent), other objects by archive (HubSpot keeps
 * an archived object restorable for 90 days).  A key with a tombstone is
 * never sent again: the worker drops it when an ERP change, a resync or a
 * refresh brings it back, and objects linked to it are sent without the
 * link.  erpcrm.erasures is the log, without personal data.
 */
CREATE TABLE erpcrm.forgotten (
	mapping_id		integer NOT NULL REFERENCES erpcrm.mapping ON DELETE CASCADE,
	key_hash		bytea NOT NULL,
	forgotten_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (mapping_id, key_hash)
);
COMMENT ON TABLE erpcrm.forgotten IS 'tombstones of keys erased with erpcrm.forget(): SHA-256 of the ERP key; such a key is never sent again';

CREATE TABLE erpcrm.erasure (
	erasure_id		bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	mapping			text NOT NULL,
	object_type		text NOT NULL,
	key_hash		bytea NOT NULL,
	method			text NOT NULL CHECK (method IN ('gdpr-delete', 'archive', 'none')),
	object_ref		text,
	by_property		text,
	requested_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	requested_by	name NOT NULL,
	done_at			timestamptz,
	http_status		integer,
	outcome			text
);
COMMENT ON TABLE erpcrm.erasure IS 'erasures asked with erpcrm.forget(); object_ref (the HubSpot id or id property value to delete) is cleared once HubSpot answered';
SELECT pg_catalog.pg_extension_config_dump('erpcrm.forgotten', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.erasure', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.erasure_erasure_id_seq', '');
REVOKE ALL ON erpcrm.forgotten, erpcrm.erasure FROM PUBLIC;
REVOKE ALL ON SEQUENCE erpcrm.erasure_erasure_id_seq FROM PUBLIC;
/* the worker's read query looks at tombstones as the mapping's owner */
GRANT SELECT ON erpcrm.forgotten TO erpcrm_admin;

CREATE FUNCTION erpcrm._key_hash(k text)
RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to(k, 'UTF8'));
REVOKE ALL ON FUNCTION erpcrm._key_hash(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._key_hash(text) TO erpcrm_admin;

CREATE VIEW erpcrm.erasures AS
SELECT e.erasure_id, e.mapping, e.object_type,
	   pg_catalog.encode(e.key_hash, 'hex') AS key_hash,
	   e.method, e.requested_at, e.requested_by,
	   CASE WHEN e.done_at IS NULL THEN 'pending' ELSE e.outcome END AS outcome,
	   e.done_at, e.http_status
  FROM erpcrm.erasure e;
COMMENT ON VIEW erpcrm.erasures IS 'the log of erasures (erpcrm.forget()), without personal data: the key appears only as its SHA-256';
GRANT SELECT ON erpcrm.erasures TO erpcrm_monitor, pg_monitor;

CREATE FUNCTION erpcrm.forget(mapping text, erp_id text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(forget.mapping);
	k text;
	h bytea;
	st text;
	hs text;
	how text;
	ref text;
	prop text;
	id bigint;
BEGIN
	IF forget.erp_id IS NULL THEN
		RAISE EXCEPTION 'the key must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	k := erpcrm._key_ref(forget.erp_id);
	h := erpcrm._key_hash(forget.erp_id);
	PERFORM FROM erpcrm.sync_queue q WHERE q.mapping_id = m.mapping_id AND q.erp_id = k FOR UPDATE;
	PERFORM FROM erpcrm.sync_key s WHERE s.mapping_id = m.mapping_id AND s.erp_id = k FOR UPDATE;
	SELECT s.state, s.hubspot_id INTO st, hs FROM erpcrm.sync_state s
	 WHERE s.mapping_id = m.mapping_id AND s.erp_id = k;
	IF st = 'in_flight' THEN
		RAISE EXCEPTION 'key of mapping "%" is being sent right now', m.name
			USING ERRCODE = 'object_in_use',
				  HINT = 'Try again in a moment.';
	END IF;
	/* what to delete in HubSpot: its object by id, or by the id property */
	IF hs IS NOT NULL THEN
		ref := hs;
	ELSIF m.id_property = 'erp_id' AND m.object_type = 'contacts' THEN
		ref := forget.erp_id;
		prop := m.id_property;
	END IF;
	how := CASE WHEN ref IS NULL THEN 'none'
				WHEN m.object_type = 'contacts' THEN 'gdpr-delete' ELSE 'archive' END;
	INSERT INTO erpcrm.forgotten AS f (mapping_id, key_hash) VALUES (m.mapping_id, h)
	ON CONFLICT (mapping_id, key_hash) DO UPDATE SET forgotten_at = pg_catalog.now();
	INSERT INTO erpcrm.erasure (mapping, object_type, key_hash, method, object_ref, by_property,
								requested_by, done_at, outcome)
	VALUES (m.name, m.object_type, h, how, ref, prop, erpcrm._caller()::name,
			CASE WHEN how = 'none' THEN pg_catalog.now() END,
			CASE WHEN how = 'none' THEN 'nothing in HubSpot to erase' END)
	RETURNING erasure_id INTO id;

	/* erpcrm's traces of the key */
	DELETE FROM erpcrm.sync_state s WHERE s.mapping_id = m.mapping_id AND s.erp_id = k;
	DELETE FROM erpcrm.outbox o WHERE o.mapping_id = m.mapping_id AND o.erp_id = forget.erp_id;
	UPDATE erpcrm.outbox o SET erp_ids = pg_catalog.array_remove(o.erp_ids, forget.erp_id)
	 WHERE o.mapping_id = m.mapping_id AND forget.erp_id = ANY (o.erp_ids);
	DELETE FROM erpcrm.drift_item d WHERE d.mapping_id = m.mapping_id AND d.erp_id = forget.erp_id;
	/* links other keys were sent without, waiting for this one */
	UPDATE erpcrm.sync_state r
	   SET unlinked = NULLIF((SELECT pg_catalog.jsonb_object_agg(e.key, e.value)
							   FROM pg_catalog.jsonb_each(r.unlinked) AS e
							  WHERE e.value <> pg_catalog.to_jsonb(forget.erp_id)), '{}'::jsonb)
	 WHERE r.unlinked IS NOT NULL
	   AND r.mapping_id IN (SELECT a.mapping_id FROM erpcrm.association a WHERE a.target_id = m.mapping_id)
	   AND EXISTS (SELECT FROM pg_catalog.jsonb_each(r.unlinked) AS e
				    WHERE e.value = pg_catalog.to_jsonb(forget.erp_id));
	/* HubSpot calls and changes received that name the key or its object */
	DELETE FROM erpcrm.api_call c
	 WHERE forget.erp_id = ANY (pg_catalog.regexp_split_to_array(c.path, '[/?&=]'))
		OR hs = ANY (pg_catalog.regexp_split_to_array(c.path, '[/?&=]'));
	IF hs IS NOT NULL THEN
		DELETE FROM erpcrm.inbox i USING erpcrm.subscription x
		 WHERE i.subscription_id = x.subscription_id AND x.object_type = m.object_type
		   AND i.hubspot_id = hs;
		/* and the object where other changes carry it as an association */
		UPDATE erpcrm.inbox i
		   SET associations = i.associations OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(m.object_type,
				COALESCE((SELECT pg_catalog.jsonb_agg(a.value ORDER BY a.n)
							FROM pg_catalog.jsonb_array_elements(i.associations -> m.object_type)
								 WITH ORDINALITY AS a(value, n)
						   WHERE a.value ->> 'hubspot_id' <> hs), '[]'::jsonb))
		  FROM erpcrm.subscription x
		 WHERE i.subscription_id = x.subscription_id AND m.object_type = ANY (x.associations)
		   AND i.associations -> m.object_type
			   @> pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('hubspot_id', hs));
	END IF;
	PERFORM erpcrm._wake();
	RETURN id;
END
$$;
COMMENT ON FUNCTION erpcrm.forget(text, text) IS 'erase a person: delete the key''s object in HubSpot (contacts: GDPR delete; others: archive), remove erpcrm''s traces of the key and keep a tombstone (its SHA-256) so that it is never sent again; returns the erasure id (erpcrm.erasures)';
REVOKE ALL ON FUNCTION erpcrm.forget(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.forget(text, text) TO erpcrm_admin;

/* The worker: erasures to carry out in HubSpot. */
CREATE FUNCTION erpcrm._erasures_due(p_n integer)
RETURNS TABLE (erasure_id bigint, object_type text, method text, object_ref text, by_property text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT e.erasure_id, e.object_type, e.method, e.object_ref, e.by_property
	  FROM erpcrm.erasure e
	 WHERE e.done_at IS NULL AND e.object_ref IS NOT NULL
	 ORDER BY e.erasure_id
	 LIMIT p_n;
END;
REVOKE ALL ON FUNCTION erpcrm._erasures_due(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._erasures_due(integer) TO erpcrm_admin;

/* The worker: HubSpot answered an erasure (done: it is over, the reference is cleared). */
CREATE FUNCTION erpcrm._erased(p_erasure_id bigint, p_status integer, p_outcome text, p_done boolean)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT erpcrm._check_worker(pg_catalog.format('record what HubSpot answered erasure %s', p_erasure_id), NULL);
	UPDATE erpcrm.erasure e
	   SET http_status = p_status, outcome = p_outcome,
		   done_at = CASE WHEN p_done THEN pg_catalog.now() END,
		   object_ref = CASE WHEN p_done AND p_outcome <> 'refused' THEN NULL ELSE e.object_ref END
	 WHERE e.erasure_id = p_erasure_id;
$$;
REVOKE ALL ON FUNCTION erpcrm._erased(bigint, integer, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._erased(bigint, integer, text, boolean) TO erpcrm_admin;

/* The worker: of these keys, those with a tombstone; their sync state goes. */
CREATE FUNCTION erpcrm._drop_forgotten(p_mapping_id integer, p_erp_ids text[])
RETURNS SETOF text
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
	/* the keys with a tombstone first, then their rows by the primary key */
	WITH gone AS MATERIALIZED (
		SELECT p_mapping_id AS mapping_id, k.k AS erp_id
		  FROM pg_catalog.unnest(p_erp_ids) AS k(k)
		 WHERE EXISTS (SELECT FROM erpcrm.forgotten f
						WHERE f.mapping_id = p_mapping_id
						  AND f.key_hash = erpcrm._key_hash(k.k))),
	q AS (
		DELETE FROM erpcrm.sync_queue s USING gone g
		 WHERE s.mapping_id = g.mapping_id AND s.erp_id = g.erp_id
		RETURNING s.erp_id),
	k AS (
		DELETE FROM erpcrm.sync_key s USING gone g
		 WHERE s.mapping_id = g.mapping_id AND s.erp_id = g.erp_id
		RETURNING s.erp_id)
	SELECT q.erp_id FROM q UNION SELECT k.erp_id FROM k;
$$;
REVOKE ALL ON FUNCTION erpcrm._drop_forgotten(integer, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm._drop_forgotten(integer, text[]) TO erpcrm_admin;

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
COMMENT ON COLUMN erpcrm.mapping.reconcile_every IS 'the worker reconciles the mapping with HubSpot this often (NULL: only when erpcrm.reconcile() is called); set with erpcrm.set_reconcile()';

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

/*
 * erpcrm.status, restated once for all of 1.3: 1.2's view with three more
 * columns at the end, unchanged and last_refresh (Part 3) and drift.
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
	   COALESCE(om.unknown_owners, 0) AS unknown_owners,
	   COALESCE(fs.unchanged, 0) AS unchanged,
	   fs.refreshed_at AS last_refresh,
	   COALESCE(dr.n, 0) AS drift
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
  LEFT JOIN (SELECT d.mapping, count(*) AS n FROM erpcrm.drift d
			  WHERE d.status <> 'repaired' GROUP BY d.mapping) dr
	ON dr.mapping = m.name
 ORDER BY m.name;
COMMENT ON COLUMN erpcrm.status.unchanged IS 'dirtied keys recorded as synced without a call, because HubSpot already holds their content (fingerprints)';
COMMENT ON COLUMN erpcrm.status.last_refresh IS 'when the last erpcrm.refresh() of the mapping ended (by a DBA or the worker)';
COMMENT ON COLUMN erpcrm.status.drift IS 'findings of the latest erpcrm.reconcile() of the mapping not repaired yet (rows of erpcrm.drift whose status is not repaired)';

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
 * The worker alone records what a reconcile run found (or a role with the
 * privileges of its mapping's owner): the findings, their repair and the
 * run's end would otherwise be anyone's to make up.
 */
CREATE FUNCTION erpcrm._reconcile_check_worker(p_run_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM erpcrm._check_worker(format('record what reconcile run %s of mapping "%s" found', r.run_id, m.name), m.owner)
	   FROM erpcrm.reconcile_run r JOIN erpcrm.mapping m USING (mapping_id)
	  WHERE r.run_id = p_run_id;
	IF NOT FOUND THEN
		PERFORM erpcrm._check_worker(format('record what reconcile run %s found', p_run_id), NULL);
	END IF;
END
$$;
REVOKE ALL ON FUNCTION erpcrm._reconcile_check_worker(bigint) FROM PUBLIC;

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
	resend text[];
BEGIN
	PERFORM erpcrm._reconcile_check_worker(p_run_id);
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
		/* HubSpot no longer holds what it accepted: forget it, then resend */
		WITH u AS (
			UPDATE erpcrm.sync_state s
			   SET fingerprint = NULL,
				   assoc_state = CASE WHEN s.erp_id = ANY (
										ARRAY(SELECT f.erp_id FROM unnest(p_kinds, p_keys) AS f(kind, erp_id)
											   WHERE f.kind = 'association_removed'))
									  THEN NULL ELSE s.assoc_state END
			 WHERE s.mapping_id = r.mapping_id AND s.state = 'synced' AND s.erp_id = ANY (fix)
			RETURNING s.erp_id)
		SELECT pg_catalog.array_agg(u.erp_id) INTO resend FROM u;
		q := erpcrm._dirty(r.mapping_id, resend);
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
	PERFORM erpcrm._reconcile_check_worker(p_run_id);
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
	SELECT erpcrm._reconcile_check_worker(p_run_id);
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

/*
 * reconcile_every is set like the other per-mapping settings (set_match,
 * set_refresh): map() keeps the arguments of 1.2 (it is restated in Part 6)
 * and leaves it alone when a mapping is redefined.
 */
CREATE FUNCTION erpcrm.set_reconcile(mapping text, reconcile_every interval)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m erpcrm.mapping := erpcrm._mapping(set_reconcile.mapping);
BEGIN
	IF reconcile_every IS NOT NULL AND reconcile_every < interval '1 minute' THEN
		RAISE EXCEPTION 'reconcile_every of mapping "%" is too short', m.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('It is %s; the shortest is 1 minute.', reconcile_every),
				  HINT = 'Reconcile at most once a minute; once a day is usual. NULL stops it.';
	END IF;
	UPDATE erpcrm.mapping x SET reconcile_every = set_reconcile.reconcile_every
	 WHERE x.mapping_id = m.mapping_id;
	PERFORM erpcrm._wake();
END
$$;
COMMENT ON FUNCTION erpcrm.set_reconcile(text, interval) IS 'let the worker reconcile the mapping with HubSpot this often (NULL: never), reporting only, with reconcile()''s default budget';
REVOKE ALL ON FUNCTION erpcrm.set_reconcile(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.set_reconcile(text, interval) TO erpcrm_admin;

-- ===================================================================
-- Part 5: the way back (subscriptions and inbox)
-- ===================================================================

/*
 * HubSpot changes reach the ERP through SQL.  A subscription names a HubSpot
 * object type, the properties to fetch, an optional filter and a handler:
 * an ERP function taking one erpcrm.hubspot_change.  The worker pulls
 * changes through HubSpot's search API, ordered by the last-modified date,
 * from a cursor per subscription; each change lands in erpcrm.inbox and is
 * handed to the handler, run as the subscription's owner in a
 * security-restricted operation (as mapping views are read), and the cursor
 * advances in the same transaction as the handler's work.  A handler error
 * parks its change (erpcrm.parked_changes); the others go on.
 *
 * No echoes: a change is handed over only when a subscribed property that
 * HubSpot owns changed.  The ERP owns, on each object a mapping delivered,
 * the properties its view sends; HubSpot owns the rest.
 */

CREATE TYPE erpcrm.hubspot_change AS (
	change_id		bigint,
	subscription	text,
	object_type		text,
	hubspot_id		text,
	modified_at		timestamptz,
	properties		jsonb,
	changed			text[],
	associations	jsonb
);
COMMENT ON TYPE erpcrm.hubspot_change IS 'one HubSpot change, as a subscription''s handler receives it';

CREATE TABLE erpcrm.subscription (
	subscription_id	integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	name			text NOT NULL UNIQUE
					CHECK (pg_catalog.length(name) BETWEEN 1 AND 63),
	object_type		text NOT NULL,
	properties		text[] NOT NULL,
	filter			jsonb NOT NULL DEFAULT '[]',
	associations	text[] NOT NULL DEFAULT '{}',
	handler			regprocedure NOT NULL,
	owner			regrole NOT NULL,
	paused			boolean NOT NULL DEFAULT false,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE erpcrm.subscription IS 'HubSpot changes an ERP function wants: object type, properties, filter, handler';
COMMENT ON COLUMN erpcrm.subscription.filter IS 'HubSpot search filterGroups (any group may hold, all filters of a group must); [] for every object';
COMMENT ON COLUMN erpcrm.subscription.associations IS 'object types whose associated records each change carries';
COMMENT ON COLUMN erpcrm.subscription.owner IS 'the role that subscribed; its handler runs with this role''s privileges';

/*
 * Where a subscription stands: every change modified before modified_at
 * was seen; with tie_id, the changes of that very millisecond are being
 * read by object id and those up to tie_id were seen.
 */
CREATE TABLE erpcrm.subscription_cursor (
	subscription_id	integer PRIMARY KEY REFERENCES erpcrm.subscription ON DELETE CASCADE,
	modified_at		timestamptz NOT NULL,
	tie_id			bigint,
	caught_up_to	timestamptz,
	pulled_at		timestamptz,
	pull_error		text,
	handled			bigint NOT NULL DEFAULT 0,
	echoes			bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE erpcrm.subscription_cursor IS 'how far each subscription has read HubSpot''s changes';

CREATE TABLE erpcrm.inbox (
	change_id		bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	subscription_id	integer NOT NULL REFERENCES erpcrm.subscription ON DELETE CASCADE,
	hubspot_id		text NOT NULL,
	modified_at		timestamptz NOT NULL,
	properties		jsonb NOT NULL,
	changed			text[] NOT NULL,
	associations	jsonb NOT NULL DEFAULT '{}',
	state			text NOT NULL DEFAULT 'pending'
					CHECK (state IN ('pending', 'done', 'parked', 'discarded')),
	attempts		integer NOT NULL DEFAULT 0,
	received_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	handled_at		timestamptz,
	error_sqlstate	text,
	error_message	text,
	error_detail	text,
	error_hint		text,
	error_context	text,
	discarded_by	regrole,
	UNIQUE (subscription_id, hubspot_id, modified_at)
);
CREATE INDEX inbox_pending ON erpcrm.inbox (subscription_id, change_id) WHERE state = 'pending';
CREATE INDEX inbox_parked ON erpcrm.inbox (subscription_id) WHERE state = 'parked';
CREATE INDEX inbox_handled ON erpcrm.inbox (handled_at) WHERE state IN ('done', 'discarded');
COMMENT ON TABLE erpcrm.inbox IS 'HubSpot changes received for a subscription, and what its handler made of them';

/* Calls made for a subscription (its share of the API budget). */
ALTER TABLE erpcrm.api_call ADD COLUMN subscription_id integer;

SELECT pg_catalog.pg_extension_config_dump('erpcrm.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.subscription_cursor', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.inbox', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.subscription_subscription_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('erpcrm.inbox_change_id_seq', '');

REVOKE ALL ON erpcrm.subscription, erpcrm.subscription_cursor, erpcrm.inbox FROM PUBLIC;
REVOKE ALL ON SEQUENCE erpcrm.subscription_subscription_id_seq, erpcrm.inbox_change_id_seq FROM PUBLIC;
GRANT SELECT ON erpcrm.subscription, erpcrm.subscription_cursor, erpcrm.inbox TO erpcrm_admin;

/* The subscription row by name, or a clear error. */
CREATE FUNCTION erpcrm._subscription(p_name text)
RETURNS erpcrm.subscription
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s erpcrm.subscription;
BEGIN
	SELECT * INTO s FROM erpcrm.subscription WHERE name = p_name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'subscription "%" does not exist', p_name
			USING ERRCODE = 'undefined_object',
				  HINT = 'See erpcrm.subscriptions for the subscriptions defined.';
	END IF;
	RETURN s;
END
$$;

/* The property HubSpot's search orders changes by (contacts have their own). */
CREATE FUNCTION erpcrm._modified_property(p_object_type text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN p_object_type = 'contacts' THEN 'lastmodifieddate' ELSE 'hs_lastmodifieddate' END;

/* An object type a subscription may name: a standard one, or a custom object type. */
CREATE FUNCTION erpcrm._valid_object_type(p_object_type text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_object_type IS NOT NULL
	AND (p_object_type IN ('companies', 'contacts', 'products', 'deals', 'line_items')
		 OR p_object_type ~ '^[0-9]+-[0-9]+$'
		 OR p_object_type ~ '^p[0-9]+_[a-z][a-z0-9_]*$');

CREATE FUNCTION erpcrm.subscribe(
	name text,
	object_type text,
	properties text[],
	filter jsonb DEFAULT NULL,
	handler regprocedure DEFAULT NULL,
	since timestamptz DEFAULT pg_catalog.now(),
	associations text[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	old erpcrm.subscription;
	p record;
	f jsonb;
	g jsonb;
	groups jsonb;
	ngroups integer;
	nfilters integer;
	id integer;
	nargs integer;
	argtype oid;
	nsp name;
	kind "char";
BEGIN
	IF name IS NULL OR length(name) NOT BETWEEN 1 AND 63 THEN
		RAISE EXCEPTION 'invalid subscription name'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A subscription name is between 1 and 63 characters long.';
	END IF;
	IF NOT erpcrm._valid_object_type(object_type) THEN
		RAISE EXCEPTION 'unknown HubSpot object type "%"', object_type
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use companies, contacts, products, deals, line_items, or a custom object type id such as 2-1234567.';
	END IF;
	IF properties IS NULL OR cardinality(properties) = 0 THEN
		RAISE EXCEPTION 'a subscription needs at least one property'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the HubSpot properties the handler needs, for example ''{dealname,dealstage,amount}''.';
	END IF;
	FOR p IN SELECT u.n FROM unnest(properties) AS u(n) LOOP
		IF p.n IS NULL OR NOT erpcrm._valid_property_name(p.n) THEN
			RAISE EXCEPTION 'invalid HubSpot property name "%"', p.n
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Property names are internal names: lower-case letters, digits and underscores.';
		END IF;
	END LOOP;

	/* the associations each change carries: object types, one read a page each */
	associations := COALESCE(associations, '{}');
	FOR p IN SELECT u.t FROM unnest(associations) AS u(t) LOOP
		IF NOT erpcrm._valid_object_type(p.t) THEN
			RAISE EXCEPTION 'unknown HubSpot object type "%" in associations', p.t
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Name the object types whose associated records the handler needs, for example ''{companies,contacts}''.';
		END IF;
	END LOOP;
	IF cardinality(associations) > 5
		OR cardinality(associations) <> (SELECT count(DISTINCT u) FROM unnest(associations) u) THEN
		RAISE EXCEPTION 'a subscription reads at most 5 association types, each once'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('%s were given.', array_to_string(associations, ', ')),
				  HINT = 'Each association type costs one HubSpot call per page of changes.';
	END IF;

	/*
	 * The filter: HubSpot's filterGroups, an OR of groups whose filters must
	 * all hold.  Also taken: one filter object, or an array of filters (one
	 * group).  erpcrm adds its 2 filters on the last-modified date to every
	 * group, and HubSpot's limits count them.
	 */
	filter := COALESCE(filter, '[]');
	IF jsonb_typeof(filter) = 'object' AND filter ? 'filterGroups' THEN
		IF EXISTS (SELECT FROM jsonb_object_keys(filter) k WHERE k <> 'filterGroups') THEN
			RAISE EXCEPTION 'the filter of a subscription takes filterGroups only'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('It has %s.', (SELECT string_agg(k, ', ' ORDER BY k)
													FROM jsonb_object_keys(filter) k WHERE k <> 'filterGroups')),
					  HINT = 'Properties, sorts and paging are erpcrm''s: give them as properties => and since =>.';
		END IF;
		filter := filter -> 'filterGroups';
	ELSIF jsonb_typeof(filter) = 'object' THEN
		filter := jsonb_build_array(filter);
	END IF;
	IF jsonb_typeof(filter) <> 'array' THEN
		RAISE EXCEPTION 'the filter of a subscription must be a JSON array of HubSpot search filters, or {"filterGroups": [...]}'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example: ''[{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]''.';
	END IF;
	IF jsonb_array_length(filter) = 0 THEN
		groups := '[]';
	ELSIF jsonb_typeof(filter -> 0) = 'object' AND filter -> 0 ? 'filters' THEN
		groups := filter;
	ELSE
		groups := jsonb_build_array(jsonb_build_object('filters', filter));
	END IF;
	ngroups := jsonb_array_length(groups);
	IF ngroups > 5 THEN
		RAISE EXCEPTION 'a subscription''s filter takes at most 5 filterGroups'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('It has %s; HubSpot''s search allows 5.', ngroups),
				  HINT = 'Merge groups that differ in one property into one filter with the IN operator.';
	END IF;
	nfilters := 0;
	FOR g IN SELECT jsonb_array_elements(groups) LOOP
		IF jsonb_typeof(g) <> 'object' OR jsonb_typeof(g -> 'filters') IS DISTINCT FROM 'array'
			OR EXISTS (SELECT FROM jsonb_object_keys(g) k WHERE k <> 'filters') THEN
			RAISE EXCEPTION 'invalid HubSpot filter group: %', g
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'A filter group is {"filters": [...]}: filters that must all hold.';
		END IF;
		IF jsonb_array_length(g -> 'filters') = 0 THEN
			RAISE EXCEPTION 'a filter group of a subscription is empty'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'A group without filters matches every object, which leaves the other groups nothing to choose.',
					  HINT = 'Drop the group, or give no filter to receive every object.';
		END IF;
		IF jsonb_array_length(g -> 'filters') > 4 THEN
			RAISE EXCEPTION 'a filter group of a subscription takes at most 4 filters'
				USING ERRCODE = 'program_limit_exceeded',
					  DETAIL = format('A group has %s; HubSpot allows 6 filters in a group, and erpcrm adds 2 on the last-modified date to each group.',
									  jsonb_array_length(g -> 'filters')),
					  HINT = 'Use IN for several values of one property, or split the group.';
		END IF;
		nfilters := nfilters + jsonb_array_length(g -> 'filters') + 2;
	END LOOP;
	IF nfilters > 18 THEN
		RAISE EXCEPTION 'a subscription''s filter has too many filters'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('Its %s groups have %s filters with the 2 erpcrm adds to each group; HubSpot allows 18 in a search.',
								  ngroups, nfilters),
				  HINT = 'Use fewer groups, or IN for several values of one property.';
	END IF;

	/* HubSpot's filter values are strings */
	SELECT COALESCE(jsonb_agg(jsonb_build_object('filters', (
		SELECT COALESCE(jsonb_agg(CASE WHEN jsonb_typeof(x) <> 'object' THEN x ELSE x
			|| COALESCE((SELECT jsonb_object_agg(k, CASE WHEN jsonb_typeof(v) = 'array'
						THEN (SELECT jsonb_agg(CASE WHEN jsonb_typeof(e) = 'string' THEN e ELSE to_jsonb(e #>> '{}') END)
								FROM jsonb_array_elements(v) e)
						WHEN jsonb_typeof(v) IN ('number', 'boolean') THEN to_jsonb(v #>> '{}') ELSE v END)
					FROM jsonb_each(x) AS kv(k, v) WHERE k IN ('value', 'values', 'highValue')), '{}') END), '[]')
		  FROM jsonb_array_elements(gr -> 'filters') x)) ORDER BY n), '[]')
	  INTO filter FROM jsonb_array_elements(groups) WITH ORDINALITY AS y(gr, n);
	FOR f IN SELECT jsonb_array_elements(gr -> 'filters') FROM jsonb_array_elements(filter) gr LOOP
		IF jsonb_typeof(f) <> 'object'
			OR NOT erpcrm._valid_property_name(f ->> 'propertyName')
			OR (f ->> 'operator') IS NULL
			OR (f ->> 'operator') NOT IN ('EQ', 'NEQ', 'LT', 'LTE', 'GT', 'GTE', 'BETWEEN', 'IN', 'NOT_IN',
										  'HAS_PROPERTY', 'NOT_HAS_PROPERTY', 'CONTAINS_TOKEN', 'NOT_CONTAINS_TOKEN')
			OR EXISTS (SELECT FROM jsonb_object_keys(f) k
						WHERE k NOT IN ('propertyName', 'operator', 'value', 'values', 'highValue')) THEN
			RAISE EXCEPTION 'invalid HubSpot search filter: %', f
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'A filter is {"propertyName": ..., "operator": ..., "value": ...} with one of HubSpot''s operators (EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY, CONTAINS_TOKEN, NOT_CONTAINS_TOKEN).';
		END IF;
		IF (f ->> 'propertyName') IN ('hs_lastmodifieddate', 'lastmodifieddate') THEN
			RAISE EXCEPTION 'a subscription''s filter cannot use %', f ->> 'propertyName'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'erpcrm selects the changes by their last-modified date itself.',
					  HINT = 'Use since => to say where the subscription starts.';
		END IF;
	END LOOP;

	/* the handler: an ERP function taking one erpcrm.hubspot_change */
	IF handler IS NULL THEN
		RAISE EXCEPTION 'a subscription needs a handler'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Give a function taking one erpcrm.hubspot_change, for example handler => ''erp.on_deal_won(erpcrm.hubspot_change)''.';
	END IF;
	SELECT pr.pronargs, pr.proargtypes[0], n.nspname, pr.prokind INTO nargs, argtype, nsp, kind
	  FROM pg_proc pr JOIN pg_namespace n ON n.oid = pr.pronamespace
	 WHERE pr.oid = handler;
	IF nargs <> 1 OR argtype <> 'erpcrm.hubspot_change'::regtype OR kind <> 'f' THEN
		RAISE EXCEPTION 'the handler % must be a function taking one erpcrm.hubspot_change', handler
			USING ERRCODE = 'invalid_function_definition',
				  HINT = 'CREATE FUNCTION ... (change erpcrm.hubspot_change) RETURNS void ...';
	END IF;
	IF nsp = 'erpcrm' THEN
		RAISE EXCEPTION 'the handler % must be a function of the ERP, not of erpcrm', handler
			USING ERRCODE = 'invalid_function_definition';
	END IF;
	IF NOT has_function_privilege(erpcrm._caller(), handler, 'EXECUTE') THEN
		RAISE EXCEPTION 'permission denied for function %', handler
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The handler runs with the privileges of whoever subscribes, who must be able to execute it.';
	END IF;

	SELECT * INTO old FROM erpcrm.subscription s WHERE s.name = subscribe.name FOR UPDATE;
	IF FOUND THEN
		IF old.object_type <> subscribe.object_type THEN
			RAISE EXCEPTION 'cannot change the object type of subscription "%" from % to %', name, old.object_type, object_type
				USING ERRCODE = 'object_in_use',
					  HINT = 'Drop the subscription with erpcrm.unsubscribe() and subscribe again.';
		END IF;
		UPDATE erpcrm.subscription s
		   SET properties = subscribe.properties, filter = subscribe.filter,
			   associations = subscribe.associations,
			   handler = subscribe.handler, owner = erpcrm._caller()
		 WHERE s.subscription_id = old.subscription_id;
		id := old.subscription_id;
	ELSE
		INSERT INTO erpcrm.subscription (name, object_type, properties, filter, associations, handler, owner)
		VALUES (name, object_type, properties, filter, associations, handler, erpcrm._caller())
		RETURNING subscription_id INTO id;
		INSERT INTO erpcrm.subscription_cursor (subscription_id, modified_at)
		VALUES (id, COALESCE(since, 'epoch'::timestamptz));
	END IF;
	PERFORM erpcrm._wake();
	RETURN id;
END
$$;
COMMENT ON FUNCTION erpcrm.subscribe(text, text, text[], jsonb, regprocedure, timestamptz, text[]) IS 'hand HubSpot changes of an object type to an ERP function';

CREATE FUNCTION erpcrm.unsubscribe(name text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM erpcrm.subscription s WHERE s.name = unsubscribe.name;
	RETURN FOUND;
END
$$;
COMMENT ON FUNCTION erpcrm.unsubscribe(text) IS 'drop a subscription, its cursor and its inbox';

CREATE FUNCTION erpcrm.pause_subscription(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE erpcrm.subscription SET paused = true
	 WHERE subscription_id = (erpcrm._subscription(pause_subscription.name)).subscription_id;
END
$$;
COMMENT ON FUNCTION erpcrm.pause_subscription(text) IS 'stop pulling and handing over changes of a subscription; its cursor waits';

CREATE FUNCTION erpcrm.resume_subscription(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE erpcrm.subscription SET paused = false
	 WHERE subscription_id = (erpcrm._subscription(resume_subscription.name)).subscription_id;
	PERFORM erpcrm._wake();
END
$$;
COMMENT ON FUNCTION erpcrm.resume_subscription(text) IS 'resume a paused subscription from where its cursor stopped';

/* Parked changes: hand one (or all of a subscription) over again, or drop one. */
CREATE FUNCTION erpcrm.requeue_change(change_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE erpcrm.inbox i SET state = 'pending', discarded_by = NULL
	 WHERE i.change_id = requeue_change.change_id AND i.state IN ('parked', 'discarded');
	IF FOUND THEN
		PERFORM erpcrm._wake();
		RETURN true;
	END IF;
	RETURN false;
END
$$;
COMMENT ON FUNCTION erpcrm.requeue_change(bigint) IS 'hand a parked (or discarded) change to its handler again';

CREATE FUNCTION erpcrm.requeue_parked(subscription text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	UPDATE erpcrm.inbox i SET state = 'pending'
	 WHERE i.state = 'parked'
	   AND (requeue_parked.subscription IS NULL
			OR i.subscription_id = (erpcrm._subscription(requeue_parked.subscription)).subscription_id);
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n > 0 THEN
		PERFORM erpcrm._wake();
	END IF;
	RETURN n;
END
$$;
COMMENT ON FUNCTION erpcrm.requeue_parked(text) IS 'hand every parked change (of one subscription, or of all) to its handler again';

CREATE FUNCTION erpcrm.discard_change(change_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE erpcrm.inbox i SET state = 'discarded', discarded_by = erpcrm._caller()
	 WHERE i.change_id = discard_change.change_id AND i.state IN ('parked', 'pending');
	RETURN FOUND;
END
$$;
COMMENT ON FUNCTION erpcrm.discard_change(bigint) IS 'give up a parked change: it is not handed over again unless requeued';

/*
 * The properties the ERP owns on a HubSpot object: those the views of the
 * mappings that delivered it send (their columns, and associations sent as
 * properties).  An object is a mapping's when its id property holds a key
 * of the mapping that has this HubSpot id (or none recorded yet).
 */
CREATE FUNCTION erpcrm._sent_properties(p_mapping_id integer)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT COALESCE(array_agg(p ORDER BY p), '{}') FROM (
	SELECT a.attname::text
	  FROM erpcrm.mapping m
	  JOIN pg_attribute a ON a.attrelid = m.source AND a.attnum > 0 AND NOT a.attisdropped
	 WHERE m.mapping_id = p_mapping_id AND a.attname <> 'hubspot_id'
	   AND a.attname !~ '^__erpcrm'
	   AND NOT EXISTS (SELECT FROM erpcrm.association x
						WHERE x.mapping_id = m.mapping_id AND x.column_name = a.attname)
	UNION
	SELECT x.as_property FROM erpcrm.association x
	 WHERE x.mapping_id = p_mapping_id AND x.as_property IS NOT NULL) AS s(p)
$$;

CREATE FUNCTION erpcrm._erp_owned(p_object_type text, p_hubspot_id text, p_properties jsonb)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT COALESCE(array_agg(DISTINCT p), '{}') FROM (
	SELECT m.mapping_id FROM erpcrm.mapping m
	  JOIN erpcrm.sync_state s ON s.mapping_id = m.mapping_id
	   AND s.erp_id = p_properties ->> m.id_property
	 WHERE m.object_type = p_object_type
	   AND (s.hubspot_id IS NULL OR s.hubspot_id = p_hubspot_id)
	UNION
	SELECT m.mapping_id FROM erpcrm.mapping m
	  JOIN erpcrm.sync_state s ON s.mapping_id = m.mapping_id AND s.hubspot_id = p_hubspot_id
	 WHERE m.object_type = p_object_type AND m.id_property <> 'erp_id') AS o,
	LATERAL unnest(erpcrm._sent_properties(o.mapping_id)) AS p
$$;

/* A time from HubSpot's epoch milliseconds, exactly. */
CREATE FUNCTION erpcrm._ms_time(p_ms bigint)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.to_timestamp(p_ms / 1000) + (p_ms % 1000) * interval '1 millisecond';

/*
 * A subscription's filterGroups with erpcrm's own filters (the window on the
 * last-modified date) ANDed into every group: one group of them alone when
 * the subscription has no filter.
 */
CREATE FUNCTION erpcrm._filter_groups(p_groups jsonb, p_cursor_filters jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_array_length(p_groups) = 0
	THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('filters', p_cursor_filters))
	ELSE (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('filters',
						(g.grp -> 'filters') OPERATOR(pg_catalog.||) p_cursor_filters) ORDER BY g.n)
			FROM pg_catalog.jsonb_array_elements(p_groups) WITH ORDINALITY AS g(grp, n)) END;

/*
 * The associations of a page of changes, from the answers of HubSpot's v4
 * batch/read ({"companies": answer, ...}): per object id, per target type,
 * each associated record's HubSpot id, its ERP id and mapping where a
 * mapping to that object type synced it (the oldest mapping, when several
 * did), and HubSpot's association types.
 */
CREATE FUNCTION erpcrm._page_associations(p_answers jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH pair AS (
	SELECT t.target, r -> 'from' ->> 'id' AS from_id, x ->> 'toObjectId' AS to_id,
		   COALESCE(x -> 'associationTypes', '[]') AS types
	  FROM jsonb_each(COALESCE(p_answers, '{}')) AS t(target, answer),
		   jsonb_array_elements(COALESCE(t.answer -> 'results', '[]')) AS r,
		   jsonb_array_elements(COALESCE(r -> 'to', '[]')) AS x),
known AS (
	SELECT DISTINCT ON (m.object_type, s.hubspot_id) m.object_type, s.hubspot_id, s.erp_id,
		   m.name AS mapping
	  FROM erpcrm.mapping m JOIN erpcrm.sync_state s ON s.mapping_id = m.mapping_id
	 WHERE (m.object_type, s.hubspot_id) IN (SELECT p.target, p.to_id FROM pair p)
	 ORDER BY m.object_type, s.hubspot_id, m.mapping_id)
SELECT COALESCE(jsonb_object_agg(b.from_id, b.per_target), '{}') FROM (
	SELECT a.from_id, jsonb_object_agg(a.target, a.records) AS per_target FROM (
		SELECT p.from_id, p.target,
			   jsonb_agg(jsonb_build_object('hubspot_id', p.to_id, 'erp_id', k.erp_id,
											'mapping', k.mapping, 'types', p.types)
						 ORDER BY length(p.to_id), p.to_id) AS records
		  FROM pair p LEFT JOIN known k ON k.object_type = p.target AND k.hubspot_id = p.to_id
		 GROUP BY p.from_id, p.target) AS a
	 GROUP BY a.from_id) AS b
$$;

/*
 * The next search request of a subscription, from its cursor: changes
 * modified from the cursor to settle_ms ago (HubSpot indexes a change for
 * search a little after it is made), oldest first, page_size of them.  A
 * cursor inside one millisecond (tie_id) reads that millisecond by id.
 */
CREATE FUNCTION erpcrm._pull_request(p_subscription_id integer, p_settle_ms integer, p_page_size integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s erpcrm.subscription;
	c erpcrm.subscription_cursor;
	mp text;
	from_ms bigint;
	to_ms bigint;
	props text[];
	filters jsonb;
BEGIN
	SELECT * INTO s FROM erpcrm.subscription WHERE subscription_id = p_subscription_id;
	SELECT * INTO c FROM erpcrm.subscription_cursor WHERE subscription_id = p_subscription_id;
	IF s IS NULL OR c IS NULL THEN
		RETURN NULL;
	END IF;
	mp := erpcrm._modified_property(s.object_type);
	from_ms := floor(extract(epoch FROM c.modified_at) * 1000);
	to_ms := floor(extract(epoch FROM clock_timestamp()) * 1000) - p_settle_ms;
	IF c.tie_id IS NULL AND from_ms >= to_ms THEN
		RETURN NULL;			/* nothing settled since the cursor */
	END IF;
	/* the subscribed properties, the modified date, the id properties of mappings */
	SELECT array_agg(DISTINCT p ORDER BY p) INTO props FROM (
		SELECT unnest(s.properties) UNION SELECT mp
		UNION SELECT m.id_property FROM erpcrm.mapping m WHERE m.object_type = s.object_type) AS x(p);
	IF c.tie_id IS NULL THEN
		filters := jsonb_build_array(
			jsonb_build_object('propertyName', mp, 'operator', 'GTE', 'value', from_ms::text),
			jsonb_build_object('propertyName', mp, 'operator', 'LT', 'value', to_ms::text));
		RETURN jsonb_build_object(
			'filterGroups', erpcrm._filter_groups(s.filter, filters),
			'sorts', jsonb_build_array(mp),
			'properties', to_jsonb(props),
			'limit', p_page_size);
	END IF;
	filters := jsonb_build_array(
		jsonb_build_object('propertyName', mp, 'operator', 'EQ', 'value', from_ms::text),
		jsonb_build_object('propertyName', 'hs_object_id', 'operator', 'GT', 'value', c.tie_id::text));
	RETURN jsonb_build_object(
		'filterGroups', erpcrm._filter_groups(s.filter, filters),
		'sorts', jsonb_build_array('hs_object_id'),
		'properties', to_jsonb(props),
		'limit', p_page_size);
END
$$;

/*
 * Hand the pending changes of a subscription to its handler, one
 * subtransaction each: an error parks that change with the SQL error, and
 * the others go on.  Returns how many were handled without error.  Any
 * error: WHEN OTHERS alone lets a handler's query_canceled or
 * assert_failure through, which would stop the subscription at that page.
 */
CREATE FUNCTION erpcrm._hand_over(p_subscription_id integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s erpcrm.subscription;
	i erpcrm.inbox;
	n integer := 0;
	e_state text;
	e_message text;
	e_detail text;
	e_hint text;
	e_context text;
BEGIN
	SELECT * INTO s FROM erpcrm.subscription WHERE subscription_id = p_subscription_id;
	IF s IS NULL OR NOT erpcrm._role_exists(s.owner) THEN
		RETURN 0;				/* its owner was dropped: erpcrm.subscriptions says so */
	END IF;
	PERFORM erpcrm._check_hand_over(s.name, s.owner);
	IF s.paused THEN
		RETURN 0;
	END IF;
	FOR i IN SELECT * FROM erpcrm.inbox x
			  WHERE x.subscription_id = p_subscription_id AND x.state = 'pending'
			  ORDER BY x.change_id FOR UPDATE LOOP
		BEGIN
			PERFORM erpcrm._run_handler(s.handler, s.owner,
				ROW(i.change_id, s.name, s.object_type, i.hubspot_id, i.modified_at,
					i.properties, i.changed, i.associations)::erpcrm.hubspot_change);
			UPDATE erpcrm.inbox x
			   SET state = 'done', attempts = x.attempts + 1, handled_at = clock_timestamp(),
				   error_sqlstate = NULL, error_message = NULL, error_detail = NULL,
				   error_hint = NULL, error_context = NULL
			 WHERE x.change_id = i.change_id;
			n := n + 1;
		EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN
			GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
				e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT,
				e_context = PG_EXCEPTION_CONTEXT;
			UPDATE erpcrm.inbox x
			   SET state = 'parked', attempts = x.attempts + 1, handled_at = clock_timestamp(),
				   error_sqlstate = e_state, error_message = e_message,
				   error_detail = NULLIF(e_detail, ''), error_hint = NULLIF(e_hint, ''),
				   error_context = NULLIF(split_part(e_context,
						E'\nSQL statement "SELECT erpcrm._run_handler', 1), '')
			 WHERE x.change_id = i.change_id;
		END;
	END LOOP;
	UPDATE erpcrm.subscription_cursor SET handled = handled + n
	 WHERE subscription_id = p_subscription_id;
	RETURN n;
END
$$;

/*
 * One answer of HubSpot's search for a subscription: its changes go into
 * the inbox and to the handler, and the cursor moves past them, all in the
 * caller's transaction.  A change already received, or in which no
 * subscribed property that HubSpot owns changed (an echo of what erpcrm
 * wrote, or of a property the ERP owns), is not handed over.  The
 * associations the subscription reads come as the v4 batch/read answers of
 * the page, per target type.  Returns whether more changes wait (the page
 * was full).  Called by the worker, it leaves the changes pending: the
 * worker hands them over after this transaction commits.
 */
CREATE FUNCTION erpcrm._receive(p_subscription_id integer, p_request jsonb, p_answer jsonb,
								p_associations jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	s erpcrm.subscription;
	c erpcrm.subscription_cursor;
	mp text;
	r jsonb;
	props jsonb;
	base jsonb;
	owned text[];
	changed text[];
	hid text;
	modified timestamptz;
	first_ms bigint;
	last_ms bigint;
	last_id bigint;
	n integer := 0;
	n_echoes integer := 0;
	page_size integer := (p_request ->> 'limit')::integer;
	tie boolean;
	from_ms bigint;
	to_ms bigint;
	page_assoc jsonb;
	assoc jsonb;
BEGIN
	SELECT * INTO s FROM erpcrm.subscription WHERE subscription_id = p_subscription_id;
	SELECT * INTO c FROM erpcrm.subscription_cursor WHERE subscription_id = p_subscription_id FOR UPDATE;
	IF s IS NULL OR c IS NULL THEN
		RETURN false;			/* unsubscribed meanwhile */
	END IF;
	PERFORM erpcrm._check_hand_over(s.name, s.owner);
	mp := erpcrm._modified_property(s.object_type);
	tie := p_request -> 'sorts' ->> 0 = 'hs_object_id';
	SELECT (f ->> 'value')::bigint INTO from_ms
	  FROM jsonb_array_elements(p_request -> 'filterGroups' -> 0 -> 'filters') f
	 WHERE f ->> 'propertyName' = mp AND f ->> 'operator' IN ('GTE', 'EQ');
	SELECT (f ->> 'value')::bigint INTO to_ms
	  FROM jsonb_array_elements(p_request -> 'filterGroups' -> 0 -> 'filters') f
	 WHERE f ->> 'propertyName' = mp AND f ->> 'operator' = 'LT';
	IF from_ms IS DISTINCT FROM floor(extract(epoch FROM c.modified_at) * 1000)::bigint THEN
		RETURN false;			/* the cursor moved meanwhile: ask again */
	END IF;

	page_assoc := erpcrm._page_associations(p_associations);
	FOR r IN SELECT jsonb_array_elements(COALESCE(p_answer -> 'results', '[]')) LOOP
		n := n + 1;
		hid := r ->> 'id';
		props := COALESCE(r -> 'properties', '{}');
		modified := COALESCE(props ->> mp, r ->> 'updatedAt')::timestamptz;
		last_ms := floor(extract(epoch FROM modified) * 1000);
		first_ms := COALESCE(first_ms, last_ms);
		last_id := hid::bigint;
		CONTINUE WHEN EXISTS (SELECT FROM erpcrm.inbox x
							   WHERE x.subscription_id = s.subscription_id
								 AND x.hubspot_id = hid AND x.modified_at = modified);
		owned := erpcrm._erp_owned(s.object_type, hid, props);
		SELECT x.properties INTO base FROM erpcrm.inbox x
		 WHERE x.subscription_id = s.subscription_id AND x.hubspot_id = hid
		 ORDER BY x.modified_at DESC LIMIT 1;
		SELECT COALESCE(array_agg(p ORDER BY p), '{}') INTO changed
		  FROM unnest(s.properties) AS p
		 WHERE p <> ALL (owned)
		   AND p NOT IN ('hs_object_id', 'hs_lastmodifieddate', 'lastmodifieddate', 'createdate')
		   AND NULLIF(props ->> p, '') IS DISTINCT FROM NULLIF(base ->> p, '');
		IF cardinality(changed) = 0 THEN
			n_echoes := n_echoes + 1;
			CONTINUE;
		END IF;
		SELECT COALESCE(jsonb_object_agg(t, COALESCE(page_assoc -> hid -> t, '[]')), '{}') INTO assoc
		  FROM unnest(s.associations) AS t;
		INSERT INTO erpcrm.inbox (subscription_id, hubspot_id, modified_at, properties, changed, associations)
		VALUES (s.subscription_id, hid, modified, props, changed, assoc);
	END LOOP;

	/*
	 * The cursor: past this page.  A page that is not full read its window
	 * to the end (changes of the window's last settle_ms are read later).
	 * A millisecond fuller than a page is read by object id.
	 */
	IF tie THEN
		IF n < page_size THEN
			UPDATE erpcrm.subscription_cursor
			   SET modified_at = erpcrm._ms_time(from_ms + 1), tie_id = NULL
			 WHERE subscription_id = s.subscription_id;
		ELSE
			UPDATE erpcrm.subscription_cursor SET tie_id = last_id
			 WHERE subscription_id = s.subscription_id;
		END IF;
	ELSIF n < page_size THEN
		UPDATE erpcrm.subscription_cursor
		   SET modified_at = erpcrm._ms_time(to_ms), caught_up_to = erpcrm._ms_time(to_ms)
		 WHERE subscription_id = s.subscription_id;
	ELSIF first_ms = last_ms THEN
		/* a page of one millisecond: read it by id */
		UPDATE erpcrm.subscription_cursor SET modified_at = erpcrm._ms_time(last_ms), tie_id = 0
		 WHERE subscription_id = s.subscription_id;
	ELSE
		UPDATE erpcrm.subscription_cursor SET modified_at = erpcrm._ms_time(last_ms)
		 WHERE subscription_id = s.subscription_id;
	END IF;
	UPDATE erpcrm.subscription_cursor
	   SET pulled_at = now(), pull_error = NULL, echoes = subscription_cursor.echoes + n_echoes
	 WHERE subscription_id = s.subscription_id;

	/*
	 * The worker hands the changes over in a transaction of its own, once
	 * this one has committed them: a change whose handler holds the worker
	 * past erpcrm.handler_timeout is still there to be parked after the
	 * launcher stopped it.
	 */
	IF NOT erpcrm._is_worker() THEN
		PERFORM erpcrm._hand_over(s.subscription_id);
	END IF;
	RETURN n >= page_size;
END
$$;

/*
 * The inbox's history, pruned by the worker in steps of at most p_limit
 * rows: changes handled or discarded longer than erpcrm.inbox_retention
 * ago, but the latest change of each object, which tells the next one what
 * changed.  Parked and pending changes stay until they are handled,
 * requeued or discarded.  Returns how many were deleted.
 */
CREATE FUNCTION erpcrm._prune_inbox(p_limit integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	retention interval := COALESCE(NULLIF(current_setting('erpcrm.inbox_retention', true), ''), '7d')::interval;
	n integer;
BEGIN
	DELETE FROM erpcrm.inbox x
	 WHERE x.change_id IN (
		SELECT o.change_id FROM erpcrm.inbox o
		 WHERE o.state IN ('done', 'discarded') AND o.handled_at < now() - retention
		   AND EXISTS (SELECT FROM erpcrm.inbox y
						WHERE y.subscription_id = o.subscription_id AND y.hubspot_id = o.hubspot_id
						  AND y.modified_at > o.modified_at)
		 ORDER BY o.handled_at
		 LIMIT GREATEST(p_limit, 0));
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

/* A pull that got no usable answer: said in erpcrm.subscriptions.problem. */
CREATE FUNCTION erpcrm._pull_failed(p_subscription_id integer, p_error text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT erpcrm._check_worker(format('record a pull of subscription "%s"', s.name), s.owner)
	  FROM erpcrm.subscription s WHERE s.subscription_id = p_subscription_id;
	UPDATE erpcrm.subscription_cursor SET pull_error = p_error, pulled_at = now()
	 WHERE subscription_id = p_subscription_id;
END;

/* Subscriptions with changes to pull or to hand over, for the worker. */
CREATE FUNCTION erpcrm._subscriptions_due(p_interval_ms integer,
	OUT subscription_id integer, OUT name text, OUT object_type text, OUT pull boolean)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT s.subscription_id, s.name, s.object_type,
	   c.pulled_at IS NULL OR c.tie_id IS NOT NULL
	   OR c.pulled_at <= now() - make_interval(secs => p_interval_ms / 1000.0)
  FROM erpcrm.subscription s JOIN erpcrm.subscription_cursor c USING (subscription_id)
 WHERE NOT s.paused AND erpcrm._role_exists(s.owner)
 ORDER BY s.subscription_id
$$;

CREATE FUNCTION erpcrm._hand_over_pending()
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN (SELECT COALESCE(sum(erpcrm._hand_over(d.subscription_id)), 0)
		  FROM (SELECT DISTINCT i.subscription_id FROM erpcrm.inbox i WHERE i.state = 'pending') d);

CREATE FUNCTION erpcrm._log_pull_call(p_subscription_id integer, p_called_at timestamptz,
	p_method text, p_path text, p_status integer, p_latency_ms double precision,
	p_category text, p_correlation_id text, p_retention interval)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM erpcrm._check_worker(format('record an API call of subscription "%s"', s.name), s.owner)
	   FROM erpcrm.subscription s WHERE s.subscription_id = p_subscription_id;
	IF NOT FOUND THEN
		PERFORM erpcrm._check_worker('record an API call of a subscription that does not exist', NULL);
	END IF;
	INSERT INTO erpcrm.api_call (called_at, method, path, http_status, latency_ms, inputs,
								 error_category, correlation_id, mapping_id, subscription_id)
	VALUES (p_called_at, p_method, p_path, p_status, p_latency_ms, 0,
			p_category, p_correlation_id, NULL, p_subscription_id);
	IF random() < 0.01 THEN
		DELETE FROM erpcrm.api_call WHERE called_at < now() - p_retention;
	END IF;
END
$$;

/*
 * The worker, first thing in a round: the change whose handler the launcher
 * stopped the previous worker in, because it ran past
 * erpcrm.handler_timeout and did not stop when cancelled, is parked rather
 * than handed over again (it would hold the worker again).  Returns whether
 * it was parked (it may have been handled, requeued or discarded meanwhile).
 */
CREATE FUNCTION erpcrm._park_stuck(p_change_id bigint, p_timeout_ms integer)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM erpcrm._check_worker(format('park change %s of subscription "%s"', p_change_id, s.name), s.owner)
	   FROM erpcrm.inbox i JOIN erpcrm.subscription s USING (subscription_id)
	  WHERE i.change_id = p_change_id;
	IF NOT FOUND THEN
		PERFORM erpcrm._check_worker(format('park change %s', p_change_id), NULL);
	END IF;
	UPDATE erpcrm.inbox x
	   SET state = 'parked', attempts = x.attempts + 1, handled_at = clock_timestamp(),
		   error_sqlstate = '57014',
		   error_message = format('the handler ran past erpcrm.handler_timeout (%s ms) and did not stop when cancelled: '
								  'the worker was stopped and started again, and the change parked instead of handed over again',
								  p_timeout_ms),
		   error_detail = NULL,
		   error_hint = 'A handler must not catch query_canceled and go on. Fix it, then hand the change over again with erpcrm.requeue_change().',
		   error_context = NULL
	 WHERE x.change_id = p_change_id AND x.state = 'pending';
	RETURN FOUND;
END
$$;
/* Whether the erpcrm worker calls (it hands over what _receive lands). */
CREATE FUNCTION erpcrm._is_worker()
RETURNS boolean
AS 'MODULE_PATHNAME', 'erpcrm_is_worker_v1'
LANGUAGE C STABLE;

/* Runs a handler as the subscription's owner, in a security-restricted operation. */
CREATE FUNCTION erpcrm._run_handler(regprocedure, regrole, erpcrm.hubspot_change)
RETURNS void
AS 'MODULE_PATHNAME', 'erpcrm_run_handler_v1'
LANGUAGE C;

/*
 * Refuses a caller that is neither the worker nor has the privileges of the
 * subscription's owner: only changes from HubSpot reach a handler.
 */
CREATE FUNCTION erpcrm._check_hand_over(text, regrole)
RETURNS void
AS 'MODULE_PATHNAME', 'erpcrm_check_hand_over_v1'
LANGUAGE C STABLE;

/*
 * Dead owners.  A mapping's view, a watch's key query and a subscription's
 * handler run as the role that defined them; a role dropped without
 * handing them on leaves them with no one to run as.  DROP ROLE refuses a
 * role that owns any of them in the database it runs in (as a shared
 * dependency would), and REASSIGN OWNED hands them on, as it does tables;
 * a role dropped from another database is found at run time: its objects
 * stop (a mapping is read and delivered no more, a subscription pulls and
 * hands over nothing) and say why in erpcrm.status and
 * erpcrm.subscriptions, until erpcrm.reassign_owned() gives them an owner.
 */
CREATE FUNCTION erpcrm._role_exists(p_role oid)
RETURNS boolean
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
RETURN EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = p_role);

/* What a role owns in erpcrm, in PostgreSQL's words for DROP ROLE's detail. */
CREATE FUNCTION erpcrm._owned_by(p_role oid)
RETURNS SETOF text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT d FROM (
	SELECT 1, m.name, format('owner of erpcrm mapping "%s"', m.name)
	  FROM erpcrm.mapping m WHERE m.owner::oid = p_role
	UNION ALL
	SELECT 2, w.watch_id::text, format('owner of erpcrm watch %s of mapping "%s" on %s',
									   w.watch_id, m.name, w.source)
	  FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id) WHERE w.owner::oid = p_role
	UNION ALL
	SELECT 3, s.name, format('owner of erpcrm subscription "%s"', s.name)
	  FROM erpcrm.subscription s WHERE s.owner::oid = p_role
	ORDER BY 1, 2) AS o(k, n, d)
$$;

/* REASSIGN OWNED BY ... TO ...: after PostgreSQL's own, erpcrm's objects. */
CREATE FUNCTION erpcrm._owned_reassigned(p_roles oid[], p_new oid)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
	k bigint;
BEGIN
	UPDATE erpcrm.mapping SET owner = p_new WHERE owner::oid = ANY (p_roles);
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE erpcrm.watch SET owner = p_new WHERE owner::oid = ANY (p_roles);
	GET DIAGNOSTICS k = ROW_COUNT;
	n := n + k;
	UPDATE erpcrm.subscription SET owner = p_new WHERE owner::oid = ANY (p_roles);
	GET DIAGNOSTICS k = ROW_COUNT;
	n := n + k;
	IF n > 0 THEN
		PERFORM erpcrm._wake();
	END IF;
	RETURN n;
END
$$;

/*
 * Hand every mapping, watch and subscription of old_owner (a role, or the
 * OID of a dropped one, as '16423') to new_owner, as REASSIGN OWNED does
 * tables.  The caller needs the privileges of new_owner (and of old_owner
 * while it exists); new_owner must be able to do what they need: read the
 * mappings' views, execute the handlers, and belong to erpcrm_admin.
 */
CREATE FUNCTION erpcrm.reassign_owned(old_owner regrole, new_owner regrole)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	caller regrole := erpcrm._caller();
	r record;
BEGIN
	IF old_owner IS NULL OR new_owner IS NULL THEN
		RAISE EXCEPTION 'erpcrm.reassign_owned() needs the old owner and the new one'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT erpcrm._role_exists(new_owner) THEN
		RAISE EXCEPTION 'role % does not exist', new_owner
			USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT pg_has_role(caller, new_owner, 'USAGE')
	   OR (erpcrm._role_exists(old_owner) AND NOT pg_has_role(caller, old_owner, 'USAGE')) THEN
		RAISE EXCEPTION 'permission denied to reassign the erpcrm objects of role % to role %', old_owner, new_owner
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Only roles with privileges of both the old role (while it exists) and the new role can reassign them, as with REASSIGN OWNED.';
	END IF;
	IF NOT pg_has_role(new_owner, 'erpcrm_admin', 'USAGE') THEN
		RAISE EXCEPTION 'role % cannot own erpcrm objects', new_owner
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The owner of a mapping, watch or subscription needs the privileges of erpcrm_admin.',
				  HINT = format('GRANT erpcrm_admin TO %s;', new_owner);
	END IF;
	FOR r IN SELECT m.name, m.source FROM erpcrm.mapping m
			  WHERE m.owner::oid = old_owner::oid AND EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source)
				AND NOT has_table_privilege(new_owner, m.source, 'SELECT') LOOP
		RAISE EXCEPTION 'role % cannot read %, the view of mapping "%"', new_owner, r.source::regclass, r.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A mapping''s view is read with its owner''s privileges.',
				  HINT = format('GRANT SELECT ON %s TO %s;', r.source::regclass, new_owner);
	END LOOP;
	FOR r IN SELECT s.name, s.handler FROM erpcrm.subscription s
			  WHERE s.owner::oid = old_owner::oid AND EXISTS (SELECT FROM pg_proc p WHERE p.oid = s.handler)
				AND NOT has_function_privilege(new_owner, s.handler, 'EXECUTE') LOOP
		RAISE EXCEPTION 'role % cannot execute %, the handler of subscription "%"', new_owner, r.handler, r.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A subscription''s handler runs with its owner''s privileges.',
				  HINT = format('GRANT EXECUTE ON FUNCTION %s TO %s;', r.handler, new_owner);
	END LOOP;
	RETURN erpcrm._owned_reassigned(ARRAY[old_owner::oid], new_owner::oid);
END
$$;
COMMENT ON FUNCTION erpcrm.reassign_owned(regrole, regrole) IS 'hand the mappings, watches and subscriptions of a role (or of a dropped role, by OID) to another role';

/* A mapping, or a watch of it, whose owner was dropped says so in erpcrm.status. */
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
	IF NOT erpcrm._role_exists(m.owner) THEN
		problems := problems || format('its owner (role %s) was dropped: its view is not read and nothing is delivered until erpcrm.reassign_owned(''%s'', ...) gives it an owner',
									   m.owner::oid, m.owner::oid);
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
		IF w.key_query IS NOT NULL AND NOT erpcrm._role_exists(w.owner) THEN
			problems := problems || format('the owner of watch %s on %s (role %s) was dropped: its key query does not run until erpcrm.reassign_owned(''%s'', ...) gives it an owner',
										   w.watch_id, w.source::regclass, w.owner::oid, w.owner::oid);
		END IF;
	END LOOP;
	RETURN NULLIF(array_to_string(problems, '; '), '');
END
$$;

/* ------------------------------------------------------------------
 * Monitoring: subscriptions, and the changes their handlers refused
 * ------------------------------------------------------------------
 */
CREATE VIEW erpcrm.subscriptions AS
SELECT s.name AS subscription, s.object_type, s.properties, s.filter, s.associations,
	   s.handler::text AS handler, s.owner::text AS owner, s.paused,
	   c.modified_at AS cursor,
	   c.caught_up_to,
	   now() - c.caught_up_to AS lag,
	   (SELECT count(*) FROM erpcrm.inbox i
		 WHERE i.subscription_id = s.subscription_id AND i.state = 'pending') AS pending,
	   (SELECT count(*) FROM erpcrm.inbox i
		 WHERE i.subscription_id = s.subscription_id AND i.state = 'parked') AS parked,
	   c.handled, c.echoes, c.pulled_at AS last_pull,
	   k.calls AS calls_last_hour,
	   round(k.calls::numeric / NULLIF(k.all_calls, 0), 3) AS share_of_calls,
	   round(k.calls::numeric / (360 * NULLIF(current_setting('erpcrm.max_calls_per_10s', true), '')::numeric), 4)
		   AS share_of_budget,
	   CASE WHEN NOT erpcrm._role_exists(s.owner)
			THEN format('its owner (role %s) was dropped: nothing is pulled or handed over until erpcrm.reassign_owned(''%s'', ...) gives it an owner',
						s.owner::oid, s.owner::oid)
			ELSE c.pull_error END AS problem,
	   NOT erpcrm._role_exists(s.owner) AS owner_dropped
  FROM erpcrm.subscription s
  JOIN erpcrm.subscription_cursor c USING (subscription_id)
  CROSS JOIN LATERAL (
	SELECT count(*) FILTER (WHERE a.subscription_id = s.subscription_id) AS calls,
		   count(*) AS all_calls
	  FROM erpcrm.api_call a WHERE a.called_at > now() - interval '1 hour') k;
COMMENT ON VIEW erpcrm.subscriptions IS 'one row per subscription: cursor, lag, pending and parked changes, API calls';

CREATE VIEW erpcrm.parked_changes AS
SELECT s.name AS subscription, i.change_id, i.hubspot_id, i.modified_at, i.changed,
	   i.attempts, i.error_sqlstate, i.error_message, i.error_detail, i.error_hint,
	   i.error_context, i.handled_at AS parked_at
  FROM erpcrm.inbox i JOIN erpcrm.subscription s USING (subscription_id)
 WHERE i.state = 'parked'
 ORDER BY i.change_id;
COMMENT ON VIEW erpcrm.parked_changes IS 'HubSpot changes whose handler raised an error, with the error';

REVOKE ALL ON erpcrm.subscriptions, erpcrm.parked_changes FROM PUBLIC;
GRANT SELECT ON erpcrm.subscriptions, erpcrm.parked_changes TO erpcrm_monitor, pg_monitor;

REVOKE ALL ON FUNCTION erpcrm._subscription(text), erpcrm._modified_property(text),
	erpcrm._valid_object_type(text),
	erpcrm.subscribe(text, text, text[], jsonb, regprocedure, timestamptz, text[]),
	erpcrm.unsubscribe(text), erpcrm.pause_subscription(text), erpcrm.resume_subscription(text),
	erpcrm.requeue_change(bigint), erpcrm.requeue_parked(text), erpcrm.discard_change(bigint),
	erpcrm._sent_properties(integer), erpcrm._erp_owned(text, text, jsonb), erpcrm._ms_time(bigint),
	erpcrm._filter_groups(jsonb, jsonb), erpcrm._page_associations(jsonb),
	erpcrm._pull_request(integer, integer, integer), erpcrm._hand_over(integer),
	erpcrm._receive(integer, jsonb, jsonb, jsonb), erpcrm._pull_failed(integer, text),
	erpcrm._subscriptions_due(integer), erpcrm._hand_over_pending(), erpcrm._prune_inbox(integer),
	erpcrm._log_pull_call(integer, timestamptz, text, text, integer, double precision, text, text, interval),
	erpcrm._run_handler(regprocedure, regrole, erpcrm.hubspot_change),
	erpcrm._check_hand_over(text, regrole), erpcrm._role_exists(oid), erpcrm._owned_by(oid),
	erpcrm._park_stuck(bigint, integer), erpcrm._is_worker(),
	erpcrm._owned_reassigned(oid[], oid), erpcrm.reassign_owned(regrole, regrole) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	erpcrm.subscribe(text, text, text[], jsonb, regprocedure, timestamptz, text[]),
	erpcrm.unsubscribe(text), erpcrm.pause_subscription(text), erpcrm.resume_subscription(text),
	erpcrm.requeue_change(bigint), erpcrm.requeue_parked(text), erpcrm.discard_change(bigint),
	erpcrm._pull_request(integer, integer, integer), erpcrm._receive(integer, jsonb, jsonb, jsonb),
	erpcrm._pull_failed(integer, text), erpcrm._subscriptions_due(integer), erpcrm._hand_over_pending(),
	erpcrm._prune_inbox(integer), erpcrm._park_stuck(bigint, integer),
	erpcrm._log_pull_call(integer, timestamptz, text, text, integer, double precision, text, text, interval),
	erpcrm.reassign_owned(regrole, regrole)
	TO erpcrm_admin;
GRANT EXECUTE ON FUNCTION erpcrm._role_exists(oid) TO erpcrm_admin, erpcrm_monitor, pg_monitor;

-- ===================================================================
-- Part 6: reach (many databases, native objects, API versions)
-- ===================================================================

/*
 * The HubSpot portal of this database, when it is not the cluster's: its
 * API URL, the file that holds its token, its call budget.  NULL columns
 * fall back on erpcrm.hubspot_url, erpcrm.token / erpcrm.token_file,
 * erpcrm.max_calls_per_10s and erpcrm.api_version (a portal may be on
 * another API family than the cluster's).  Superusers only: nobody else
 * can read or change it.  It names a file, never a token (a token in a table would
 * travel in dumps, backups and replicas).  A change wakes the worker.
 */
CREATE TABLE erpcrm.portal (
	only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	hubspot_url text
		CHECK (hubspot_url ~ '^https?://[^/]' AND hubspot_url !~ '/$'),
	token_file text CHECK (token_file ~ '^/'),
	max_calls_per_10s integer CHECK (max_calls_per_10s BETWEEN 1 AND 10000),
	/* v3 (/crm/v3, /crm/v4) or a date version such as 2026-03 */
	api_version text CHECK (api_version ~ '^(v3|[0-9]{4}-(0[1-9]|1[0-2]))$')
);
COMMENT ON TABLE erpcrm.portal IS 'this database''s HubSpot portal (superusers only): API URL, token file, call budget, API version; NULL means the cluster''s setting';
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

/*
 * Every worker of the cluster, from the launcher's shared memory: its row
 * as erpcrm.worker shows it, the rate limiter it shares, and the API family
 * it calls (v3 or a date version) with what chose it (erpcrm.portal or
 * erpcrm.api_version), as check_connection() says; NULL until it has
 * read its portal.
 */
CREATE FUNCTION erpcrm._workers(OUT worker erpcrm.worker, OUT limiter integer,
								OUT api_version text, OUT api_version_from text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'erpcrm_workers_v1'
LANGUAGE C;
REVOKE ALL ON FUNCTION erpcrm._workers() FROM PUBLIC;

CREATE VIEW erpcrm.workers AS
SELECT (w.worker).*, w.limiter, w.api_version, w.api_version_from FROM erpcrm._workers() AS w;
COMMENT ON VIEW erpcrm.workers IS 'every erpcrm worker of the cluster, one per database served (superusers only: it names every database)';
REVOKE ALL ON erpcrm.workers FROM PUBLIC;

/*
 * map(), restated once for all of 1.3: it accepts HubSpot's native orders
 * (0-123) by name.  Its arguments are those of 1.2.
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

/*
 * Native orders have pipelines too: setup_hubspot() creates or finds the
 * order pipeline by label and records its stage ids beside the invoice
 * pipeline's (object_type says whose), for erpcrm.stage_id() in views.
 */
ALTER TABLE erpcrm.pipeline_stage ADD COLUMN object_type text NOT NULL DEFAULT 'deals';
COMMENT ON FUNCTION erpcrm.stage_id(text, text) IS 'HubSpot id of a deal or order stage prepared by erpcrm.setup_hubspot(), for mapping views';
COMMENT ON FUNCTION erpcrm.pipeline_id(text) IS 'HubSpot id of a deal or order pipeline prepared by erpcrm.setup_hubspot(), for mapping views';

DROP FUNCTION erpcrm.setup_hubspot(text, text[], text[], text[]);
CREATE FUNCTION erpcrm.setup_hubspot(
	pipeline text DEFAULT 'Invoices (ERP)',
	stages text[] DEFAULT '{Issued,Partially paid,Paid,Overdue,Corrected}',
	won_stages text[] DEFAULT '{Paid}',
	lost_stages text[] DEFAULT '{Corrected}',
	order_pipeline text DEFAULT 'Orders (ERP)',
	order_stages text[] DEFAULT '{In progress,Partially fulfilled,Fulfilled,Awaiting payment,Delayed}',
	OUT object_type text,
	OUT kind text,
	OUT name text,
	OUT result text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'erpcrm_setup_hubspot_v1'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION erpcrm.setup_hubspot(text, text[], text[], text[], text, text[]) IS 'prepare the HubSpot portal for the mappings: unique id properties, custom properties, property group, the invoice pipeline, the order pipeline when orders are mapped';
REVOKE ALL ON FUNCTION erpcrm.setup_hubspot(text, text[], text[], text[], text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION erpcrm.setup_hubspot(text, text[], text[], text[], text, text[]) TO erpcrm_admin;

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

-- ===================================================================
-- Part 2 (last): the columns that moved to sync_queue leave sync_key
-- ===================================================================

/* the views of 1.2 that read the table read the view */
CREATE OR REPLACE VIEW erpcrm.failures AS
SELECT m.name AS mapping, s.erp_id, s.hubspot_id, s.attempts, s.http_status,
	   s.error_category, s.error_message, s.correlation_id, s.error_at,
	   s.dirty_since
  FROM erpcrm.sync_state s
  JOIN erpcrm.mapping m USING (mapping_id)
 WHERE s.state = 'failed';

CREATE OR REPLACE VIEW erpcrm.unlinked AS
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

ALTER TABLE erpcrm.sync_key
	DROP COLUMN change_seq,
	DROP COLUMN attempts,
	DROP COLUMN next_attempt_at,
	DROP COLUMN dirty_since,
	DROP COLUMN http_status,
	DROP COLUMN error_category,
	DROP COLUMN error_message,
	DROP COLUMN correlation_id,
	DROP COLUMN error_at;

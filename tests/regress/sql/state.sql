-- Sync state: folding the outbox and the state changes the worker drives
\set SHOW_CONTEXT never
DELETE FROM erpcrm.outbox;
CREATE VIEW st AS
SELECT m.name AS mapping, s.erp_id, s.state, s.hubspot_id, s.attempts,
	   s.change_seq, s.sent_seq, s.dirty_since IS NOT NULL AS dirty,
	   s.http_status, s.error_category, s.error_message
  FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
 ORDER BY 1, 2;
SELECT mapping_id AS companies FROM erpcrm.mapping WHERE name = 'companies' \gset

-- repeats of the same key coalesce into one pending row
UPDATE erp.customers SET nip = '111' WHERE id = 1;
UPDATE erp.customers SET nip = '222' WHERE id = 1;
UPDATE erp.customers SET nip = '333' WHERE id = 2;
SELECT erpcrm._fold();
SELECT * FROM st WHERE mapping = 'companies';
SELECT count(*) AS outbox_left FROM erpcrm.outbox;

-- claim: in flight, at most n keys
SELECT * FROM erpcrm._claim(:companies, 1);
SELECT erp_id, state FROM st WHERE mapping = 'companies';
-- a key that changes while in flight stays in flight and is sent again after
UPDATE erp.customers SET nip = '444' WHERE id = 1;
SELECT erpcrm._fold();
SELECT erp_id, state, change_seq, sent_seq FROM st WHERE mapping = 'companies';
SELECT erpcrm._done(:companies, '{1}', '{9001}');
SELECT erp_id, state, hubspot_id, dirty FROM st WHERE mapping = 'companies';
SELECT * FROM erpcrm._claim(:companies, 10) ORDER BY erp_id;
SELECT erpcrm._done(:companies, '{1,2}', '{9001,9002}');
SELECT erp_id, state, hubspot_id, attempts, dirty FROM st WHERE mapping = 'companies';

-- a transient error: pending again with a backoff, attempt counted
UPDATE erp.customers SET nip = '555' WHERE id = 1;
SELECT erpcrm._fold();
SELECT count(*) FROM erpcrm._claim(:companies, 10);
SELECT erpcrm._error(:companies, '{1}', 503, 'HTTP_ERROR', 'HubSpot answered 503', 'c-1', '1 second', '5 minutes');
SELECT erp_id, state, attempts, http_status, error_category FROM st WHERE mapping = 'companies' AND erp_id = '1';
SELECT next_attempt_at > now() + '0.5 s' AND next_attempt_at < now() + '1.5 s' AS backed_off
  FROM erpcrm.sync_state WHERE mapping_id = :companies AND erp_id = '1';
-- not due yet: not claimed
SELECT count(*) FROM erpcrm._claim(:companies, 10);
UPDATE erpcrm.sync_state SET next_attempt_at = now() WHERE mapping_id = :companies AND erp_id = '1';
SELECT count(*) FROM erpcrm._claim(:companies, 10);
-- the second failure waits about twice as long
SELECT erpcrm._error(:companies, '{1}', 503, 'HTTP_ERROR', 'HubSpot answered 503', 'c-2', '1 second', '5 minutes');
SELECT next_attempt_at > now() + '1.4 s' AND next_attempt_at < now() + '2.6 s' AS doubled
  FROM erpcrm.sync_state WHERE mapping_id = :companies AND erp_id = '1';
-- a rate limit wait: no attempt counted, exact delay
UPDATE erpcrm.sync_state SET next_attempt_at = now() WHERE mapping_id = :companies AND erp_id = '1';
SELECT count(*) FROM erpcrm._claim(:companies, 10);
SELECT erpcrm._error(:companies, '{1}', 429, 'RATE_LIMIT', 'waiting', NULL, '10 seconds', NULL);
SELECT erp_id, state, attempts FROM st WHERE mapping = 'companies' AND erp_id = '1';

-- a refusal: failed, parked, with HubSpot's error
UPDATE erpcrm.sync_state SET next_attempt_at = now() WHERE mapping_id = :companies AND erp_id = '1';
SELECT count(*) FROM erpcrm._claim(:companies, 10);
SELECT erpcrm._error(:companies, '{1}', 400, 'VALIDATION_ERROR', 'Property "nip" does not exist', 'c-3', NULL, NULL);
SELECT erp_id, state, attempts, http_status, error_category, error_message FROM st
 WHERE mapping = 'companies' AND erp_id = '1';
SELECT count(*) FROM erpcrm._claim(:companies, 10);
-- ...until the ERP row changes again
UPDATE erp.customers SET nip = '5260001246' WHERE id = 1;
SELECT erpcrm._fold();
SELECT erp_id, state, attempts FROM st WHERE mapping = 'companies' AND erp_id = '1';
SELECT count(*) FROM erpcrm._claim(:companies, 10);
SELECT erpcrm._done(:companies, '{1}', '{9001}');

-- after a crash nothing stays in flight
SELECT count(*) FROM erpcrm._claim(:companies, 10);
UPDATE erp.customers SET nip = '6' WHERE id = 2;
SELECT erpcrm._fold();
SELECT count(*) FROM erpcrm._claim(:companies, 10);
SELECT erpcrm._recover();
SELECT erp_id, state FROM st WHERE mapping = 'companies';

-- archived when the key left the view
SELECT count(*) FROM erpcrm._claim(:companies, 10);
SELECT erpcrm._done(:companies, '{2}', '{9002}', true, false);
SELECT erp_id, state, hubspot_id FROM st WHERE mapping = 'companies';

-- TRUNCATE: every key of the mapping, from the view and from sync state
SELECT erpcrm._fold();
TRUNCATE erp.products;
INSERT INTO erp.products VALUES ('P-1', 'One', 1), ('P-2', 'Two', 2);
SELECT count(*) FROM erpcrm.outbox o JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'products';
SELECT erpcrm._fold() >= 2 AS folded;
SELECT erp_id, state FROM st WHERE mapping = 'products';

-- outbox rows of a dropped mapping are discarded, not folded
INSERT INTO erpcrm.outbox VALUES (99999, 'x');
SELECT erpcrm._fold();
SELECT count(*) FROM erpcrm.outbox;
SELECT count(*) FROM erpcrm.sync_state WHERE mapping_id = 99999;

-- keys given up on or discarded are due never ('infinity'): they wait at the
-- end of the due index, so the look for keys due and the claim read the
-- same few pages with 3,000 of them as with none (about 25 here; 750 when
-- they were due at once, as before)
CREATE TEMP TABLE gu AS SELECT 'G' || i AS erp_id FROM generate_series(1, 3000) i;
INSERT INTO erpcrm.sync_queue (mapping_id, erp_id, state, change_seq, sent_seq, attempts, next_attempt_at)
SELECT :companies, erp_id, 'pending', 1, 1, 5, now() - interval '1 hour' FROM gu;
SELECT erpcrm._give_up(:companies, ARRAY(SELECT erp_id FROM gu), 5) AS given_up;
SELECT count(*) AS failed, count(*) FILTER (WHERE next_attempt_at = 'infinity') AS due_never
  FROM erpcrm.sync_state WHERE mapping_id = :companies AND state = 'failed';
CREATE FUNCTION pg_temp.blocks(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	p json;
BEGIN
	EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ' || q INTO p;
	RETURN (p -> 0 -> 'Plan' ->> 'Shared Hit Blocks')::bigint
		 + (p -> 0 -> 'Plan' ->> 'Shared Read Blocks')::bigint;
END
$$;
\set due_look 'SELECT s.next_attempt_at FROM erpcrm.sync_queue s WHERE s.mapping_id = ' :companies ' AND s.state = ''pending'' AND s.next_attempt_at IS NOT NULL AND s.next_attempt_at < ''infinity'' ORDER BY s.next_attempt_at LIMIT 1'
-- (with sorts off, as the worker reads the due index)
SET enable_sort = off;
SELECT pg_temp.blocks(:'due_look') >= 0 AS warmed;
SELECT pg_temp.blocks(:'due_look') < 100 AS due_look_reads_few_pages;
RESET enable_sort;
SELECT pg_temp.blocks(format('SELECT * FROM erpcrm._claim(%s, 10)', :companies)) >= 0 AS warmed;
SELECT pg_temp.blocks(format('SELECT * FROM erpcrm._claim(%s, 10)', :companies)) < 100 AS claim_reads_few_pages;
-- a DBA's repair through the view makes a failed key due now, and a
-- discarded key is due never
UPDATE erpcrm.sync_state SET state = 'pending' WHERE mapping_id = :companies AND erp_id = 'G1';
SELECT state, next_attempt_at <= now() AS due_now FROM erpcrm.sync_state
 WHERE mapping_id = :companies AND erp_id = 'G1';
SELECT erpcrm.discard('companies', 'G1');
SELECT state, next_attempt_at = 'infinity' AS due_never FROM erpcrm.sync_state
 WHERE mapping_id = :companies AND erp_id = 'G1';
DELETE FROM erpcrm.sync_queue WHERE mapping_id = :companies AND erp_id LIKE 'G%';

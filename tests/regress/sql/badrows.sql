-- One bad row fails alone: keys over the limit, NULL keys, giving up, discard
\set SHOW_CONTEXT never
SELECT extversion FROM pg_extension WHERE extname = 'erpcrm';
SHOW erpcrm.max_attempts;
CREATE SCHEMA br;
CREATE TABLE br.tags (code text, name text);
CREATE VIEW br.hs_tags AS SELECT code AS erp_id, name FROM br.tags;
SELECT erpcrm.map('br_tags', 'br.hs_tags', 'products') AS tags \gset
SELECT erpcrm.watch('br_tags', 'br.tags', 'code') > 0 AS watched;
CREATE VIEW br_state AS
SELECT left(s.erp_id, 90) AS erp_id, s.state, s.attempts, s.error_category,
	   left(s.error_message, 120) AS error_message
  FROM erpcrm.sync_state s WHERE s.mapping_id = :tags ORDER BY s.erp_id;

-- keys over 2048 bytes: the ERP's writes succeed (a packed outbox row is
-- never too big), the fold parks them and folds the rest
INSERT INTO br.tags VALUES ('T-1', 'short'), (repeat('a', 2048), 'at the limit'),
	(repeat('b', 2049), 'just over');
INSERT INTO br.tags SELECT repeat('c', 20000) || g, 'huge' FROM generate_series(1, 9) g;
SELECT erpcrm._fold();
SELECT erp_id, state, error_category, error_message FROM br_state WHERE erp_id NOT LIKE 'c%';
SELECT count(*) AS huge_parked FROM erpcrm.failures
 WHERE mapping = 'br_tags' AND error_category = 'ERP_KEY_TOO_LONG' AND erp_id LIKE 'ccc%... (2000_ bytes, md5 %)';
-- key_status and discard find a long key by the key itself
SELECT state, error_category FROM erpcrm.key_status('br_tags', repeat('b', 2049));
SELECT state FROM erpcrm.key_status('br_tags', repeat('a', 2048));
-- a change of a long key records it again, still failed
UPDATE br.tags SET name = 'changed' WHERE code = repeat('b', 2049);
SELECT erpcrm._fold();
SELECT state, attempts, error_category FROM erpcrm.key_status('br_tags', repeat('b', 2049));

-- a resync parks long keys and reports rows whose erp_id is NULL
INSERT INTO br.tags VALUES (NULL, 'no key'), (NULL, 'no key either');
SELECT erpcrm.resync('br_tags');
SELECT erp_id, state, error_category, error_message FROM br_state WHERE erp_id = '';
SELECT mapping, erp_id, error_category FROM erpcrm.failures
 WHERE mapping = 'br_tags' AND error_category = 'ERP_NULL_ID';
-- once the rows have keys, a resync sends the report key again: the worker
-- finds no row for it, and it goes
UPDATE br.tags SET code = 'T-' || name WHERE code IS NULL;
SELECT erpcrm.resync('br_tags') > 0 AS resynced;
SELECT count(*) AS claimed FROM erpcrm._claim(:tags, 100);
SELECT erpcrm._done(:tags, ARRAY[''], ARRAY[NULL], false, false);
SELECT count(*) AS null_reports FROM erpcrm.sync_state WHERE mapping_id = :tags AND erp_id = '';
SELECT erpcrm._error(:tags, ARRAY(SELECT erp_id FROM erpcrm.sync_state WHERE mapping_id = :tags AND state = 'in_flight'), NULL, 'X', 'x', NULL, '1 ms', NULL);
SELECT pg_sleep(0.01);

-- giving up: only keys whose attempts reached the limit, not changed since
SELECT count(*) FROM erpcrm._claim(:tags, 100);
SELECT erpcrm._done(:tags, ARRAY['T-no key', 'T-no key either', repeat('a', 2048)], ARRAY['1', '2', '3']);
SELECT erpcrm._error(:tags, ARRAY['T-1'], 500, 'INTERNAL_ERROR', 'HubSpot fails on this input alone: boom', NULL, '1 ms', '1 ms');
UPDATE erpcrm.sync_state SET attempts = 3 WHERE mapping_id = :tags AND erp_id = 'T-1';
SELECT * FROM erpcrm._failing_alone(:tags, ARRAY['T-1', 'T-no key'], 'HubSpot fails on this input alone: ');
SELECT erpcrm._give_up(:tags, ARRAY['T-1', 'T-no key'], 4) AS given_up_at_4;
SELECT erpcrm._give_up(:tags, ARRAY['T-1', 'T-no key'], 3) AS given_up_at_3;
SELECT erp_id, state, attempts, error_message FROM br_state WHERE erp_id LIKE 'T-%';

-- discard: recorded, not a failure, undone by a change or a requeue
SELECT erpcrm.discard('br_tags', 'T-no key');
SELECT state, error_category, error_message FROM erpcrm.key_status('br_tags', 'T-no key');
SELECT erpcrm.discard('br_tags', 'T-unknown');
SELECT erpcrm.discard('nope', 'T-1');
UPDATE br.tags SET name = 'again' WHERE code = 'T-no key';
SELECT erpcrm._fold();
SELECT state FROM erpcrm.key_status('br_tags', 'T-no key');
-- changes captured before the discard are discarded with it
UPDATE br.tags SET name = 'unwanted' WHERE code = 'T-no key';
SELECT erpcrm.discard('br_tags', 'T-no key');
SELECT erpcrm._fold();
SELECT state FROM erpcrm.key_status('br_tags', 'T-no key');
SELECT erpcrm.requeue('br_tags', 'T-no key');
SELECT erpcrm._fold();
SELECT state FROM erpcrm.key_status('br_tags', 'T-no key');
-- a key in flight cannot be discarded
SELECT count(*) AS claimed FROM erpcrm._claim(:tags, 100);
SELECT erpcrm.discard('br_tags', 'T-no key');
-- only erpcrm_admin may discard
CREATE ROLE br_monitor IN ROLE erpcrm_monitor;
SET ROLE br_monitor;
SELECT erpcrm.discard('br_tags', 'T-1');
RESET ROLE;
DROP ROLE br_monitor;

-- a TRUNCATE of a table whose view cannot list its keys (an erp_id that
-- raises for one row) does not stop the fold of the other keys
CREATE TABLE br.nums (n integer);
CREATE VIEW br.hs_nums AS SELECT (100 / n)::text AS erp_id FROM br.nums;
SELECT erpcrm.map('br_nums', 'br.hs_nums', 'products') AS nums \gset
SELECT erpcrm.watch('br_nums', 'br.nums', 'n::text') > 0 AS watched;
INSERT INTO br.nums VALUES (1), (2);
SELECT erpcrm._fold();
BEGIN;
TRUNCATE br.nums;
INSERT INTO br.nums VALUES (0), (4);
COMMIT;
DELETE FROM erpcrm.outbox WHERE mapping_id = :nums AND erp_id IS NOT NULL;
UPDATE br.tags SET name = 'still folded' WHERE code = 'T-1';
SELECT erpcrm._fold() > 0 AS folded;
SELECT state FROM erpcrm.key_status('br_tags', 'T-1');
SELECT count(*) AS marker_kept FROM erpcrm.outbox WHERE mapping_id = :nums AND erp_id IS NULL AND erp_ids IS NULL;
DELETE FROM br.nums WHERE n = 0;
SELECT erpcrm._fold() > 0 AS folded;
SELECT count(*) AS marker_kept FROM erpcrm.outbox WHERE mapping_id = :nums;
SELECT erp_id, state FROM erpcrm.sync_state WHERE mapping_id = :nums ORDER BY 1;
SELECT erpcrm.unmap('br_nums');

SELECT erpcrm.unmap('br_tags');
DROP SCHEMA br CASCADE;
DROP VIEW br_state;

-- The DBA's surface: status, failures, requeue, resync, pause, wait
\set SHOW_CONTEXT never
SELECT erpcrm._fold() IS NOT NULL AS folded;
SELECT mapping_id AS companies FROM erpcrm.mapping WHERE name = 'companies' \gset
SELECT mapping_id AS products FROM erpcrm.mapping WHERE name = 'products' \gset

SELECT mapping, object_type, source, paused, unfolded, pending, in_flight, failed, synced, archived,
	   oldest_pending_age IS NOT NULL AS has_pending_age, last_success IS NOT NULL AS has_success
  FROM erpcrm.status ORDER BY mapping;

-- failures show HubSpot's words
SELECT count(*) FROM erpcrm._claim(:products, 10);
SELECT erpcrm._error(:products, '{P-1}', 400, 'VALIDATION_ERROR', 'Property values were not valid: price', 'corr-1', NULL, NULL);
SELECT erpcrm._error(:products, '{P-2}', 409, 'CONFLICT', 'hs_sku already used', 'corr-2', NULL, NULL);
SELECT mapping, erp_id, attempts, http_status, error_category, error_message, correlation_id
  FROM erpcrm.failures ORDER BY erp_id;
SELECT failed FROM erpcrm.status WHERE mapping = 'products';

-- sync status of one key
SELECT state, attempts, http_status, error_category, error_message, unfolded
  FROM erpcrm.key_status('products', 'P-1');
SELECT state, hubspot_id, unfolded FROM erpcrm.key_status('products', 'never-seen');
INSERT INTO erp.products VALUES ('P-5', 'Five', 5);
SELECT state, unfolded FROM erpcrm.key_status('products', 'P-5');
SELECT * FROM erpcrm.key_status('nobody', 'P-1');

-- requeue one key
SELECT erpcrm.requeue('products', 'P-1');
SELECT erp_id, state, attempts FROM erpcrm.sync_state WHERE mapping_id = :products ORDER BY 1;
SELECT * FROM erpcrm.requeue('nobody', 'P-1');
-- requeue every failed key of a mapping, or everywhere; returns the count
SELECT count(*) FROM erpcrm._claim(:products, 10);
SELECT erpcrm._error(:products, '{P-1,P-2}', 400, 'VALIDATION_ERROR', 'bad', NULL, NULL, NULL);
SELECT erpcrm.requeue_failed('companies');
SELECT erpcrm.requeue_failed('products');
SELECT erpcrm.requeue_failed('products');
SELECT count(*) FROM erpcrm._claim(:products, 10);
SELECT erpcrm._error(:products, '{P-1}', 400, 'VALIDATION_ERROR', 'bad', NULL, NULL, NULL);
SELECT erpcrm.requeue_failed();
SELECT erpcrm._fold() IS NOT NULL;

-- resync marks every key of the view dirty, and known keys that left it
SELECT erpcrm._recover() IS NOT NULL;
UPDATE erpcrm.sync_state SET state = 'synced', dirty_since = NULL WHERE mapping_id = :products;
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id, dirty_since)
VALUES (:products, 'P-OLD', 'synced', '777', NULL);
INSERT INTO erp.products VALUES ('P-3', 'Three', 3, false);
SELECT erpcrm.resync('products');
SELECT erp_id, state FROM erpcrm.sync_state WHERE mapping_id = :products ORDER BY 1;
SELECT erpcrm.resync('nobody');

-- pause and resume, per mapping and everywhere
SELECT erpcrm.pause('products');
SELECT mapping, paused FROM erpcrm.status ORDER BY 1;
SELECT erpcrm.pause();
SELECT bool_and(paused) FROM erpcrm.status;
SELECT erpcrm.resume();
SELECT mapping, paused FROM erpcrm.status ORDER BY 1;
SELECT erpcrm.resume('products');
SELECT bool_or(paused) FROM erpcrm.status;

-- wait_for_sync: false after the timeout while keys are pending (no worker serves this database)
SELECT erpcrm.wait_for_sync('100 ms');
SELECT erpcrm.wait_for_sync('100 ms', 'nobody');
-- true once nothing is pending or in flight (failed keys do not count)
UPDATE erpcrm.sync_state SET state = 'synced';
DELETE FROM erpcrm.outbox;
UPDATE erpcrm.sync_state SET state = 'failed' WHERE erp_id = 'P-OLD';
SELECT erpcrm.wait_for_sync('1 s');
SELECT erpcrm.wait_for_sync('1 s', 'products');

-- the api log view, fed by the worker
SELECT erpcrm._log_call(pg_catalog.now(), 'POST', '/crm/v3/objects/products/batch/upsert', 200, 12.5, 2, NULL, 'corr-9', :products, '1 day');
SELECT method, path, http_status, latency_ms, inputs, error_category, correlation_id, mapping FROM erpcrm.api_log;

-- unmap drops watches, state and outbox rows; HubSpot is left alone
SELECT erpcrm.map('tmp', 'erp.hs_products', 'products');
SELECT erpcrm.watch('tmp', 'erp.products', 'sku');
INSERT INTO erp.products VALUES ('P-4', 'Four', 4);
SELECT erpcrm.unmap('tmp');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'erp.products'::regclass AND tgname LIKE 'erpcrm_watch_%';
SELECT count(*) FROM erpcrm.outbox o WHERE NOT EXISTS (SELECT FROM erpcrm.mapping m WHERE m.mapping_id = o.mapping_id);

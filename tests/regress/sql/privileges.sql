-- Roles: the ERP's own role, a monitor, an admin
\set SHOW_CONTEXT never
CREATE ROLE erp_app LOGIN;
GRANT USAGE ON SCHEMA erp TO erp_app;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA erp TO erp_app;
CREATE ROLE watcher LOGIN IN ROLE erpcrm_monitor;
CREATE ROLE integrator LOGIN IN ROLE erpcrm_admin;
GRANT USAGE ON SCHEMA erp TO integrator;
GRANT SELECT ON erp.hs_products TO integrator;
DELETE FROM erpcrm.outbox;

-- the ERP role's writes are captured without any privilege on erpcrm
SET ROLE erp_app;
INSERT INTO erp.products VALUES ('P-20', 'Twenty', 20);
UPDATE erp.products SET price = 21 WHERE sku = 'P-20';
DELETE FROM erp.products WHERE sku = 'P-20';
TRUNCATE erp.stock;
-- and it cannot read or change erpcrm's objects
SELECT * FROM erpcrm.outbox;
INSERT INTO erpcrm.outbox VALUES (1, 'forged');
SELECT * FROM erpcrm.mapping;
SELECT * FROM erpcrm.status;
SELECT erpcrm.map('evil', 'erp.hs_products', 'products');
SELECT erpcrm.requeue_failed();
SELECT erpcrm._fold();
SELECT erpcrm._claim(1, 1);
SHOW erpcrm.token;
SHOW erpcrm.token_file;
RESET ROLE;
SELECT m.name, o.erp_id FROM erpcrm.outbox o JOIN erpcrm.mapping m USING (mapping_id) ORDER BY 1, 2;

-- a monitor reads the views, and changes nothing
SET ROLE watcher;
SELECT count(*) > 0 AS sees_status FROM erpcrm.status;
SELECT count(*) AS failures FROM erpcrm.failures;
SELECT count(*) = 1 AS sees_worker FROM erpcrm.worker;
SELECT method, path, correlation_id FROM erpcrm.api_log WHERE correlation_id = 'corr-9';
SELECT state FROM erpcrm.key_status('products', 'P-1');
SELECT erpcrm.requeue('products', 'P-1');
SELECT erpcrm.pause();
UPDATE erpcrm.mapping SET paused = true;
SELECT * FROM erpcrm.outbox;
RESET ROLE;

-- an admin defines and repairs, within its own privileges on the ERP
SET ROLE integrator;
SELECT erpcrm.map('admin_products', 'erp.hs_products', 'products') > 0 AS mapped;
SELECT erpcrm.map('admin_companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.watch('admin_products', 'erp.products', 'sku');
SELECT erpcrm.requeue_failed() AS requeued;
SELECT erpcrm.pause('admin_products');
SELECT erpcrm.resume('admin_products');
SELECT erpcrm.unmap('admin_products');
-- but cannot write erpcrm's tables around the functions
DELETE FROM erpcrm.sync_state;
INSERT INTO erpcrm.mapping (name, source, object_type) VALUES ('x', 'erp.hs_products', 'products');
RESET ROLE;

-- the table owner may let the integrator watch it
ALTER TABLE erp.products OWNER TO integrator;
SET ROLE integrator;
SELECT erpcrm.map('admin_products', 'erp.hs_products', 'products') > 0 AS mapped;
SELECT erpcrm.watch('admin_products', 'erp.products', 'sku') > 0 AS watched;
SELECT erpcrm.unmap('admin_products');
RESET ROLE;
ALTER TABLE erp.products OWNER TO CURRENT_USER;

-- an empty search_path does not break the functions
SET search_path = '';
SELECT erpcrm.resync('products') AS resynced;
SELECT pending + in_flight AS outstanding FROM erpcrm.status WHERE mapping = 'products';
INSERT INTO erp.products VALUES ('P-30', 'Thirty', 30);
RESET search_path;

-- a function named like a builtin in a schema of the attacker's does not hijack them
CREATE SCHEMA evil;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
SELECT erpcrm._fold() > 0 AS folded;
SET search_path = evil, public;
SELECT erpcrm.requeue('products', 'P-30');
SELECT next_attempt_at > '2001-01-01' AS real_now FROM erpcrm.sync_state s
  JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'products' AND erp_id = 'P-30';
RESET search_path;

-- dropping the extension takes its triggers along (with CASCADE)
DROP VIEW outbox, st CASCADE;
\set VERBOSITY terse
DROP EXTENSION erpcrm;
DROP EXTENSION erpcrm CASCADE;
\set VERBOSITY default
SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'erpcrm_watch_%';
INSERT INTO erp.products VALUES ('P-31', 'After', 31);
CREATE EXTENSION erpcrm;
SELECT count(*) FROM erpcrm.mapping;

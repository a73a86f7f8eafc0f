-- Upgrade 1.0 -> 1.1: nothing lost, capture goes on, new objects locked down
\set SHOW_CONTEXT never
DROP EXTENSION erpcrm CASCADE;
CREATE EXTENSION erpcrm VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'erpcrm';
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.watch('companies', 'erp.customers', 'id') > 0 AS watched;
INSERT INTO erp.customers VALUES (500, 'Przed aktualizacją', NULL);
SELECT erpcrm._fold();
INSERT INTO erp.customers VALUES (501, 'W kolejce', NULL);

ALTER EXTENSION erpcrm UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'erpcrm';
SELECT erp_id, state FROM erpcrm.sync_state ORDER BY 1;
SELECT erp_id FROM erpcrm.outbox ORDER BY 1;
INSERT INTO erp.customers VALUES (502, 'Po aktualizacji', NULL);
SELECT erpcrm._fold();
SELECT erp_id, state FROM erpcrm.sync_state ORDER BY 1;
SELECT name, match_property FROM erpcrm.mapping;

-- new objects are not open to PUBLIC either
SELECT p.oid::regprocedure AS public_function
  FROM pg_proc p
 WHERE p.pronamespace = 'erpcrm'::regnamespace
   AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
   -- but the trigger function, which cannot be called, for partitions (red)
   AND p.oid <> 'erpcrm.capture()'::regprocedure;
SELECT c.oid::regclass AS public_relation
  FROM pg_class c
 WHERE c.relnamespace = 'erpcrm'::regnamespace AND c.relkind IN ('r', 'v', 'S')
   AND (c.relacl IS NULL OR EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0));
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p
 WHERE p.pronamespace = 'erpcrm'::regnamespace AND p.prosecdef
   AND NOT coalesce(p.proconfig @> '{"search_path=pg_catalog, pg_temp"}', false);


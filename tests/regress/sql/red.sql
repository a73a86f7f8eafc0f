-- red: what a hostile role tries against erpcrm's own machinery
\set SHOW_CONTEXT never
\set VERBOSITY terse
CREATE SCHEMA red_erp;
CREATE ROLE red_admin LOGIN IN ROLE erpcrm_admin;
CREATE ROLE red_mallory LOGIN;
-- a schema several roles may create in (as public was before PostgreSQL 15)
GRANT USAGE, CREATE ON SCHEMA red_erp TO red_admin, red_mallory;

-- A mapping whose view is dropped waits for a view of that name.  It must
-- adopt only a view whose owner has the mapping owner's privileges (its
-- own).  A view of another role would be read as the mapping's owner,
-- running that role's functions with the owner's rights.
SET ROLE red_admin;
CREATE TABLE red_erp.co (id integer PRIMARY KEY, name text);
CREATE VIEW red_erp.v_co AS SELECT id::text AS erp_id, name FROM red_erp.co;
SELECT erpcrm.map('red_companies', 'red_erp.v_co', 'companies') > 0 AS mapped;
DROP VIEW red_erp.v_co;
RESET ROLE;
SET ROLE red_mallory;
CREATE FUNCTION red_erp.whoami() RETURNS text LANGUAGE sql AS $$ SELECT current_user::text $$;
CREATE VIEW red_erp.v_co AS SELECT '1'::text AS erp_id, red_erp.whoami() AS name;
GRANT SELECT ON red_erp.v_co TO PUBLIC;
RESET ROLE;
SELECT erpcrm._before_fold() AS fanned_out;
-- not adopted: the source is still the dropped view
SELECT m.name, EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source) AS source_exists, m.source_name
  FROM erpcrm.mapping m WHERE m.name = 'red_companies';
SELECT problem FROM erpcrm.status WHERE mapping = 'red_companies';
-- nor for a mapping a superuser defined, whose view is read as superuser
CREATE VIEW red_erp.v_su AS SELECT id::text AS erp_id, name FROM red_erp.co;
SELECT erpcrm.map('red_su', 'red_erp.v_su', 'companies') > 0 AS mapped;
DROP VIEW red_erp.v_su;
SET ROLE red_mallory;
CREATE VIEW red_erp.v_su AS SELECT '1'::text AS erp_id, red_erp.whoami() AS name;
RESET ROLE;
SELECT erpcrm._before_fold() AS fanned_out;
SELECT m.name, EXISTS (SELECT FROM pg_class c WHERE c.oid = m.source) AS source_exists
  FROM erpcrm.mapping m WHERE m.name = 'red_su';
SELECT erpcrm.unmap('red_su');
-- the owner's own view of that name is adopted
DROP VIEW red_erp.v_co;
SET ROLE red_admin;
CREATE VIEW red_erp.v_co AS SELECT id::text AS erp_id, name FROM red_erp.co;
RESET ROLE;
SELECT m.name, m.source::regclass, pg_get_userbyid(c.relowner) AS view_owner
  FROM erpcrm.mapping m JOIN pg_class c ON c.oid = m.source WHERE m.name = 'red_companies';

-- A key broken by a way erpcrm cannot check (event triggers off in replica
-- mode) must not make unrelated DDL fail, whoever runs it: only a change of
-- the watched table, or of what a key names, is refused.
SET ROLE red_admin;
CREATE TABLE red_erp.lines (id integer, sku text);
CREATE FUNCTION red_erp.k1(integer) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT $1::text $$;
CREATE FUNCTION red_erp.k2(text) RETURNS text IMMUTABLE LANGUAGE sql AS $$ SELECT $1 $$;
SELECT erpcrm.watch('red_companies', 'red_erp.lines', 'red_erp.k1(id)') > 0 AS watched;
SELECT erpcrm.watch('red_companies', 'red_erp.lines', 'red_erp.k2(sku)') > 0 AS watched;
RESET ROLE;
SET session_replication_role = replica;
DROP FUNCTION red_erp.k1(integer);
RESET session_replication_role;
CREATE ROLE red_app LOGIN;
DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO red_app', current_database()); END $$;
SET ROLE red_app;
CREATE SCHEMA red_app_own;
CREATE FUNCTION red_app_own.f() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE TABLE red_app_own.t (i integer);
DROP TABLE red_app_own.t;
DROP SCHEMA red_app_own CASCADE;
RESET ROLE;
-- a change that breaks the other key is still refused
\set VERBOSITY sqlstate
DROP FUNCTION red_erp.k2(text);
\set VERBOSITY terse
-- and the broken key is shown
SELECT regexp_replace(problem, 'watch [0-9]+', 'watch N') AS problem
  FROM erpcrm.status WHERE mapping = 'red_companies';
DROP OWNED BY red_app;
DROP ROLE red_app;

-- The owner of a watched partitioned table adds partitions to it as
-- before (the watch's row trigger is cloned onto them as that role).
SET ROLE red_admin;
CREATE TABLE red_erp.moves (id integer, qty integer) PARTITION BY RANGE (id);
CREATE TABLE red_erp.moves_1 PARTITION OF red_erp.moves FOR VALUES FROM (0) TO (100);
CREATE VIEW red_erp.v_moves AS SELECT id::text AS erp_id, qty FROM red_erp.moves;
SELECT erpcrm.map('red_moves', 'red_erp.v_moves', 'line_items') > 0 AS mapped;
SELECT erpcrm.watch('red_moves', 'red_erp.moves', 'id::text') > 0 AS watched;
CREATE TABLE red_erp.moves_2 PARTITION OF red_erp.moves FOR VALUES FROM (100) TO (200);
CREATE TABLE red_erp.moves_3 (LIKE red_erp.moves);
ALTER TABLE red_erp.moves ATTACH PARTITION red_erp.moves_3 FOR VALUES FROM (200) TO (300);
INSERT INTO red_erp.moves VALUES (1, 1), (150, 1), (250, 1);
INSERT INTO red_erp.moves_3 VALUES (260, 1);
RESET ROLE;
-- every row is captured (in the outbox, or folded already by the worker)
SELECT k FROM (SELECT unnest(COALESCE(o.erp_ids, ARRAY[o.erp_id])) AS k
				 FROM erpcrm.outbox o JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'red_moves'
			   UNION
			   SELECT s.erp_id FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
				WHERE m.name = 'red_moves') AS c
 ORDER BY k::integer;
-- EXECUTE on capture() lets no other role name it (no USAGE on erpcrm)
SELECT w.watch_id AS red_wid FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id)
 WHERE m.name = 'red_moves' \gset
SET ROLE red_mallory;
CREATE TABLE red_erp.forged (id integer);
CREATE TRIGGER forged AFTER INSERT ON red_erp.forged
	FOR EACH ROW EXECUTE FUNCTION erpcrm.capture(:'red_wid');
RESET ROLE;

-- preview() shows a view's rows only to a role that may read the view
INSERT INTO red_erp.co VALUES (7, 'Secret sp. z o.o.');
CREATE ROLE red_admin2 LOGIN IN ROLE erpcrm_admin;
SET ROLE red_admin2;
SELECT body FROM erpcrm.preview('red_companies', '7');
RESET ROLE;
DROP ROLE red_admin2;

-- clean up
SET ROLE red_admin;
SELECT erpcrm.unmap('red_companies');
SELECT erpcrm.unmap('red_moves');
RESET ROLE;
DROP SCHEMA red_erp CASCADE;
DROP ROLE red_admin, red_mallory;

-- Ordinary DDL on watched tables and mapping views never makes an ERP write
-- fail, and never makes erpcrm capture the wrong thing
\set SHOW_CONTEXT never
-- watch ids appear in messages: start from a known one
ALTER TABLE erpcrm.watch ALTER COLUMN watch_id RESTART WITH 1001;
CREATE SCHEMA ddl_erp;
CREATE TABLE ddl_erp.lines (
	note text,
	invoice_id integer NOT NULL,
	line_no integer NOT NULL,
	sku text,
	qty integer,
	PRIMARY KEY (invoice_id, line_no)
);
-- (the mapping's view reads another table: a view on the column itself
-- would make PostgreSQL refuse to retype it)
CREATE TABLE ddl_erp.invoices (id text PRIMARY KEY, number text);
CREATE VIEW ddl_erp.hs_lines AS SELECT id AS erp_id, number AS name FROM ddl_erp.invoices;
SELECT erpcrm.map('ddl lines', 'ddl_erp.hs_lines', 'line_items') > 0 AS mapped;
SELECT erpcrm.watch('ddl lines', 'ddl_erp.lines', 'invoice_id::text || ''/'' || line_no') > 0 AS watched;
CREATE FUNCTION ddl_keys() RETURNS SETOF text LANGUAGE sql AS $$
	WITH d AS (DELETE FROM erpcrm.outbox o USING erpcrm.mapping m
				WHERE m.mapping_id = o.mapping_id AND m.name LIKE 'ddl%'
			   RETURNING m.name, o.erp_id, o.erp_ids)
	SELECT d.name || ': ' || COALESCE(k.erp_id, '(every key)')
	  FROM d LEFT JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS k(erp_id) ON true
	 ORDER BY 1;
$$;
INSERT INTO ddl_erp.lines VALUES ('a', 1, 1, 'P-1', 1);
SELECT * FROM ddl_keys();

-- add a column, drop one that the key does not use (the key's columns move)
ALTER TABLE ddl_erp.lines ADD COLUMN price numeric;
ALTER TABLE ddl_erp.lines DROP COLUMN note;
INSERT INTO ddl_erp.lines (invoice_id, line_no, sku) VALUES (1, 2, 'P-2');
UPDATE ddl_erp.lines SET qty = 5 WHERE line_no = 2;
SELECT * FROM ddl_keys();

-- retype a key column: writes go on (this session compiled the key before)
ALTER TABLE ddl_erp.lines ALTER COLUMN invoice_id TYPE bigint;
INSERT INTO ddl_erp.lines (invoice_id, line_no, sku) VALUES (9000000000, 1, 'P-3');
UPDATE ddl_erp.lines SET qty = 7 WHERE invoice_id = 1 AND line_no = 1;
SELECT * FROM ddl_keys();

-- rename a key column: the key is written with the new name
ALTER TABLE ddl_erp.lines RENAME COLUMN invoice_id TO invoice_no;
SELECT key_expr FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'ddl lines';
DELETE FROM ddl_erp.lines WHERE invoice_no = 9000000000;
SELECT * FROM ddl_keys();
-- watching it again with the new text is the same watch
SELECT erpcrm.watch('ddl lines', 'ddl_erp.lines', key_expr) = watch_id AS same_watch
  FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'ddl lines';

-- drop or retype a key column so that the key means nothing: refused, by name
ALTER TABLE ddl_erp.lines DROP COLUMN line_no;
ALTER TABLE ddl_erp.lines DROP COLUMN line_no CASCADE;
INSERT INTO ddl_erp.lines (invoice_no, line_no, sku) VALUES (1, 3, 'P-5');
SELECT * FROM ddl_keys();
CREATE TABLE ddl_erp.codes (code text PRIMARY KEY, label text);
SELECT erpcrm.watch('ddl lines', 'ddl_erp.codes', 'lower(code)') > 0 AS watched;
ALTER TABLE ddl_erp.codes ALTER COLUMN code TYPE integer USING length(code);
INSERT INTO ddl_erp.codes VALUES ('ABC', 'x');
SELECT * FROM ddl_keys();

-- rename the table, move it to another schema, rewrite it
ALTER TABLE ddl_erp.lines RENAME TO invoice_lines;
CREATE SCHEMA ddl_other;
ALTER TABLE ddl_erp.invoice_lines SET SCHEMA ddl_other;
INSERT INTO ddl_other.invoice_lines (invoice_no, line_no, sku) VALUES (2, 1, 'P-4');
VACUUM FULL ddl_other.invoice_lines;
CLUSTER ddl_other.invoice_lines USING lines_pkey;
UPDATE ddl_other.invoice_lines SET qty = 1 WHERE invoice_no = 2;
SELECT * FROM ddl_keys();
SELECT w.source, w.key_expr FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id)
 WHERE m.name = 'ddl lines' ORDER BY w.watch_id;

-- a watch's trigger cannot be dropped by hand; unwatch() drops it
SELECT tgname AS a_watch_trigger FROM pg_trigger
 WHERE tgrelid = 'ddl_erp.codes'::regclass AND tgname LIKE 'erpcrm%' ORDER BY 1 LIMIT 1 \gset
DROP TRIGGER :a_watch_trigger ON ddl_erp.codes;
SELECT erpcrm.unwatch('ddl lines', 'ddl_erp.codes');

-- a function a key uses: renamed, followed; dropped, refused
CREATE FUNCTION ddl_erp.line_key(bigint, integer) RETURNS text
	LANGUAGE sql IMMUTABLE AS $$ SELECT $1 || '/' || $2 $$;
SELECT erpcrm.watch('ddl lines', 'ddl_other.invoice_lines', 'ddl_erp.line_key(invoice_no, line_no)') > 0 AS watched;
UPDATE ddl_other.invoice_lines SET qty = 2 WHERE invoice_no = 2;
SELECT * FROM ddl_keys();
ALTER FUNCTION ddl_erp.line_key(bigint, integer) RENAME TO line_key2;
DROP FUNCTION ddl_erp.line_key2(bigint, integer);

-- a key that stops fitting by a way erpcrm cannot check (event triggers off
-- in replica mode): the ERP's write goes through, every key is marked
SET session_replication_role = replica;
DROP FUNCTION ddl_erp.line_key2(bigint, integer);
RESET session_replication_role;
UPDATE ddl_other.invoice_lines SET qty = 3 WHERE invoice_no = 2;
SELECT * FROM ddl_keys();
SELECT problem FROM erpcrm.status WHERE mapping = 'ddl lines';
SELECT erpcrm.unwatch('ddl lines', 'ddl_other.invoice_lines', 'ddl_erp.line_key2(invoice_no, line_no)');
SELECT problem FROM erpcrm.status WHERE mapping = 'ddl lines';

-- a disabled trigger is shown
ALTER TABLE ddl_other.invoice_lines DISABLE TRIGGER USER;
SELECT problem FROM erpcrm.status WHERE mapping = 'ddl lines';
ALTER TABLE ddl_other.invoice_lines ENABLE TRIGGER USER;
SELECT problem FROM erpcrm.status WHERE mapping = 'ddl lines';

-- partitions: attached later, written to directly, detached
CREATE TABLE ddl_erp.stock (warehouse text, sku text, qty int) PARTITION BY LIST (warehouse);
CREATE TABLE ddl_erp.stock_waw PARTITION OF ddl_erp.stock FOR VALUES IN ('WAW');
SELECT erpcrm.map('ddl stock', 'ddl_erp.hs_lines', 'products') > 0 AS mapped;
SELECT erpcrm.watch('ddl stock', 'ddl_erp.stock', 'sku') > 0 AS watched;
CREATE TABLE ddl_erp.stock_krk (qty int, sku text, warehouse text);
ALTER TABLE ddl_erp.stock ATTACH PARTITION ddl_erp.stock_krk FOR VALUES IN ('KRK');
CREATE TABLE ddl_erp.stock_gdn PARTITION OF ddl_erp.stock FOR VALUES IN ('GDN');
INSERT INTO ddl_erp.stock VALUES ('WAW', 'S-1', 1), ('KRK', 'S-2', 1);
INSERT INTO ddl_erp.stock_krk (warehouse, sku, qty) VALUES ('KRK', 'S-3', 1);
INSERT INTO ddl_erp.stock_gdn VALUES ('GDN', 'S-4', 1);
UPDATE ddl_erp.stock SET warehouse = 'WAW' WHERE sku = 'S-2';
SELECT * FROM ddl_keys();
-- a partition truncated on its own (every partition has the TRUNCATE trigger)
SELECT c.relname, count(t.tgname) FROM pg_class c LEFT JOIN pg_trigger t ON t.tgrelid = c.oid
   AND t.tgname LIKE 'erpcrm_watch_%_t'
 WHERE c.relname LIKE 'stock%' AND c.relnamespace = 'ddl_erp'::regnamespace GROUP BY 1 ORDER BY 1;
TRUNCATE ddl_erp.stock_gdn;
SELECT * FROM ddl_keys();
ALTER TABLE ddl_erp.stock DETACH PARTITION ddl_erp.stock_krk;
INSERT INTO ddl_erp.stock_krk (warehouse, sku, qty) VALUES ('KRK', 'S-5', 1);
TRUNCATE ddl_erp.stock_krk;
INSERT INTO ddl_erp.stock VALUES ('GDN', 'S-6', 1);
SELECT * FROM ddl_keys();

-- unwatch() leaves no trigger on the partitions
SELECT erpcrm.watch('ddl stock', 'ddl_erp.stock', 'warehouse') AS wid \gset
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'erpcrm\_watch\_' || :wid || '%';
SELECT erpcrm.unwatch('ddl stock', 'ddl_erp.stock', 'warehouse');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'erpcrm\_watch\_' || :wid || '%';
TRUNCATE ddl_erp.stock_gdn;
SELECT * FROM ddl_keys();

-- dropping a watched table drops its watches (CASCADE or not)
CREATE VIEW ddl_erp.stock_view AS SELECT * FROM ddl_erp.stock;
DROP TABLE ddl_erp.stock CASCADE;
SELECT count(*) AS watches_left FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id)
 WHERE m.name = 'ddl stock';
DROP SCHEMA ddl_other CASCADE;
SELECT count(*) AS watches_left FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id)
 WHERE m.name = 'ddl lines';

-- a mapping's view dropped and created again: found again by its name
CREATE TABLE ddl_erp.items (id integer PRIMARY KEY, name text);
CREATE VIEW ddl_erp.hs_items AS SELECT id AS erp_id, name FROM ddl_erp.items;
SELECT erpcrm.map('ddl items', 'ddl_erp.hs_items', 'products') > 0 AS mapped;
DROP VIEW ddl_erp.hs_items;
SELECT source, problem FROM erpcrm.status WHERE mapping = 'ddl items';
CREATE VIEW ddl_erp.hs_items AS SELECT id AS erp_id, name, 1 AS extra FROM ddl_erp.items;
SELECT source, problem FROM erpcrm.status WHERE mapping = 'ddl items';
SELECT source = 'ddl_erp.hs_items'::regclass AS found_again FROM erpcrm.mapping WHERE name = 'ddl items';
-- renamed or moved: followed
ALTER VIEW ddl_erp.hs_items RENAME TO hs_items2;
SELECT s.source, m.source_name, s.problem FROM erpcrm.status s JOIN erpcrm.mapping m ON m.name = s.mapping
 WHERE s.mapping = 'ddl items';

-- resync of a mapping whose view is gone names the mapping and says why
DROP VIEW ddl_erp.hs_items2;
SELECT erpcrm.resync('ddl items');

SELECT erpcrm.unmap('ddl items');
SELECT erpcrm.unmap('ddl stock');
SELECT erpcrm.unmap('ddl lines');
DROP SCHEMA ddl_erp CASCADE;
DROP FUNCTION ddl_keys();

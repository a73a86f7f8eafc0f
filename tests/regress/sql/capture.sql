-- Capture: ERP writes record the mapping keys they touch, in the ERP's transaction
\set SHOW_CONTEXT never
-- (a transaction with many keys of one mapping packs them into erp_ids)
CREATE VIEW outbox AS
SELECT m.name AS mapping, k.erp_id
  FROM erpcrm.outbox o JOIN erpcrm.mapping m USING (mapping_id)
 CROSS JOIN LATERAL unnest(COALESCE(o.erp_ids, ARRAY[o.erp_id])) AS k(erp_id);
CREATE FUNCTION drain() RETURNS SETOF outbox LANGUAGE sql AS $$
	WITH d AS (DELETE FROM erpcrm.outbox RETURNING *)
	SELECT m.name, k.erp_id FROM d JOIN erpcrm.mapping m USING (mapping_id)
	 CROSS JOIN LATERAL unnest(COALESCE(d.erp_ids, ARRAY[d.erp_id])) AS k(erp_id)
	 ORDER BY 1, 2;
$$;

-- insert, committed
INSERT INTO erp.customers VALUES (1, 'Alfa sp. z o.o.', '5260001246'), (2, 'Beta S.A.', NULL);
SELECT * FROM drain();

-- rolled back: no trace
BEGIN;
INSERT INTO erp.customers VALUES (3, 'Gamma', NULL);
ROLLBACK;
SELECT * FROM drain();

-- rolled back to a savepoint: only what was kept
BEGIN;
INSERT INTO erp.customers VALUES (3, 'Gamma', NULL);
SAVEPOINT s1;
INSERT INTO erp.customers VALUES (4, 'Delta', NULL);
ROLLBACK TO SAVEPOINT s1;
UPDATE erp.customers SET name = 'Gamma sp.j.' WHERE id = 3;
SAVEPOINT s2;
UPDATE erp.customers SET name = 'Alfa' WHERE id = 1;
RELEASE SAVEPOINT s2;
COMMIT;
SELECT * FROM drain();

-- a repeat in a new subtransaction after a rollback is recorded again
BEGIN;
SAVEPOINT a;
UPDATE erp.customers SET nip = '1' WHERE id = 2;
ROLLBACK TO SAVEPOINT a;
UPDATE erp.customers SET nip = '2' WHERE id = 2;
COMMIT;
SELECT * FROM drain();

-- an UPDATE that changes nothing records nothing
UPDATE erp.customers SET name = name;
UPDATE erp.customers SET nip = nip WHERE id = 1;
SELECT * FROM drain();

-- an UPDATE that changes the key dirties the old and the new key
UPDATE erp.customers SET id = 10 WHERE id = 3;
SELECT * FROM drain();

-- one statement whose rows keep their keys or move them: the old key only
-- of the rows that moved
UPDATE erp.customers SET id = CASE WHEN id = 1 THEN 11 ELSE id END, name = name || '!'
 WHERE id IN (1, 2);
SELECT * FROM drain();
UPDATE erp.customers SET id = 1, name = rtrim(name, '!') WHERE id = 11;
UPDATE erp.customers SET name = rtrim(name, '!') WHERE id = 2;
SELECT * FROM drain();

-- delete
DELETE FROM erp.customers WHERE id = 10;
SELECT * FROM drain();

-- multi-row statements
INSERT INTO erp.customers SELECT g, 'Customer ' || g FROM generate_series(100, 104) g;
UPDATE erp.customers SET active = false WHERE id BETWEEN 100 AND 102;
SELECT mapping, count(*) FROM drain() GROUP BY 1;

-- several mappings watch one table; one table feeds several mappings
INSERT INTO erp.persons VALUES (1, 1, 'anna@alfa.pl', 'Anna', 'Nowak');
INSERT INTO erp.invoices VALUES ('a0000000-0000-0000-0000-000000000001', 'FV/1/2026', 1);
INSERT INTO erp.invoice_lines VALUES ('a0000000-0000-0000-0000-000000000001', 1, 'P-1', 2),
	('a0000000-0000-0000-0000-000000000001', 2, 'P-2', 1);
SELECT * FROM drain();

-- lines of one invoice, loaded by COPY: the invoice once, every line
COPY erp.invoice_lines FROM stdin;
a0000000-0000-0000-0000-000000000001	3	P-3	5
a0000000-0000-0000-0000-000000000001	4	P-4	1
a0000000-0000-0000-0000-000000000001	5	P-5	1
\.
SELECT * FROM drain();

-- a NULL key records nothing
INSERT INTO erp.persons VALUES (2, NULL, 'jan@example.com', 'Jan', 'Kowalski');
UPDATE erp.persons SET customer_id = NULL WHERE id = 2;
SELECT * FROM drain();

-- TRUNCATE marks every key of the mapping
TRUNCATE erp.products;
SELECT * FROM drain();

-- any schema, quoted mixed-case names, any key type, composite keys
CREATE SCHEMA "Sales ""EU""";
CREATE TABLE "Sales ""EU"""."Order Items" (
	"Order No" bigint,
	"Line" integer,
	"ID" uuid DEFAULT 'b0000000-0000-0000-0000-00000000000b',
	"Note" text
);
CREATE VIEW "Sales ""EU"""."HS Items" AS
SELECT "Order No" || '-' || "Line" AS erp_id, "Note" AS name FROM "Sales ""EU"""."Order Items";
SELECT erpcrm.map('Items "EU"', '"Sales ""EU"""."HS Items"', 'line_items');
SELECT erpcrm.watch('Items "EU"', '"Sales ""EU"""."Order Items"', '"Order No" || ''-'' || "Line"');
SELECT erpcrm.map('Items by uuid', '"Sales ""EU"""."HS Items"', 'line_items');
SELECT erpcrm.watch('Items by uuid', '"Sales ""EU"""."Order Items"', '"ID"');
INSERT INTO "Sales ""EU"""."Order Items" VALUES (9000000000, 1, DEFAULT, 'a'), (9000000000, 2, DEFAULT, 'b');
SELECT * FROM drain();

-- a partitioned table; the partition's columns are in another order
CREATE TABLE erp.stock (warehouse text, sku text, qty int) PARTITION BY LIST (warehouse);
CREATE TABLE erp.stock_waw (qty int, sku text, warehouse text);
ALTER TABLE erp.stock ATTACH PARTITION erp.stock_waw FOR VALUES IN ('WAW');
CREATE TABLE erp.stock_krk PARTITION OF erp.stock FOR VALUES IN ('KRK');
SELECT erpcrm.watch('products', 'erp.stock', 'sku');
INSERT INTO erp.stock VALUES ('WAW', 'P-1', 5), ('KRK', 'P-2', 7);
UPDATE erp.stock SET qty = qty + 1 WHERE sku = 'P-1';
SELECT * FROM drain();

-- keys are buffered in the transaction and written just before it commits
BEGIN;
INSERT INTO erp.products VALUES ('P-9', 'Nine', 9);
SELECT count(*) AS written_before_commit FROM erpcrm.outbox;
COMMIT;
SELECT * FROM drain();

-- a large transaction: keys beyond the buffer are written early, by the
-- subtransaction that captured them, and still vanish with it
BEGIN;
INSERT INTO erp.products SELECT 'B-' || g, 'bulk', 1 FROM generate_series(1, 5000) g;
SAVEPOINT s;
INSERT INTO erp.products SELECT 'C-' || g, 'bulk', 1 FROM generate_series(1, 9000) g;
SAVEPOINT s2;
INSERT INTO erp.products SELECT 'E-' || g, 'bulk', 1 FROM generate_series(1, 10) g;
RELEASE SAVEPOINT s2;
ROLLBACK TO SAVEPOINT s;
SAVEPOINT t;
INSERT INTO erp.products SELECT 'D-' || g, 'bulk', 1 FROM generate_series(1, 5000) g;
RELEASE SAVEPOINT t;
SAVEPOINT u;
INSERT INTO erp.products SELECT 'F-' || g, 'bulk', 1 FROM generate_series(1, 10) g;
ROLLBACK TO SAVEPOINT u;
COMMIT;
SELECT count(*) < 1000 AS packed_rows FROM erpcrm.outbox;
SELECT left(erp_id, 2) AS prefix, count(*) FROM drain() GROUP BY 1 ORDER BY 1;
DELETE FROM erp.products WHERE sku LIKE 'B-%' OR sku LIKE 'D-%';
SELECT count(*) FROM drain();
-- and a rolled-back large transaction leaves nothing
BEGIN;
INSERT INTO erp.products SELECT 'G-' || g, 'bulk', 1 FROM generate_series(1, 9000) g;
ROLLBACK;
SELECT count(*) FROM drain();

-- an outbox altered by hand is detected, not silently corrupted
CREATE INDEX outbox_bad ON erpcrm.outbox (erp_id);
INSERT INTO erp.products VALUES ('P-10', 'Ten', 10);
DROP INDEX erpcrm.outbox_bad;
INSERT INTO erp.products VALUES ('P-10', 'Ten', 10);
SELECT * FROM drain();

-- UPDATEs: every key an UPDATE changed, once, as the rows were written,
-- whatever other triggers of the table did to them; nothing for a row that
-- did not change or was not written
CREATE TABLE erp.prices (sku text PRIMARY KEY, level char(1), price numeric);
SELECT erpcrm.watch('products', 'erp.prices', 'sku') AS w_prices \gset
INSERT INTO erp.prices VALUES ('R-1', 'A', 10), ('R-2', 'A', 20), ('R-3', 'B', 30);
SELECT * FROM drain();
UPDATE erp.prices SET price = price + 1 WHERE sku = 'R-1';
UPDATE erp.prices SET sku = 'R-4' WHERE sku = 'R-3';
UPDATE erp.prices SET price = price;
SELECT * FROM drain();
-- a trigger that fires before erpcrm's changes the row
CREATE FUNCTION erp.round_price() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.price := round(NEW.price);
	RETURN NEW;
END $$;
CREATE TRIGGER a_round BEFORE UPDATE ON erp.prices FOR EACH ROW EXECUTE FUNCTION erp.round_price();
UPDATE erp.prices SET price = price + 0.1 WHERE sku = 'R-1';
UPDATE erp.prices SET price = price + 1.1 WHERE sku = 'R-2';
SELECT * FROM drain();
DROP TRIGGER a_round ON erp.prices;
-- BEFORE triggers that change the key, in name order before and after
-- erpcrm's trigger names: the key as written, and the old one
CREATE FUNCTION erp.suffix_sku() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.level = 'X' THEN
		NEW.sku := NEW.sku || '-X';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER zz_suffix BEFORE UPDATE ON erp.prices FOR EACH ROW EXECUTE FUNCTION erp.suffix_sku();
UPDATE erp.prices SET level = 'X' WHERE sku = 'R-1';
SELECT * FROM drain();
ALTER TRIGGER zz_suffix ON erp.prices RENAME TO a_suffix;
UPDATE erp.prices SET level = 'X' WHERE sku = 'R-2';
SELECT * FROM drain();
DROP TRIGGER a_suffix ON erp.prices;
-- a trigger that skips rows: nothing is recorded for a skipped row
CREATE FUNCTION erp.skip_b() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RETURN CASE WHEN NEW.level = 'B' THEN NULL ELSE NEW END;
END $$;
CREATE TRIGGER zz_skip BEFORE UPDATE ON erp.prices FOR EACH ROW EXECUTE FUNCTION erp.skip_b();
UPDATE erp.prices SET level = CASE WHEN sku = 'R-4' THEN 'C' ELSE 'B' END;
SELECT * FROM drain();
DROP TRIGGER zz_skip ON erp.prices;
-- several watches of one table
SELECT erpcrm.watch('products', 'erp.prices', 'sku || ''/'' || level') AS w_prices2 \gset
UPDATE erp.prices SET level = 'D' WHERE sku = 'R-4';
SELECT * FROM drain();
SELECT erpcrm.unwatch('products', 'erp.prices', 'sku || ''/'' || level');
-- INSERT ... ON CONFLICT DO UPDATE, and MERGE
INSERT INTO erp.prices VALUES ('R-1-X', 'A', 5), ('R-5', 'A', 5)
	ON CONFLICT (sku) DO UPDATE SET price = excluded.price;
SELECT * FROM drain();
MERGE INTO erp.prices p
USING (VALUES ('R-1-X', 7), ('R-2-X', NULL), ('R-6', 6), ('R-5', 5)) AS v(sku, price)
   ON p.sku = v.sku
 WHEN MATCHED AND v.price IS NULL THEN DELETE
 WHEN MATCHED AND v.price <> p.price THEN UPDATE SET price = v.price, sku = p.sku || 'M'
 WHEN NOT MATCHED THEN INSERT VALUES (v.sku, 'A', v.price);
SELECT * FROM drain();
-- savepoints: an UPDATE rolled back leaves nothing, also beyond the buffer
INSERT INTO erp.prices SELECT 'S-' || g, 'A', g FROM generate_series(1, 6000) g;
SELECT count(*) FROM drain();
BEGIN;
UPDATE erp.prices SET price = price + 1 WHERE sku = 'R-5';
SAVEPOINT s;
UPDATE erp.prices SET price = price + 1 WHERE sku LIKE 'S-%';
ROLLBACK TO SAVEPOINT s;
UPDATE erp.prices SET price = price + 1 WHERE sku IN ('S-1', 'S-2');
SAVEPOINT t;
UPDATE erp.prices SET price = price + 1 WHERE sku LIKE 'S-%' AND price > 3000;
RELEASE SAVEPOINT t;
COMMIT;
SELECT left(erp_id, 2) AS prefix, count(*) FROM drain() GROUP BY 1 ORDER BY 1;
-- a column set to NULL again is no change
UPDATE erp.prices SET level = NULL WHERE sku = 'R-5';
UPDATE erp.prices SET level = NULL WHERE sku = 'R-5';
SELECT * FROM drain();
-- a key from a stored generated column: its value as written
CREATE TABLE erp.coded (id integer PRIMARY KEY, code text GENERATED ALWAYS AS ('G-' || id) STORED, name text);
SELECT erpcrm.watch('products', 'erp.coded', 'code') AS w_coded \gset
INSERT INTO erp.coded (id, name) VALUES (1, 'one');
UPDATE erp.coded SET id = 2;
SELECT * FROM drain();
DROP TABLE erp.coded;
DELETE FROM erp.prices;
SELECT count(*) FROM drain();
DROP TABLE erp.prices;
DROP FUNCTION erp.round_price(), erp.suffix_sku(), erp.skip_b();

-- The mapping registry: definitions are validated when made
\set SHOW_CONTEXT never

SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.map('contacts', 'erp.hs_contacts', 'contacts', on_delete => 'keep');
SELECT erpcrm.map('products', 'erp.hs_products', 'products', batch_size => 50);
SELECT erpcrm.map('invoices', 'erp.hs_invoices', 'deals');
SELECT erpcrm.map('lines', 'erp.hs_lines', 'line_items');
SELECT name, source, object_type, id_property, on_delete, batch_size
  FROM erpcrm.mapping ORDER BY mapping_id;

-- redefining is idempotent and keeps the id
SELECT erpcrm.map('products', 'erp.hs_products', 'products', batch_size => 25);
SELECT mapping_id, batch_size FROM erpcrm.mapping WHERE name = 'products';

-- the view has no erp_id column
CREATE VIEW erp.no_key AS SELECT id, name FROM erp.customers;
SELECT erpcrm.map('bad', 'erp.no_key', 'companies');
-- erp_id is not usable as text
CREATE VIEW erp.float_key AS SELECT id::float8 AS erp_id, name FROM erp.customers;
SELECT erpcrm.map('bad', 'erp.float_key', 'companies');
CREATE VIEW erp.json_key AS SELECT to_json(id) AS erp_id, name FROM erp.customers;
SELECT erpcrm.map('bad', 'erp.json_key', 'companies');
-- unknown object type
SELECT erpcrm.map('bad', 'erp.hs_companies', 'company');
SELECT erpcrm.map('bad', 'erp.hs_companies', NULL);
-- a column that cannot be a HubSpot property name
CREATE VIEW erp.bad_column AS SELECT id AS erp_id, name AS "Company Name" FROM erp.customers;
SELECT erpcrm.map('bad', 'erp.bad_column', 'companies');
CREATE VIEW erp.bad_column2 AS SELECT id AS erp_id, name AS "name;drop" FROM erp.customers;
SELECT erpcrm.map('bad', 'erp.bad_column2', 'companies');
-- a source that does not exist, or is not a relation with rows
SELECT erpcrm.map('bad', 'erp.nope', 'companies');
CREATE SEQUENCE erp.seq;
SELECT erpcrm.map('bad', 'erp.seq', 'companies');
-- other bad arguments
SELECT erpcrm.map('bad', 'erp.hs_companies', 'companies', on_delete => 'delete');
SELECT erpcrm.map('bad', 'erp.hs_companies', 'companies', batch_size => 101);
SELECT erpcrm.map('bad', 'erp.hs_companies', 'companies', id_property => 'Erp Id');
SELECT erpcrm.map('bad', 'erp.hs_companies', 'companies', id_property => 'email');
SELECT erpcrm.map('', 'erp.hs_companies', 'companies');
-- custom object types are accepted
CREATE VIEW erp.hs_machines AS SELECT id AS erp_id, name FROM erp.customers;
SELECT erpcrm.map('machines', 'erp.hs_machines', '2-1234567') > 0 AS ok;
SELECT erpcrm.unmap('machines');
SELECT erpcrm.unmap('machines');
SELECT count(*) FROM erpcrm.mapping WHERE name = 'bad';

-- associations
SELECT erpcrm.associate('contacts', 'company_erp_id', 'companies');
SELECT erpcrm.associate('invoices', 'company_erp_id', 'companies', 5);
SELECT m.name, a.column_name, t.name AS target, a.type_id, a.category
  FROM erpcrm.association a JOIN erpcrm.mapping m USING (mapping_id)
  JOIN erpcrm.mapping t ON t.mapping_id = a.target_id ORDER BY 1;
-- to an unknown mapping, through a missing column, in a circle, bad type
SELECT erpcrm.associate('contacts', 'company_erp_id', 'customers');
SELECT erpcrm.associate('contacts', 'customer_erp_id', 'companies');
SELECT erpcrm.associate('nobody', 'company_erp_id', 'companies');
SELECT erpcrm.associate('contacts', 'erp_id', 'companies');
SELECT erpcrm.associate('contacts', 'company_erp_id', 'contacts');
SELECT erpcrm.associate('contacts', 'company_erp_id', 'companies', -1);
SELECT erpcrm.associate('contacts', 'company_erp_id', 'companies', category => 'MINE');
CREATE VIEW erp.hs_companies2 AS SELECT id AS erp_id, name, id::text AS contact_erp_id FROM erp.customers;
SELECT erpcrm.map('companies2', 'erp.hs_companies2', 'companies');
CREATE VIEW erp.hs_contacts2 AS SELECT id AS erp_id, email, customer_id::text AS company_erp_id FROM erp.persons;
SELECT erpcrm.map('contacts2', 'erp.hs_contacts2', 'contacts');
SELECT erpcrm.associate('contacts2', 'company_erp_id', 'companies2');
SELECT erpcrm.associate('companies2', 'contact_erp_id', 'contacts2');
-- a mapping others associate to cannot be dropped
SELECT erpcrm.unmap('companies2');
SELECT erpcrm.dissociate('contacts2', 'company_erp_id', 'companies2');
SELECT erpcrm.dissociate('contacts2', 'company_erp_id', 'companies2');
SELECT erpcrm.unmap('companies2');
SELECT erpcrm.unmap('contacts2');

-- watches
SELECT erpcrm.watch('companies', 'erp.customers', 'id') AS w_companies \gset
SELECT erpcrm.watch('contacts', 'erp.persons', 'id::text');
SELECT erpcrm.watch('products', 'erp.products', 'sku');
SELECT erpcrm.watch('invoices', 'erp.invoices', 'id');
SELECT erpcrm.watch('invoices', 'erp.invoice_lines', 'invoice_id');
SELECT erpcrm.watch('lines', 'erp.invoice_lines', 'invoice_id::text || ''/'' || line_no');
-- watching twice the same way is a no-op
SELECT erpcrm.watch('companies', 'erp.customers', 'id') = :w_companies AS same_watch;
SELECT m.name, w.source, w.key_expr, w.trigger_name ~ '^erpcrm_watch_[0-9]+$' AS named
  FROM erpcrm.watch w JOIN erpcrm.mapping m USING (mapping_id) ORDER BY w.watch_id;
SELECT tgrelid::regclass, count(*) FROM pg_trigger WHERE tgname LIKE 'erpcrm_watch_%'
 GROUP BY 1 ORDER BY 1;
-- a watched table that does not exist, or is not a table
SELECT erpcrm.watch('companies', 'erp.clients', 'id');
SELECT erpcrm.watch('companies', 'erp.hs_companies', 'erp_id');
-- key expressions that do not compile against the table
SELECT erpcrm.watch('companies', 'erp.customers', 'customer_id');
SELECT erpcrm.watch('companies', 'erp.customers', 'id +');
SELECT erpcrm.watch('companies', 'erp.customers', '');
SELECT erpcrm.watch('companies', 'erp.customers', 'id, name');
SELECT erpcrm.watch('companies', 'erp.customers', 'id FROM erp.persons');
SELECT erpcrm.watch('companies', 'erp.customers', 'id; DROP TABLE erp.customers');
SELECT erpcrm.watch('companies', 'erp.customers', '(SELECT max(id) FROM erp.customers)');
SELECT erpcrm.watch('companies', 'erp.customers', 'count(*)');
SELECT erpcrm.watch('companies', 'erp.customers', 'random()');
SELECT erpcrm.watch('companies', 'erp.customers', 'ctid');
SELECT erpcrm.watch('companies', 'erp.customers', 'generate_series(1, id)');
SELECT erpcrm.watch('nobody', 'erp.customers', 'id');
SELECT count(*) FROM erp.customers;
-- unwatch removes the triggers
SELECT erpcrm.watch('companies', 'erp.persons', 'customer_id') AS w_tmp \gset
SELECT erpcrm.unwatch('companies', 'erp.persons');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'erp.persons'::regclass AND tgname LIKE 'erpcrm_watch_%';
-- the capture function cannot be misused
SELECT erpcrm.capture();
CREATE TABLE erp.scratch (id int);
CREATE TRIGGER fake AFTER INSERT ON erp.scratch FOR EACH ROW EXECUTE FUNCTION erpcrm.capture('99999');
INSERT INTO erp.scratch VALUES (1);
DROP TRIGGER fake ON erp.scratch;
CREATE TRIGGER fake AFTER INSERT ON erp.scratch FOR EACH ROW EXECUTE FUNCTION erpcrm.capture(:'w_companies');
INSERT INTO erp.scratch VALUES (1);
DROP TRIGGER fake ON erp.scratch;
CREATE TRIGGER fake BEFORE INSERT ON erp.scratch FOR EACH ROW EXECUTE FUNCTION erpcrm.capture(:'w_companies');
INSERT INTO erp.scratch VALUES (1);
DROP TABLE erp.scratch;

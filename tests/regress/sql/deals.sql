-- 1.1: associations as properties, owner inheritance, matching, view helpers
\set SHOW_CONTEXT never
CREATE TABLE erp.orders (id int PRIMARY KEY, number text, customer_id int, deal_id text);
CREATE VIEW erp.hs_orders AS
SELECT id AS erp_id, number AS dealname, deal_id AS hubspot_id,
	   customer_id::text AS company_erp_id, NULL::text AS hubspot_owner_id
  FROM erp.orders;
CREATE VIEW erp.hs_order_lines AS
SELECT i.id::text || '/' || l.line_no AS erp_id, l.sku AS product_erp_id, l.qty AS quantity,
	   i.id::text AS invoice_erp_id
  FROM erp.invoices i JOIN erp.invoice_lines l ON l.invoice_id = i.id;
SELECT erpcrm.map('orders', 'erp.hs_orders', 'deals') > 0 AS mapped;
SELECT erpcrm.map('order_lines', 'erp.hs_order_lines', 'line_items') > 0 AS mapped;
SELECT erpcrm.map('products', 'erp.hs_products', 'products') > 0 AS mapped;
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies') > 0 AS mapped;

-- a line item's product: sent as hs_product_id, waited for like an association
SELECT erpcrm.associate('order_lines', 'product_erp_id', 'products', as_property => 'hs_product_id');
SELECT erpcrm.associate('order_lines', 'product_erp_id', 'products', as_property => 'Bad Name');
SELECT erpcrm.associate('order_lines', 'product_erp_id', 'products', as_property => 'quantity');
-- an order deal takes its company's owner when it has none
SELECT erpcrm.associate('orders', 'company_erp_id', 'companies', 5, inherit_owner => true);
SELECT erpcrm.associate('order_lines', 'invoice_erp_id', 'orders', inherit_owner => true);
SELECT m.name, a.column_name, t.name AS target, a.type_id, a.as_property, a.inherit_owner
  FROM erpcrm.association a JOIN erpcrm.mapping m USING (mapping_id)
  JOIN erpcrm.mapping t ON t.mapping_id = a.target_id
 WHERE m.name IN ('orders', 'order_lines') ORDER BY 1, 2;

-- matching existing HubSpot records
SELECT erpcrm.set_match('companies', 'nip');
SELECT name, match_property FROM erpcrm.mapping WHERE name = 'companies';
SELECT erpcrm.set_match('companies', 'email');
SELECT erpcrm.set_match('companies', 'erp_id');
SELECT erpcrm.set_match('companies', NULL);
SELECT name, match_property FROM erpcrm.mapping WHERE name = 'companies';

-- view helpers
INSERT INTO erpcrm.pipeline_stage VALUES ('Invoices (ERP)', 'Paid', '111', '222', 2);
SELECT erpcrm.stage_id('Invoices (ERP)', 'Paid'), erpcrm.stage_id('Invoices (ERP)', 'Nope'),
	   erpcrm.pipeline_id('Invoices (ERP)');
SELECT mapping_id AS products FROM erpcrm.mapping WHERE name = 'products' \gset
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id) VALUES (:products, 'P-77', 'synced', '7700');
SELECT erpcrm.hubspot_id('products', 'P-77'), erpcrm.hubspot_id('products', 'P-78');
UPDATE erpcrm.sync_state SET state = 'archived' WHERE mapping_id = :products AND erp_id = 'P-77';
SELECT erpcrm.hubspot_id('products', 'P-77') IS NULL AS archived_has_no_id;

-- set-up needs a token; the connection check says so
SELECT * FROM erpcrm.setup_hubspot();
SELECT * FROM erpcrm.check_connection();

-- progress columns of erpcrm.status
SELECT mapping, per_second, time_left FROM erpcrm.status WHERE mapping = 'companies';

SELECT erpcrm.unmap('order_lines');
SELECT erpcrm.unmap('orders');

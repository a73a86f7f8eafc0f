-- tests/demo/erp.sql: the sample ERP of a Polish building-materials
-- distributor and its HubSpot mappings.
--
-- Tables, views and the erpcrm.map/associate/watch calls are those of
-- tests/ErpcrmTest.pm (load_erp), with a few extra columns: the customer's
-- city, a contact person's job title and phone, a product's category.
CREATE EXTENSION erpcrm;
CREATE SCHEMA erp;

CREATE TABLE erp.customers (
	id integer PRIMARY KEY,
	name text NOT NULL,
	nip text,
	domain text,
	price_level char(1),
	credit_limit numeric(12,2),
	customer_since date,
	last_order_at timestamptz,
	vip boolean,
	active boolean NOT NULL DEFAULT true,
	city text
);
CREATE TABLE erp.persons (
	id integer PRIMARY KEY,
	customer_id integer REFERENCES erp.customers,
	email text,
	first_name text,
	last_name text,
	jobtitle text,
	phone text
);
CREATE TABLE erp.products (
	sku text PRIMARY KEY,
	name text NOT NULL,
	price numeric(12,2),
	active boolean NOT NULL DEFAULT true,
	category text
);

-- One view per HubSpot object kind: a row per object, erp_id the key,
-- every other column a HubSpot property.
CREATE VIEW erp.hs_companies AS
SELECT id AS erp_id, name, nip, domain, price_level, credit_limit,
	   customer_since, last_order_at, vip, city
  FROM erp.customers WHERE active;
CREATE VIEW erp.hs_contacts AS
SELECT id AS erp_id, email, first_name AS firstname, last_name AS lastname,
	   customer_id::text AS company_erp_id, jobtitle, phone
  FROM erp.persons;
CREATE VIEW erp.hs_products AS
SELECT sku AS erp_id, name, price, sku AS hs_sku FROM erp.products WHERE active;

SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.map('contacts', 'erp.hs_contacts', 'contacts', on_delete => 'keep');
SELECT erpcrm.map('products', 'erp.hs_products', 'products');
SELECT erpcrm.associate('contacts', 'company_erp_id', 'companies');
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
SELECT erpcrm.watch('contacts', 'erp.persons', 'id');
SELECT erpcrm.watch('products', 'erp.products', 'sku');

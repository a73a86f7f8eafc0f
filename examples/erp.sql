-- examples/erp.sql: the ERP of a Polish distributor, as the mapping guide,
-- the demo and the tests use it.  erpcrm knows nothing about these tables;
-- examples/mappings.sql describes them to it.
CREATE SCHEMA erp;

CREATE TABLE erp.customers (
	id				integer PRIMARY KEY,
	name			text NOT NULL,
	nip				text,					-- tax id, as typed: 526-000-12-46
	domain			text,
	price_level		char(1) CHECK (price_level IN ('A', 'B', 'C')),
	credit_limit	numeric(12,2),
	active			boolean NOT NULL DEFAULT true
);

CREATE TABLE erp.persons (
	id				integer PRIMARY KEY,
	customer_id		integer,
	email			text,
	first_name		text,
	last_name		text,
	phone			text
);

CREATE TABLE erp.products (
	sku				text PRIMARY KEY,
	name			text NOT NULL,
	price			numeric(12,2),			-- standard net price, PLN
	price_a			numeric(12,2),			-- price levels A/B/C
	price_b			numeric(12,2),
	price_c			numeric(12,2),
	cost			numeric(12,2),
	active			boolean NOT NULL DEFAULT true
);

CREATE TABLE erp.orders (
	id				integer PRIMARY KEY,
	number			text NOT NULL,
	customer_id		integer,
	ordered_on		date NOT NULL,
	status			text NOT NULL CHECK (status IN ('in_progress', 'partially_fulfilled',
									'fulfilled', 'awaiting_payment', 'delayed')),
	total			numeric(12,2) NOT NULL,
	source			text NOT NULL DEFAULT 'sales' CHECK (source IN ('sales', 'b2b', 'shop')),
	hubspot_deal_id	text					-- the sales deal the order came from
);

CREATE TABLE erp.order_lines (
	order_id		integer NOT NULL REFERENCES erp.orders ON DELETE CASCADE,
	line_no			integer NOT NULL,
	sku				text NOT NULL,
	qty				numeric(12,3) NOT NULL,
	unit_price		numeric(12,2) NOT NULL,
	PRIMARY KEY (order_id, line_no)
);

CREATE TABLE erp.invoices (
	id				integer PRIMARY KEY,
	number			text NOT NULL,
	customer_id		integer,
	order_id		integer,
	corrects_id		integer REFERENCES erp.invoices,	-- a correction invoice
	issued_on		date NOT NULL,
	due_on			date NOT NULL,
	net				numeric(12,2) NOT NULL,
	gross			numeric(12,2) NOT NULL,
	currency		char(3) NOT NULL DEFAULT 'PLN',
	salesperson		text					-- HubSpot owner id, when the ERP knows it
);

-- The lines of a correction invoice (faktura korygująca) name the invoice
-- and the line_no they correct, and say what that line is after the
-- correction: the corrected quantity and price (quantity 0: the line is
-- cancelled).  A line_no the corrected invoice does not have is a line the
-- correction adds.  The correction's own net and gross are the differences.
CREATE TABLE erp.invoice_lines (
	invoice_id		integer NOT NULL REFERENCES erp.invoices ON DELETE CASCADE,
	line_no			integer NOT NULL,
	sku				text,
	name			text NOT NULL,
	qty				numeric(12,3) NOT NULL,
	unit_price		numeric(12,2) NOT NULL,
	discount		numeric(12,2) NOT NULL DEFAULT 0,
	corrects_invoice_id integer REFERENCES erp.invoices,	-- on a correction's lines
	PRIMARY KEY (invoice_id, line_no)
);

CREATE TABLE erp.payments (
	id				serial PRIMARY KEY,
	invoice_id		integer NOT NULL REFERENCES erp.invoices,
	customer_id		integer,
	amount			numeric(12,2) NOT NULL,
	paid_on			date NOT NULL
);

CREATE TABLE erp.offers (
	id				integer PRIMARY KEY,
	number			text NOT NULL,
	customer_id		integer,
	valid_until		date NOT NULL,
	status			text NOT NULL CHECK (status IN ('open', 'accepted', 'rejected'))
);

CREATE TABLE erp.offer_lines (
	offer_id		integer NOT NULL REFERENCES erp.offers ON DELETE CASCADE,
	line_no			integer NOT NULL,
	sku				text NOT NULL,
	qty				numeric(12,3) NOT NULL,
	unit_price		numeric(12,2) NOT NULL,	-- the individual price of this offer
	PRIMARY KEY (offer_id, line_no)
);

-- the foreign keys an ERP indexes anyway
CREATE INDEX ON erp.persons (customer_id);
CREATE INDEX ON erp.invoices (customer_id);
CREATE INDEX ON erp.invoices (corrects_id);
CREATE INDEX ON erp.invoices (order_id);
CREATE INDEX ON erp.payments (invoice_id);
CREATE INDEX ON erp.offers (customer_id);

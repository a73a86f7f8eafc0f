-- examples/mappings.sql: the mapping guide's views for examples/erp.sql.
-- Every HubSpot object kind is a view; erpcrm.map() names it, erpcrm.watch()
-- says which ERP tables dirty which keys.
--
-- The erp_id values of one HubSpot object type must be unique across all
-- mappings of that type: invoices, orders and offers are all deals, so their
-- keys carry a prefix (FV-, ZAM-, OF-).

-- Companies: NIP without dashes, price level, credit limit, and what is
-- overdue (unpaid gross of invoices past their due date).
CREATE VIEW erp.hs_companies AS
SELECT c.id AS erp_id,
	   c.name,
	   c.domain,
	   regexp_replace(c.nip, '[^0-9]', '', 'g') AS nip,
	   c.price_level,
	   c.credit_limit,
	   COALESCE((SELECT sum(i.gross) - COALESCE(sum(p.paid), 0)
				   FROM erp.invoices i
				   LEFT JOIN LATERAL (SELECT sum(amount) AS paid FROM erp.payments
									   WHERE invoice_id = i.id) p ON true
				  WHERE i.customer_id = c.id AND i.due_on < current_date), 0) AS overdue_receivables
  FROM erp.customers c
 WHERE c.active;

-- Contacts, associated to their company.
CREATE VIEW erp.hs_contacts AS
SELECT p.id AS erp_id, p.email, p.first_name AS firstname, p.last_name AS lastname,
	   p.phone, p.customer_id::text AS company_erp_id
  FROM erp.persons p;

-- Products: only active ones, the standard price and the price levels.
CREATE VIEW erp.hs_products AS
SELECT sku AS erp_id, name, sku AS hs_sku, price, cost AS hs_cost_of_goods_sold,
	   price_a AS price_level_a, price_b AS price_level_b, price_c AS price_level_c
  FROM erp.products
 WHERE active;

-- Invoices: one deal each in the invoice pipeline.  A correction invoice
-- changes the amounts of the invoice it corrects; payments move the stage.
CREATE VIEW erp.hs_invoices AS
SELECT 'FV-' || i.id::text AS erp_id,
	   'Faktura ' || i.number AS dealname,
	   i.number AS invoice_number,
	   i.issued_on AS closedate,
	   i.net + COALESCE(k.net, 0) AS net_amount,
	   i.gross + COALESCE(k.gross, 0) AS amount,
	   i.currency AS deal_currency_code,
	   erpcrm.pipeline_id('Invoices (ERP)') AS pipeline,
	   erpcrm.stage_id('Invoices (ERP)',
		   CASE WHEN i.gross + COALESCE(k.gross, 0) = 0 THEN 'Corrected'
				WHEN COALESCE(p.paid, 0) >= i.gross + COALESCE(k.gross, 0) THEN 'Paid'
				WHEN COALESCE(p.paid, 0) > 0 THEN 'Partially paid'
				WHEN i.due_on < current_date THEN 'Overdue'
				ELSE 'Issued' END) AS dealstage,
	   i.salesperson AS hubspot_owner_id,			-- NULL: the company's owner
	   i.customer_id::text AS company_erp_id,
	   CASE WHEN o.hubspot_deal_id IS NOT NULL THEN 'ZAM-' || o.id END AS sales_order_erp_id,
	   CASE WHEN o.id IS NOT NULL AND o.hubspot_deal_id IS NULL THEN 'ZAM-' || o.id END AS b2b_order_erp_id
  FROM erp.invoices i
  LEFT JOIN erp.orders o ON o.id = i.order_id
  LEFT JOIN LATERAL (SELECT sum(net) AS net, sum(gross) AS gross FROM erp.invoices
					  WHERE corrects_id = i.id) k ON true
  LEFT JOIN LATERAL (SELECT sum(amount) AS paid FROM erp.payments
					  WHERE invoice_id = i.id) p ON true
 WHERE i.corrects_id IS NULL;

-- Invoice lines: line items of their invoice deal, with the product.  The
-- lines of a correction invoice replace the lines they correct, under the
-- same key (the latest correction of a line wins): the deal keeps one line
-- item per line, with the corrected quantity and price, and a cancelled line
-- (quantity 0) leaves the view, so its line item is archived.  A correction
-- has no line items of its own, and HubSpot never sees a negative price or
-- quantity.  The line items then add up to the deal's corrected net amount.
CREATE VIEW erp.hs_invoice_lines AS
SELECT * FROM (
	SELECT DISTINCT ON (1)
		   'FV-' || COALESCE(l.corrects_invoice_id, l.invoice_id)::text || '/' || l.line_no::text AS erp_id,
		   l.name, l.qty AS quantity, l.unit_price AS price, l.discount,
		   i.currency AS hs_line_item_currency_code,
		   l.line_no AS hs_position_on_quote,
		   l.sku AS product_erp_id,
		   'FV-' || COALESCE(l.corrects_invoice_id, l.invoice_id) AS invoice_erp_id
	  FROM erp.invoice_lines l JOIN erp.invoices i ON i.id = l.invoice_id
	 ORDER BY 1, i.issued_on DESC, i.id DESC) AS latest
 WHERE quantity <> 0;

-- Orders that came from a sales deal: update that deal, never a new one.
CREATE VIEW erp.hs_sales_orders AS
SELECT 'ZAM-' || o.id::text AS erp_id,
	   o.hubspot_deal_id AS hubspot_id,
	   o.number AS order_number,
	   o.status AS order_status,
	   o.ordered_on AS order_date,
	   o.total AS order_value
  FROM erp.orders o
 WHERE o.hubspot_deal_id IS NOT NULL;

-- Orders from the B2B platform or the web shop: new deals in the sales pipeline.
CREATE VIEW erp.hs_b2b_orders AS
SELECT 'ZAM-' || o.id::text AS erp_id,
	   'Zamówienie ' || o.number || ' (' || o.source || ')' AS dealname,
	   o.number AS order_number,
	   o.status AS order_status,
	   o.ordered_on AS order_date,
	   o.total AS order_value,
	   o.total AS amount,
	   o.ordered_on AS closedate,
	   'default' AS pipeline,
	   CASE o.status WHEN 'fulfilled' THEN 'closedwon' ELSE 'contractsent' END AS dealstage,
	   NULL::text AS hubspot_owner_id,
	   o.customer_id::text AS company_erp_id
  FROM erp.orders o
 WHERE o.hubspot_deal_id IS NULL;

-- Offers made in the ERP: deals with line items in the sales pipeline.
CREATE VIEW erp.hs_offers AS
SELECT 'OF-' || f.id::text AS erp_id,
	   'Oferta ' || f.number AS dealname,
	   f.number AS offer_number,
	   (SELECT round(sum(qty * unit_price), 2) FROM erp.offer_lines WHERE offer_id = f.id) AS amount,
	   f.valid_until AS closedate,
	   'default' AS pipeline,
	   CASE f.status WHEN 'accepted' THEN 'closedwon' WHEN 'rejected' THEN 'closedlost'
					 ELSE 'presentationscheduled' END AS dealstage,
	   f.customer_id::text AS company_erp_id
  FROM erp.offers f;

CREATE VIEW erp.hs_offer_lines AS
SELECT 'OF-' || l.offer_id::text || '/' || l.line_no::text AS erp_id,
	   p.name, l.qty AS quantity, l.unit_price AS price,
	   l.line_no AS hs_position_on_quote,
	   l.sku AS product_erp_id,
	   'OF-' || l.offer_id AS offer_erp_id
  FROM erp.offer_lines l JOIN erp.products p ON p.sku = l.sku;

-- The worker reads a batch of keys with "erp_id = ANY(...)": where erp_id is
-- an expression, an index on the same expression keeps that an index scan
-- (the ::text casts above make the expressions immutable, so indexable).
CREATE INDEX invoices_erp_id ON erp.invoices (('FV-' || id::text));
CREATE INDEX invoice_lines_erp_id ON erp.invoice_lines (('FV-' || COALESCE(corrects_invoice_id, invoice_id)::text || '/' || line_no::text));
CREATE INDEX orders_erp_id ON erp.orders (('ZAM-' || id::text));
CREATE INDEX offers_erp_id ON erp.offers (('OF-' || id::text));
CREATE INDEX offer_lines_erp_id ON erp.offer_lines (('OF-' || offer_id::text || '/' || line_no::text));

-- The mappings
SELECT erpcrm.map('companies', 'erp.hs_companies', 'companies');
SELECT erpcrm.map('contacts', 'erp.hs_contacts', 'contacts', on_delete => 'keep');
SELECT erpcrm.map('products', 'erp.hs_products', 'products');
SELECT erpcrm.map('invoices', 'erp.hs_invoices', 'deals');
SELECT erpcrm.map('invoice_lines', 'erp.hs_invoice_lines', 'line_items');
SELECT erpcrm.map('sales_orders', 'erp.hs_sales_orders', 'deals', on_delete => 'keep');
SELECT erpcrm.map('b2b_orders', 'erp.hs_b2b_orders', 'deals');
SELECT erpcrm.map('offers', 'erp.hs_offers', 'deals');
SELECT erpcrm.map('offer_lines', 'erp.hs_offer_lines', 'line_items');

-- Companies created by hand in HubSpot before the ERP was connected are
-- adopted by domain, contacts by e-mail.
SELECT erpcrm.set_match('companies', 'domain');
SELECT erpcrm.set_match('contacts', 'email');

-- Associations (HubSpot-defined type ids: deal->company 5 is "primary")
SELECT erpcrm.associate('contacts', 'company_erp_id', 'companies');
SELECT erpcrm.associate('invoices', 'company_erp_id', 'companies', 5, inherit_owner => true);
SELECT erpcrm.associate('invoices', 'sales_order_erp_id', 'sales_orders');
SELECT erpcrm.associate('invoices', 'b2b_order_erp_id', 'b2b_orders');
SELECT erpcrm.associate('invoice_lines', 'invoice_erp_id', 'invoices', 20);
SELECT erpcrm.associate('invoice_lines', 'product_erp_id', 'products', as_property => 'hs_product_id');
SELECT erpcrm.associate('b2b_orders', 'company_erp_id', 'companies', 5, inherit_owner => true);
SELECT erpcrm.associate('offers', 'company_erp_id', 'companies', 5);
SELECT erpcrm.associate('offer_lines', 'offer_erp_id', 'offers', 20);
SELECT erpcrm.associate('offer_lines', 'product_erp_id', 'products', as_property => 'hs_product_id');

-- What dirties what
SELECT erpcrm.watch('companies', 'erp.customers', 'id');
SELECT erpcrm.watch('companies', 'erp.invoices', 'customer_id');		-- overdue receivables
SELECT erpcrm.watch('companies', 'erp.payments', 'customer_id');
SELECT erpcrm.watch('contacts', 'erp.persons', 'id');
SELECT erpcrm.watch('products', 'erp.products', 'sku');
SELECT erpcrm.watch('invoices', 'erp.invoices', '''FV-'' || COALESCE(corrects_id, id)');
SELECT erpcrm.watch('invoices', 'erp.payments', '''FV-'' || invoice_id');
SELECT erpcrm.watch('invoice_lines', 'erp.invoice_lines', '''FV-'' || COALESCE(corrects_invoice_id, invoice_id) || ''/'' || line_no');
SELECT erpcrm.watch('sales_orders', 'erp.orders', '''ZAM-'' || id');
SELECT erpcrm.watch('b2b_orders', 'erp.orders', '''ZAM-'' || id');
SELECT erpcrm.watch('offers', 'erp.offers', '''OF-'' || id');
SELECT erpcrm.watch('offers', 'erp.offer_lines', '''OF-'' || offer_id');
SELECT erpcrm.watch('offer_lines', 'erp.offer_lines', '''OF-'' || offer_id || ''/'' || line_no');

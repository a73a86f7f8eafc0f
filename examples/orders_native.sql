-- examples/orders_native.sql: ERP orders as HubSpot's native orders (object
-- type orders, 0-123), with their lines as line items, associated to the
-- company, the buyer and the sales deal the order came from.  Load it after
-- examples/mappings.sql, which keeps the deal variant (sales_orders,
-- b2b_orders).
--
-- Which to choose:
--   native orders   HubSpot's own object for what was bought: its order
--                   pipeline (stages such as processed, shipped), totals,
--                   shipping and payment properties, line items of its own,
--                   commerce reports.  The private app needs the scopes
--                   crm.objects.orders.read/write (and crm.schemas.orders.*
--                   for erpcrm.setup_hubspot()); check the portal's
--                   subscription for orders first (erpcrm.check_connection()
--                   names a missing scope).  erpcrm.setup_hubspot()
--                   creates the order pipeline "Orders (ERP)" with the
--                   ERP's statuses as stages (or finds it by its label),
--                   and the view names pipeline and stages by label
--                   (erpcrm.pipeline_id(), erpcrm.stage_id()).
--   deals           work on every portal, of every tier; sales sees the
--                   order on the deal it came from (sales_orders updates
--                   that deal) or as a new deal in the sales pipeline
--                   (b2b_orders), in the forecast and the deal reports.
-- Both can run together: then the native order is also associated to the
-- deal sales worked on (deal_erp_id below).

CREATE VIEW erp.hs_orders AS
SELECT 'ZAM-' || o.id::text AS erp_id,
	   o.number AS hs_order_name,
	   o.number AS hs_external_order_id,
	   'PLN' AS hs_currency_code,
	   o.total AS hs_total_price,
	   o.ordered_on AS hs_external_created_date,
	   o.source AS hs_source_store,
	   -- the order pipeline and stages setup_hubspot() prepared
	   erpcrm.pipeline_id('Orders (ERP)') AS hs_pipeline,
	   erpcrm.stage_id('Orders (ERP)',
		   CASE o.status WHEN 'in_progress' THEN 'In progress'
						 WHEN 'partially_fulfilled' THEN 'Partially fulfilled'
						 WHEN 'fulfilled' THEN 'Fulfilled'
						 WHEN 'awaiting_payment' THEN 'Awaiting payment'
						 WHEN 'delayed' THEN 'Delayed' END) AS hs_pipeline_stage,
	   o.customer_id::text AS company_erp_id,
	   (SELECT min(p.id)::text FROM erp.persons p WHERE p.customer_id = o.customer_id) AS contact_erp_id,
	   CASE WHEN o.hubspot_deal_id IS NOT NULL THEN 'ZAM-' || o.id::text END AS deal_erp_id
  FROM erp.orders o;

-- The lines of an order: line items of the order (a line item has one
-- parent, so an order's lines are line items of their own, apart from the
-- invoices').
CREATE VIEW erp.hs_order_lines AS
SELECT 'ZAM-' || l.order_id::text || '/' || l.line_no::text AS erp_id,
	   p.name, l.qty AS quantity, l.unit_price AS price,
	   l.sku AS product_erp_id,
	   'ZAM-' || l.order_id::text AS order_erp_id
  FROM erp.order_lines l JOIN erp.products p ON p.sku = l.sku;

CREATE INDEX order_lines_erp_id ON erp.order_lines (('ZAM-' || order_id::text || '/' || line_no::text));

SELECT erpcrm.map('orders', 'erp.hs_orders', 'orders');
SELECT erpcrm.map('order_lines', 'erp.hs_order_lines', 'line_items');

-- HubSpot's default association between orders and each of these
SELECT erpcrm.associate('orders', 'company_erp_id', 'companies');
SELECT erpcrm.associate('orders', 'contact_erp_id', 'contacts');
SELECT erpcrm.associate('orders', 'deal_erp_id', 'sales_orders');
SELECT erpcrm.associate('order_lines', 'order_erp_id', 'orders');
SELECT erpcrm.associate('order_lines', 'product_erp_id', 'products', as_property => 'hs_product_id');

SELECT erpcrm.watch('orders', 'erp.orders', '''ZAM-'' || id');
-- the buyer is the customer's first person: a new person may change it
SELECT erpcrm.watch('orders', 'erp.persons', 'customer_id', key_query => $$
	SELECT 'ZAM-' || o.id FROM erp.orders o WHERE o.customer_id::text = ANY ($1)$$);
SELECT erpcrm.watch('order_lines', 'erp.order_lines', '''ZAM-'' || order_id || ''/'' || line_no');

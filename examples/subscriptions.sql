-- The way back: HubSpot changes the distributor's ERP subscribes to.
-- Load after erp.sql and mappings.sql.  Each handler is an ERP function
-- taking one erpcrm.hubspot_change; erpcrm hands changes to it as the role
-- that subscribed, in a transaction with the cursor, and never writes to the
-- ERP by itself.  The conflict rule: the ERP owns what its mapping views
-- send (an order deal's order_number, order_status, order_date,
-- order_value; a company's name, nip, domain, ...); HubSpot owns the rest
-- (a sales deal's stage, amount and name; the companies sales creates).

-- 1. A deal sales moves to won becomes an ERP order that carries the deal's
--    HubSpot id, for the customer of the deal's company (its primary one
--    first) when erpcrm synced that company from the ERP.  The order view
--    hs_sales_orders then writes the order's number, status and value onto
--    that same deal, and the order's invoices become invoice deals
--    associated to it (mappings.sql, steps 8 and 10).
CREATE SEQUENCE erp.orders_from_deals START 900000;

CREATE FUNCTION erp.deal_won(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
	-- the deal's companies: HubSpot ids, and the ERP id of those the
	-- "companies" mapping synced; typeId 5 is HubSpot's primary company
	customer integer := (SELECT (a ->> 'erp_id')::integer
						   FROM jsonb_array_elements(c.associations -> 'companies') a
						  WHERE a ->> 'mapping' = 'companies'
						  ORDER BY (a -> 'types') @> '[{"typeId": 5}]' DESC
						  LIMIT 1);
BEGIN
	IF EXISTS (SELECT FROM erp.orders o WHERE o.hubspot_deal_id = c.hubspot_id) THEN
		-- its amount changed after it was won: the order follows
		UPDATE erp.orders o SET total = COALESCE((c.properties ->> 'amount')::numeric, o.total)
		 WHERE o.hubspot_deal_id = c.hubspot_id AND 'amount' = ANY (c.changed);
		RETURN;
	END IF;
	INSERT INTO erp.orders (id, number, customer_id, ordered_on, status, total, source, hubspot_deal_id)
	VALUES (nextval('erp.orders_from_deals'), 'HS/' || c.hubspot_id, customer, current_date,
			'in_progress', COALESCE((c.properties ->> 'amount')::numeric, 0), 'sales', c.hubspot_id);
END
$$;

SELECT erpcrm.subscribe('won_deals', 'deals', '{dealname,amount,dealstage,pipeline}',
	filter => '[{"propertyName": "pipeline", "operator": "EQ", "value": "default"},
				{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]',
	handler => 'erp.deal_won(erpcrm.hubspot_change)',
	associations => '{companies}');

-- 2. Companies that sales creates in HubSpot become ERP prospects, unless
--    the ERP knows them already by NIP (digits only) or by domain; then the
--    HubSpot record is noted on the customer for the sales office.
CREATE TABLE erp.prospects (
	hubspot_id		text PRIMARY KEY,
	name			text,
	nip				text,
	domain			text,
	customer_id		integer,				-- the customer it matched, if any
	seen_at			timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION erp.company_from_hubspot(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
	c_nip text := NULLIF(regexp_replace(COALESCE(c.properties ->> 'nip', ''), '[^0-9]', '', 'g'), '');
	c_domain text := NULLIF(lower(c.properties ->> 'domain'), '');
	known integer;
BEGIN
	SELECT k.id INTO known FROM erp.customers k
	 WHERE (c_nip IS NOT NULL AND regexp_replace(COALESCE(k.nip, ''), '[^0-9]', '', 'g') = c_nip)
		OR (c_domain IS NOT NULL AND lower(k.domain) = c_domain)
	 ORDER BY k.id LIMIT 1;
	INSERT INTO erp.prospects (hubspot_id, name, nip, domain, customer_id)
	VALUES (c.hubspot_id, c.properties ->> 'name', c_nip, c_domain, known)
	ON CONFLICT (hubspot_id) DO UPDATE
	   SET name = excluded.name, nip = excluded.nip, domain = excluded.domain,
		   customer_id = excluded.customer_id, seen_at = now();
END
$$;

SELECT erpcrm.subscribe('hubspot_companies', 'companies', '{name,nip,domain}',
	handler => 'erp.company_from_hubspot(erpcrm.hubspot_change)');

-- 3. Contacts that sales creates in HubSpot are kept for the sales office,
--    with the ERP customer of their company when erpcrm synced it (else
--    the company's HubSpot id: a prospect's, perhaps).  The ERP's own
--    contacts (erp.persons) never come back: their e-mail and names are
--    the ERP's.  Contacts are searched by lastmodifieddate, not
--    hs_lastmodifieddate: erpcrm knows.
CREATE TABLE erp.prospect_contacts (
	hubspot_id			text PRIMARY KEY,
	email				text,
	firstname			text,
	lastname			text,
	customer_id			integer,			-- the ERP customer of its company
	company_hubspot_id	text,				-- its company in HubSpot
	seen_at				timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION erp.contact_from_hubspot(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
	company jsonb := (SELECT a FROM jsonb_array_elements(c.associations -> 'companies') a
					   ORDER BY a ->> 'erp_id' IS NULL, (a -> 'types') @> '[{"typeId": 1}]' DESC
					   LIMIT 1);
BEGIN
	INSERT INTO erp.prospect_contacts (hubspot_id, email, firstname, lastname, customer_id, company_hubspot_id)
	VALUES (c.hubspot_id, lower(c.properties ->> 'email'), c.properties ->> 'firstname',
			c.properties ->> 'lastname',
			CASE WHEN company ->> 'mapping' = 'companies' THEN (company ->> 'erp_id')::integer END,
			company ->> 'hubspot_id')
	ON CONFLICT (hubspot_id) DO UPDATE
	   SET email = excluded.email, firstname = excluded.firstname, lastname = excluded.lastname,
		   customer_id = excluded.customer_id, company_hubspot_id = excluded.company_hubspot_id,
		   seen_at = now();
END
$$;

SELECT erpcrm.subscribe('hubspot_contacts', 'contacts', '{email,firstname,lastname}',
	handler => 'erp.contact_from_hubspot(erpcrm.hubspot_change)',
	associations => '{companies}');

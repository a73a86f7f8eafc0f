-- tests/demo/data.sql: sample data of the demo ERP (a Polish distributor of
-- building and installation materials): 80 customers, about 200 contact
-- persons, 320 products with standard prices.  Deterministic: the same rows
-- on every run.

-- Generators used here and by burst.sql.
CREATE SCHEMA erp_sample;

-- Polish letters to ASCII, for e-mail addresses and domains.
CREATE FUNCTION erp_sample.ascii(s text) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN translate(lower(s), 'ąćęłńóśźż', 'acelnoszz');

-- The i-th element of a list, round robin.
CREATE FUNCTION erp_sample.pick(a text[], i integer) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN a[1 + i % cardinality(a)];

-- A valid NIP (tax id): tax office prefix, six digits, check digit
-- (weights 6 5 7 2 3 4 5 6 7, sum mod 11; 10 is never a check digit).
CREATE FUNCTION erp_sample.nip(i integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	w integer[] := '{6,5,7,2,3,4,5,6,7}';
	base text;
	s integer;
BEGIN
	FOR attempt IN 0..9 LOOP
		base := erp_sample.pick('{526,527,521,113,701,779,676,894,583,851,954,631}', i)
			 || lpad(((i * 48271 + attempt * 7) % 1000000)::text, 6, '0');
		s := 0;
		FOR k IN 1..9 LOOP
			s := s + substr(base, k, 1)::integer * w[k];
		END LOOP;
		IF s % 11 < 10 THEN
			RETURN base || (s % 11)::text;
		END IF;
	END LOOP;
	RAISE EXCEPTION 'no NIP for %', i;
END
$$;

CREATE FUNCTION erp_sample.first_name(i integer, female boolean) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN female
	THEN erp_sample.pick('{Anna,Maria,Katarzyna,Małgorzata,Agnieszka,Barbara,Ewa,Krystyna,Elżbieta,Magdalena,Joanna,Zofia,Aleksandra,Monika,Beata,Dorota}', i)
	ELSE erp_sample.pick('{Piotr,Krzysztof,Andrzej,Tomasz,Paweł,Jan,Michał,Marcin,Stanisław,Grzegorz,Józef,Łukasz,Adam,Zbigniew,Jerzy,Mateusz}', i)
END;

-- Surnames in the masculine form; -ski/-cki/-dzki become -ska/-cka/-dzka.
CREATE FUNCTION erp_sample.last_name(i integer, female boolean) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN female
	THEN regexp_replace(erp_sample.pick('{Nowak,Kowalski,Wiśniewski,Wójcik,Kowalczyk,Kamiński,Lewandowski,Zieliński,Szymański,Woźniak,Dąbrowski,Kozłowski,Jankowski,Mazur,Kwiatkowski,Krawczyk,Piotrowski,Grabowski,Zając,Pawłowski,Michalski,Król,Wieczorek,Jabłoński}', i), '(sk|ck|dzk)i$', '\1a')
	ELSE erp_sample.pick('{Nowak,Kowalski,Wiśniewski,Wójcik,Kowalczyk,Kamiński,Lewandowski,Zieliński,Szymański,Woźniak,Dąbrowski,Kozłowski,Jankowski,Mazur,Kwiatkowski,Krawczyk,Piotrowski,Grabowski,Zając,Pawłowski,Michalski,Król,Wieczorek,Jabłoński}', i)
END;

-- Customer i: brand, legal form, city, price level and credit limit.
CREATE FUNCTION erp_sample.brand(i integer) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN erp_sample.pick('{Bud,Stal,Elektro,Termo,Hydro,Drew,Instal,Agro,Dach,Ceram}', i)
	|| erp_sample.pick('{-Mat,ex,-Pol,-Tech,max,-Serwis,plast,-Trans,-Hurt}', i / 10);

CREATE PROCEDURE erp_sample.add_customers(first_id integer, last_id integer)
LANGUAGE sql
BEGIN ATOMIC
	INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit,
							   customer_since, last_order_at, vip, active, city)
	SELECT i,
		   CASE WHEN i % 7 = 0
				THEN 'P.H.U. ' || erp_sample.brand(i) || ' ' || erp_sample.first_name(i, false)
					 || ' ' || erp_sample.last_name(i, false)
				ELSE erp_sample.brand(i) || ' '
					 || erp_sample.pick('{"sp. z o.o.",S.A.,sp.j.,"sp. z o.o. sp.k."}', i) END,
		   erp_sample.nip(i),
		   CASE WHEN i % 7 <> 0 THEN lower(erp_sample.brand(i)) || '.pl' END,
		   lvl,
		   CASE lvl WHEN 'A' THEN 100000 + (i % 5) * 25000
					WHEN 'B' THEN 30000 + (i % 4) * 10000
					ELSE 5000 + (i % 3) * 2500 END,
		   date '2008-01-01' + (i * 97) % 6000,
		   date_trunc('minute', now() - make_interval(days => (i * 13) % 90, mins => (i * 37) % 600)),
		   lvl = 'A' AND i % 5 >= 2,
		   i NOT IN (37, 58),		-- two customers blocked for unpaid invoices
		   erp_sample.pick('{Warszawa,Kraków,Łódź,Wrocław,Poznań,Gdańsk,Szczecin,Bydgoszcz,Lublin,Katowice,Białystok,Rzeszów,Kielce,Olsztyn,Opole,Toruń}', i * 7)
	  FROM generate_series(first_id, last_id) AS i,
		   LATERAL (SELECT CASE WHEN i % 10 < 2 THEN 'A' WHEN i % 10 < 6 THEN 'B' ELSE 'C' END) AS l(lvl);

	-- two or three contact persons per customer
	INSERT INTO erp.persons (id, customer_id, email, first_name, last_name, jobtitle, phone)
	SELECT c.id * 10 + k, c.id,
		   CASE WHEN c.domain IS NULL
				THEN erp_sample.ascii(fn) || '.' || erp_sample.ascii(ln) || '.' || c.id || '@wp.pl'
				ELSE erp_sample.ascii(fn) || '.' || erp_sample.ascii(ln) || '@' || c.domain END,
		   fn, ln,
		   CASE WHEN c.domain IS NULL THEN 'Właściciel'
				ELSE erp_sample.pick('{"Kierownik zakupów","Specjalista ds. zaopatrzenia","Prezes zarządu",Księgowość,"Kierownik budowy",Magazyn,"Dyrektor handlowy"}', c.id + k * 3) END,
		   format('+48 %s %s %s', 500 + (c.id * 10 + k) * 7 % 300,
				  lpad(((c.id * 10 + k) * 389 % 1000)::text, 3, '0'),
				  lpad(((c.id * 10 + k) * 701 % 1000)::text, 3, '0'))
	  FROM erp.customers c,
		   generate_series(1, 2 + c.id % 2) AS k,
		   LATERAL (SELECT (c.id + k) % 2 = 0 AND c.domain IS NOT NULL AS female) AS g,
		   -- a sole trader's contact is the owner named in the company name
		   LATERAL (SELECT CASE WHEN c.domain IS NULL THEN erp_sample.first_name(c.id, false)
								ELSE erp_sample.first_name(c.id * 3 + k, g.female) END AS fn,
						   CASE WHEN c.domain IS NULL THEN erp_sample.last_name(c.id, false)
								ELSE erp_sample.last_name(c.id * 7 + k * 5, g.female) END AS ln) AS n
	 WHERE c.id BETWEEN first_id AND last_id
	   AND (c.domain IS NOT NULL OR k = 1);	-- a sole trader is one person
END;

CALL erp_sample.add_customers(1, 80);

-- Private buyers from the web shop: contacts without a company.
INSERT INTO erp.persons (id, customer_id, email, first_name, last_name, phone)
SELECT 9000 + i, NULL,
	   erp_sample.ascii(fn) || '.' || erp_sample.ascii(ln) || '.' || i || '@'
		   || erp_sample.pick('{gmail.com,wp.pl,onet.pl,o2.pl,interia.pl}', i),
	   fn, ln, format('+48 60%s %s %s', i % 10, lpad((i * 211 % 1000)::text, 3, '0'),
					  lpad((i * 577 % 1000)::text, 3, '0'))
  FROM generate_series(1, 10) AS i,
	   LATERAL (SELECT erp_sample.first_name(i * 5, i % 2 = 0) AS fn,
					   erp_sample.last_name(i * 11, i % 2 = 0) AS ln) AS n;

-- Products: 64 articles from 12 categories, each from five producers.
INSERT INTO erp.products (sku, name, price, active, category)
SELECT c.code || '-' || lpad((row_number() OVER (PARTITION BY c.code ORDER BY v.n, p.n))::text, 3, '0'),
	   format(c.pattern, v.variant) || ' – ' || p.producer,
	   round(c.base * (1 + (v.n - 1) * 0.35) * (0.85 + p.n * 0.06), 2),
	   row_number() OVER (ORDER BY c.code, v.n, p.n) % 53 <> 0,	-- a few are discontinued: not for HubSpot
	   c.category
  FROM (VALUES
		('SRB', 'Śruby', 'Śruba sześciokątna %s ocynkowana', '{M6x30,M6x40,M8x40,M8x60,M10x50,M10x80,M12x60,M12x100}'::text[], 0.18),
		('WKR', 'Wkręty', 'Wkręt do drewna %s (100 szt.)', '{"3,5x30",4x40,4x50,5x60,5x80,6x100}', 9.90),
		('KOL', 'Kołki', 'Kołek rozporowy nylonowy %s (50 szt.)', '{6x30,8x40,8x60,10x60,10x80,12x100}', 7.50),
		('KAB', 'Kable', 'Przewód YDYp 450/750 V %s (100 m)', '{"2x1,5","3x1,5","3x2,5","4x1,5","5x2,5",5x4}', 189.00),
		('RUR', 'Instalacje', 'Rura PEX-AL-PEX %s (zwój 100 m)', '{16x2,20x2,"25x2,5",32x3}', 310.00),
		('ZAW', 'Armatura', 'Zawór kulowy mosiężny %s', '{"1/2\"","3/4\"","1\"","5/4\"","6/4\"","2\""}', 24.50),
		('FAR', 'Farby', 'Farba lateksowa %s 10 l', '{biała,kremowa,szara,beżowa,grafitowa,miętowa}', 129.00),
		('KLE', 'Chemia budowlana', 'Klej do płytek %s 25 kg', '{C1T,C2T,C2TE,"C2TE S1","C2TE S2"}', 32.90),
		('CEM', 'Materiały sypkie', 'Cement %s 25 kg', '{"CEM I 42,5R","CEM II/B-S 32,5R","CEM II/A-LL 42,5R"}', 23.50),
		('NAR', 'Narzędzia', 'Wiertło do betonu SDS-plus %s', '{6x110,8x160,10x160,12x210,14x260,16x310}', 14.90),
		('IZO', 'Izolacje', 'Wełna mineralna %s (paczka)', '{"5 cm","10 cm","15 cm","20 cm"}', 89.00),
		('PLY', 'Płyty', 'Płyta gipsowo-kartonowa %s 1200x2600', '{"12,5 mm GKB","12,5 mm GKBI","12,5 mm GKF","15 mm GKF"}', 28.40)
	   ) AS c(code, category, pattern, variants, base),
	   unnest(c.variants) WITH ORDINALITY AS v(variant, n),
	   unnest('{Ferro,Bimet,Tech-Pol,Kers,Polbud}'::text[]) WITH ORDINALITY AS p(producer, n);

SELECT (SELECT count(*) FROM erp.customers) AS customers,
	   (SELECT count(*) FROM erp.persons) AS persons,
	   (SELECT count(*) FROM erp.products) AS products,
	   (SELECT count(*) FROM erp.hs_companies) + (SELECT count(*) FROM erp.hs_contacts)
	   + (SELECT count(*) FROM erp.hs_products) AS rows_for_hubspot;

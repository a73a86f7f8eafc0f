-- pgbench: one invoice header per transaction
\set c random(1, 5000)
INSERT INTO bench.invoices (number, customer_id, issued_on, due_on, currency, net, vat, gross, status, notes)
VALUES ('FV/2025/' || :client_id || '/' || :c, :c, current_date, current_date + 14, 'PLN',
        100.00, 23.00, 123.00, 'issued', 'payment by transfer');

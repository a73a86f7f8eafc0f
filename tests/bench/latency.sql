-- pgbench -R: one company per transaction, its commit time stored in the row
INSERT INTO bench.lat_customers (name, domain, committed_at)
VALUES ('Latency ' || :client_id, 'latency.example', clock_timestamp());

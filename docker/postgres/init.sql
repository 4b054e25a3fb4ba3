-- Runs once, when the postgres container initialises an empty data directory
-- (mounted into /docker-entrypoint-initdb.d by docker-compose.yml).
-- One database per service: each service owns its schema and migrates it at start. The services
-- also create their database if it is missing; this only makes the stack ready from the start.
CREATE DATABASE catalog_cache;
CREATE DATABASE orders;
CREATE DATABASE notifications;
CREATE DATABASE report_exporter;

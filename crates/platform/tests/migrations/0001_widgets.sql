CREATE TABLE widgets (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL
);

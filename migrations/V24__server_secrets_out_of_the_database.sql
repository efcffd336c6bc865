-- The server's secrets (token signing keys, the login throttle key) no
-- longer live in the database (issue 24, item 1): they are configured or
-- kept in a file (src/platform/server_secrets.rs), which the first start
-- of this release fills from `server_secrets` before deleting its rows
-- and rewriting the table. The database keeps only fingerprints
-- (SHA-256), so that instances with different secrets refuse to start.
CREATE TABLE server_secret_fingerprints (
    name text PRIMARY KEY,
    fingerprint text NOT NULL
);

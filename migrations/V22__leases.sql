-- Leadership by lease (src/platform/leases.rs): one row per task that
-- must run on one instance at a time (log consumers, the machine pruner,
-- LDAP syncs). A lease ends by the server's clock at `expires_at` unless
-- its holder renews it, whatever became of the holder; session advisory
-- locks, used before, lived as long as the holder's server session,
-- which a frozen backend or a proxy that keeps the server side open can
-- keep alive for ever.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder uuid NOT NULL,
    expires_at timestamptz NOT NULL
);

-- An address belongs to one user, whatever its origin (issue 24, item 6):
-- the claim on local accounts' addresses becomes one on every active
-- user's (src/log/event_store/claims.rs, scope `email`). LDAP and OIDC
-- users linked before this release get theirs here, oldest first; where
-- two already share an address (an OIDC address with a trailing space
-- passed the old check), the older keeps it and the other's next change
-- of address, or first log-in under a new one, claims afresh.
UPDATE unique_claims SET scope = 'email' WHERE scope = 'local_email';

INSERT INTO unique_claims (scope, value, owner_stream)
SELECT DISTINCT ON (lower(btrim(email))) 'email', lower(btrim(email)), 'user-' || id::text
FROM users
WHERE deleted_at IS NULL AND email IS NOT NULL AND provider <> 'local'
ORDER BY lower(btrim(email)), created_at, id
ON CONFLICT (scope, value) DO NOTHING;

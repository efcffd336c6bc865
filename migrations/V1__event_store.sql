-- The event log: append-only, the source of truth.
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Id of the writing transaction. Readers deliver events ordered by
    -- (transaction_id, position) and only below the oldest transaction still
    -- in flight, so an event that commits late is never skipped.
    transaction_id  BIGINT      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    stream_id       TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL CHECK (stream_version >= 1),
    event_id        UUID        NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 1),
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_unique UNIQUE (event_id)
);

CREATE INDEX events_delivery_order ON events (transaction_id, position);

CREATE FUNCTION refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_event_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();

-- Per-subject keys that seal personal data inside events. Kept outside the
-- log on purpose: destroying a key (key = NULL) makes that subject's
-- personal data in the immutable log unreadable.
CREATE TABLE pii_keys (
    subject_id   UUID PRIMARY KEY,
    key          BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    destroyed_at TIMESTAMPTZ,
    CHECK ((key IS NULL) = (destroyed_at IS NOT NULL))
);

-- Values that must be unique across streams (a local account's email, a
-- provisioning id). Claimed in the same transaction as the event that needs
-- them, so uniqueness never depends on a lagging read model.
CREATE TABLE unique_claims (
    scope        TEXT NOT NULL,
    value        TEXT NOT NULL,
    owner_stream TEXT NOT NULL,
    claimed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, value)
);
CREATE INDEX unique_claims_owner ON unique_claims (owner_stream);

-- How far each projector has read the log, in delivery order.
CREATE TABLE projection_checkpoints (
    name           TEXT PRIMARY KEY,
    transaction_id BIGINT NOT NULL,
    position       BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Keys warden generates for itself when the config gives none (the access
-- token signing key), shared by every instance on this database.
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

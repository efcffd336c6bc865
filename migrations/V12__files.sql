-- Job files: inputs users upload (a Project-W job's audio) and results
-- (transcripts), kept outside the log in chunks; the log records only a
-- file's id, hash, size, media type and name. Operational state, not a
-- read model: replay does not rebuild it, deleting a user deletes theirs.
CREATE TABLE files (
    id         UUID PRIMARY KEY,
    owner_id   UUID        NOT NULL,
    name       TEXT,
    media_type TEXT        NOT NULL,
    size       BIGINT      NOT NULL,
    sha256     TEXT        NOT NULL,
    complete   BOOLEAN     NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX files_owner ON files (owner_id);
CREATE TABLE file_chunks (
    file_id UUID    NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    data    BYTEA   NOT NULL,
    PRIMARY KEY (file_id, seq)
);

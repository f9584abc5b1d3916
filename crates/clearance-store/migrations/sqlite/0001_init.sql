CREATE TABLE principals (
    id          TEXT PRIMARY KEY NOT NULL,
    roles       TEXT NOT NULL,            -- JSON array of role names
    created_at  INTEGER NOT NULL
);

-- API keys are stored only as SHA-256; the key itself is shown once and forgotten.
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY NOT NULL,
    principal_id  TEXT NOT NULL REFERENCES principals (id),
    key_hash      BLOB NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_principal ON api_keys (principal_id);

CREATE TABLE policy_versions (
    version        TEXT PRIMARY KEY NOT NULL,   -- sha256:<hex> of the canonical bundle
    schema_text    TEXT NOT NULL,
    policies_text  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE active_policy (
    singleton     INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 0),
    version       TEXT NOT NULL REFERENCES policy_versions (version),
    activated_at  INTEGER NOT NULL
);

-- The audit log: RFC 8785 canonical JSON events, indexed from 0 without gaps.
CREATE TABLE log_entries (
    idx          INTEGER PRIMARY KEY NOT NULL CHECK (idx >= 0),
    entry        BLOB NOT NULL,
    appended_at  INTEGER NOT NULL
);
CREATE TRIGGER log_entries_no_update BEFORE UPDATE ON log_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER log_entries_no_delete BEFORE DELETE ON log_entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Written by readiness checks to prove the database accepts writes.
CREATE TABLE health (
    id          INTEGER PRIMARY KEY NOT NULL CHECK (id = 0),
    checked_at  INTEGER NOT NULL
);

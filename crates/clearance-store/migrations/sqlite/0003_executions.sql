-- One row per allowed execution request, written in the same transaction as its decision
-- entry. `state` moves authorized -> started -> completed | failed, or to revoked; the
-- conditional UPDATE of that move is what makes a clearance single-use.
CREATE TABLE executions (
    id               TEXT PRIMARY KEY NOT NULL,
    principal_id     TEXT NOT NULL,
    parent_id        TEXT REFERENCES executions (id),
    root_principal   TEXT NOT NULL,
    depth            INTEGER NOT NULL CHECK (depth >= 0),
    action           TEXT NOT NULL,
    resource_type    TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    -- The request's arguments and context as JSON, for re-evaluation at renewal.
    request          TEXT NOT NULL,
    arguments_digest TEXT NOT NULL,
    environment      TEXT,
    delegation       TEXT,
    kid              TEXT NOT NULL,
    policy_version   TEXT NOT NULL,
    issued_at        INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('authorized', 'started', 'completed', 'failed', 'revoked')),
    started_at       INTEGER,
    lease_until      INTEGER,
    finished_at      INTEGER,
    exit_code        INTEGER,
    reason           TEXT
);
CREATE INDEX executions_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX executions_principal ON executions (principal_id, state);
CREATE INDEX executions_kid ON executions (kid, state);

-- Revocations as pushed to enforcement points: seq is their monotonic sequence number.
CREATE TABLE revocations (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('execution', 'principal', 'signing_key')),
    target  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX revocations_target ON revocations (kind, target);
CREATE TRIGGER revocations_no_update BEFORE UPDATE ON revocations
BEGIN SELECT RAISE(ABORT, 'revocations are append-only'); END;
CREATE TRIGGER revocations_no_delete BEFORE DELETE ON revocations
BEGIN SELECT RAISE(ABORT, 'revocations are append-only'); END;

-- A revoked principal can neither authenticate nor be given new keys.
ALTER TABLE principals ADD COLUMN revoked_at INTEGER;

-- Registered runtime environments and their latest accepted attestation.
CREATE TABLE environments (
    id                     TEXT PRIMARY KEY NOT NULL,
    attestation_key        TEXT NOT NULL,
    expect                 TEXT NOT NULL,  -- JSON: name -> "sha256:<hex>"
    labels                 TEXT NOT NULL,  -- JSON: key -> value
    created_at             INTEGER NOT NULL,
    quarantined_at         INTEGER,
    quarantine_reason      TEXT,
    attested_at            INTEGER,
    measurements           TEXT,           -- JSON, as attested
    measurement_digest     TEXT,
    matches                INTEGER,
    mismatched             TEXT,           -- JSON list of names
    attestation_log_index  INTEGER
);

-- One-time attestation challenges; `used_at` is set by the attestation that answers one.
CREATE TABLE challenges (
    nonce        TEXT PRIMARY KEY NOT NULL,
    environment  TEXT NOT NULL REFERENCES environments (id),
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);
CREATE INDEX challenges_expiry ON challenges (expires_at);
CREATE INDEX executions_environment ON executions (environment, state) WHERE environment IS NOT NULL;

-- Quarantining an environment is a revocation of kind `environment`: widen the check.
-- (SQLite cannot alter a CHECK constraint, so the table is rebuilt with its rows.)
CREATE TABLE revocations_v2 (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('execution', 'principal', 'signing_key', 'environment')),
    target  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    at      INTEGER NOT NULL
);
INSERT INTO revocations_v2 (seq, kind, target, reason, at) SELECT seq, kind, target, reason, at FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_v2 RENAME TO revocations;
CREATE INDEX revocations_target ON revocations (kind, target);
CREATE TRIGGER revocations_no_update BEFORE UPDATE ON revocations
BEGIN SELECT RAISE(ABORT, 'revocations are append-only'); END;
CREATE TRIGGER revocations_no_delete BEFORE DELETE ON revocations
BEGIN SELECT RAISE(ABORT, 'revocations are append-only'); END;

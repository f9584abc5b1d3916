-- The same tables as the SQLite schema (migrations/sqlite), in one step: 64-bit integers
-- for every number, BYTEA for hashes and entries, TEXT for JSON.

CREATE TABLE principals (
    id          TEXT PRIMARY KEY NOT NULL,
    roles       TEXT NOT NULL,            -- JSON array of role names
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- API keys are stored only as SHA-256; the key itself is shown once and forgotten.
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY NOT NULL,
    principal_id  TEXT NOT NULL REFERENCES principals (id),
    key_hash      BYTEA NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_principal ON api_keys (principal_id);

CREATE TABLE policy_versions (
    version        TEXT PRIMARY KEY NOT NULL,   -- sha256:<hex> of the canonical bundle
    schema_text    TEXT NOT NULL,
    policies_text  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE active_policy (
    singleton     BIGINT PRIMARY KEY NOT NULL CHECK (singleton = 0),
    version       TEXT NOT NULL REFERENCES policy_versions (version),
    activated_at  BIGINT NOT NULL
);

CREATE FUNCTION clearance_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

-- The audit log: RFC 8785 canonical JSON events, indexed from 0 without gaps.
CREATE TABLE log_entries (
    idx           BIGINT PRIMARY KEY NOT NULL CHECK (idx >= 0),
    entry         BYTEA NOT NULL,
    appended_at   BIGINT NOT NULL,
    execution_id  TEXT
);
CREATE INDEX log_entries_execution ON log_entries (execution_id) WHERE execution_id IS NOT NULL;
CREATE TRIGGER log_entries_append_only BEFORE UPDATE OR DELETE ON log_entries
    FOR EACH ROW EXECUTE FUNCTION clearance_append_only();

-- Perfect subtrees of the RFC 6962 tree over log_entries: node (level, idx) covers leaves
-- [idx * 2^level, (idx + 1) * 2^level). Level 0 holds the leaf hashes.
CREATE TABLE log_nodes (
    level  BIGINT NOT NULL CHECK (level >= 0 AND level < 64),
    idx    BIGINT NOT NULL CHECK (idx >= 0),
    hash   BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER log_nodes_append_only BEFORE UPDATE OR DELETE ON log_nodes
    FOR EACH ROW EXECUTE FUNCTION clearance_append_only();

-- Every checkpoint the log signed, so consistency can be proven between any two.
CREATE TABLE checkpoints (
    size        BIGINT PRIMARY KEY NOT NULL CHECK (size >= 0),
    root        BYTEA NOT NULL CHECK (length(root) = 32),
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION clearance_append_only();

-- Issued clearances, for evidence bundles.
CREATE TABLE clearances (
    execution_id  TEXT PRIMARY KEY NOT NULL,
    token         TEXT NOT NULL
);

-- Settings fixed at first start (the log origin, the keys every node must share).
CREATE TABLE meta (
    key    TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);

-- Written by readiness checks to prove the database accepts writes.
CREATE TABLE health (
    id          BIGINT PRIMARY KEY NOT NULL CHECK (id = 0),
    checked_at  BIGINT NOT NULL
);

-- One row per allowed execution request, written in the same transaction as its decision
-- entry; the state machine that moves it lives in clearance-core.
CREATE TABLE executions (
    id               TEXT PRIMARY KEY NOT NULL,
    principal_id     TEXT NOT NULL,
    parent_id        TEXT REFERENCES executions (id),
    root_principal   TEXT NOT NULL,
    depth            BIGINT NOT NULL CHECK (depth >= 0),
    action           TEXT NOT NULL,
    resource_type    TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    request          TEXT NOT NULL,
    arguments_digest TEXT NOT NULL,
    environment      TEXT,
    delegation       TEXT,
    kid              TEXT NOT NULL,
    policy_version   TEXT NOT NULL,
    issued_at        BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('authorized', 'started', 'completed', 'failed', 'revoked')),
    started_at       BIGINT,
    lease_until      BIGINT,
    finished_at      BIGINT,
    exit_code        BIGINT,
    reason           TEXT
);
CREATE INDEX executions_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX executions_principal ON executions (principal_id, state);
CREATE INDEX executions_kid ON executions (kid, state);
CREATE INDEX executions_environment ON executions (environment, state) WHERE environment IS NOT NULL;

-- Revocations as pushed to enforcement points: seq is assigned under the log's write lock,
-- so it follows commit order without gaps.
CREATE TABLE revocations (
    seq     BIGINT PRIMARY KEY NOT NULL CHECK (seq > 0),
    kind    TEXT NOT NULL CHECK (kind IN ('execution', 'principal', 'signing_key', 'environment')),
    target  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX revocations_target ON revocations (kind, target);
CREATE TRIGGER revocations_append_only BEFORE UPDATE OR DELETE ON revocations
    FOR EACH ROW EXECUTE FUNCTION clearance_append_only();

-- Registered runtime environments and their latest accepted attestation.
CREATE TABLE environments (
    id                     TEXT PRIMARY KEY NOT NULL,
    attestation_key        TEXT NOT NULL,
    expect                 TEXT NOT NULL,
    labels                 TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    quarantined_at         BIGINT,
    quarantine_reason      TEXT,
    attested_at            BIGINT,
    measurements           TEXT,
    measurement_digest     TEXT,
    matches                BIGINT,
    mismatched             TEXT,
    attestation_log_index  BIGINT
);

-- One-time attestation challenges; `used_at` is set by the attestation that answers one.
CREATE TABLE challenges (
    nonce        TEXT PRIMARY KEY NOT NULL,
    environment  TEXT NOT NULL REFERENCES environments (id),
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX challenges_expiry ON challenges (expires_at);

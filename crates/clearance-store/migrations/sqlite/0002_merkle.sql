-- Perfect subtrees of the RFC 6962 tree over log_entries: node (level, idx) covers leaves
-- [idx * 2^level, (idx + 1) * 2^level). Level 0 holds the leaf hashes. Written in the same
-- transaction as the entries they cover.
CREATE TABLE log_nodes (
    level  INTEGER NOT NULL CHECK (level >= 0 AND level < 64),
    idx    INTEGER NOT NULL CHECK (idx >= 0),
    hash   BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TRIGGER log_nodes_no_update BEFORE UPDATE ON log_nodes
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER log_nodes_no_delete BEFORE DELETE ON log_nodes
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- Which execution an entry belongs to, for evidence bundles.
ALTER TABLE log_entries ADD COLUMN execution_id TEXT;
CREATE INDEX log_entries_execution ON log_entries (execution_id) WHERE execution_id IS NOT NULL;

-- Every checkpoint the log signed, so consistency can be proven between any two.
CREATE TABLE checkpoints (
    size        INTEGER PRIMARY KEY NOT NULL CHECK (size >= 0),
    root        BLOB NOT NULL CHECK (length(root) = 32),
    note        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;

-- Issued clearances, for evidence bundles. Each is single-use and expires within minutes.
CREATE TABLE clearances (
    execution_id  TEXT PRIMARY KEY NOT NULL,
    token         TEXT NOT NULL
);

-- Settings fixed at first start (the log origin).
CREATE TABLE meta (
    key    TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);

-- The log index of the entry that last released an environment from quarantine: only an
-- attestation recorded after it makes the environment trusted again.
ALTER TABLE environments ADD COLUMN released_log_index INTEGER;

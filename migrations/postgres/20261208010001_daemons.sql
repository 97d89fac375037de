-- One row per running daemon, beaten every worker.heartbeat_interval: mail claimed by a daemon
-- whose beat is older than missed_heartbeats x heartbeat_interval is given back at once
-- instead of waiting for worker.sending_lease. `name` is the claimant named in
-- outbox.claimed_by; host, pid and version say where it runs (and let a restart on the same
-- host tell that its predecessor is gone). Instants are ms since the Unix epoch, UTC.
CREATE TABLE daemons (
    name         TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    version      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    last_beat_at BIGINT NOT NULL
);

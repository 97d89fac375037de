-- The relay breaker of each running daemon while its relay is not up (a row per daemon
-- instance, removed when the relay is back or the daemon stops cleanly), so that `jobs` and
-- `check`, other processes, can say the relay is down and since when.
CREATE TABLE relay_breakers (
    daemon         TEXT PRIMARY KEY NOT NULL,
    relay          TEXT NOT NULL,
    state          TEXT NOT NULL,
    down_since     BIGINT NOT NULL,
    probes_failed  BIGINT NOT NULL,
    last_error     TEXT,
    updated_at     BIGINT NOT NULL
);

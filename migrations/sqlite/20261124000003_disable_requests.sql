-- Every request to disable auto-renew and the decision taken, with the state it was decided on.
CREATE TABLE disable_requests (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The caller's key for the request (a job's, or one made up for a CLI call): the same key
    -- is decided once.
    request_key         TEXT NOT NULL UNIQUE,
    subscription_id     TEXT NOT NULL REFERENCES subscriptions (id),
    requested_by        TEXT NOT NULL,
    requested_at        INTEGER NOT NULL,
    decided_at          INTEGER NOT NULL,
    via                 TEXT NOT NULL,
    seen_assigned       INTEGER NOT NULL,
    seen_term_end       TEXT NOT NULL,
    seen_auto_renew     INTEGER NOT NULL,
    decision            TEXT NOT NULL CHECK (decision IN ('accepted', 'rejected')),
    reason              TEXT,
    cutoff_at           INTEGER,
    effective_term_end  TEXT,
    renews_once_more    INTEGER NOT NULL
);
CREATE INDEX disable_requests_subscription ON disable_requests (subscription_id);

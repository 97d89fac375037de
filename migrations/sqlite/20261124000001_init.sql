-- Resellers, customers and subscriptions as the marketplace describes them, plus the outbox
-- of owed mail and the record of every delivery attempt.
-- Instants are INTEGER milliseconds since the Unix epoch (UTC): they compare correctly and
-- mean the same on every backend. Calendar dates are ISO 8601 TEXT (YYYY-MM-DD).

CREATE TABLE resellers (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    csn         TEXT,
    timezone    TEXT NOT NULL,
    calendar    TEXT,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE customers (
    id           TEXT PRIMARY KEY NOT NULL,
    reseller_id  TEXT NOT NULL REFERENCES resellers (id),
    name         TEXT NOT NULL,
    email        TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    id                 TEXT PRIMARY KEY NOT NULL,
    reseller_id        TEXT NOT NULL REFERENCES resellers (id),
    customer_id        TEXT NOT NULL REFERENCES customers (id),
    product_id         TEXT NOT NULL,
    plan               TEXT NOT NULL,
    billing            TEXT NOT NULL CHECK (billing IN ('annual_prepaid', 'monthly_prepaid')),
    seats              INTEGER NOT NULL CHECK (seats BETWEEN 1 AND 999),
    assigned_licenses  INTEGER NOT NULL CHECK (assigned_licenses BETWEEN 0 AND seats),
    term_start         TEXT NOT NULL,
    term_end           TEXT NOT NULL CHECK (term_end > term_start),
    auto_renew         INTEGER NOT NULL CHECK (auto_renew IN (0, 1)),
    notify_email       TEXT,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX subscriptions_reseller ON subscriptions (reseller_id);

-- One row per mail owed. `key` says what the mail is about (subscription, kind, and for
-- periodic mail the term and offset): inserting the same key twice is a no-op, which is what
-- makes "exactly once per (subscription, event)" hold however often an event is recorded.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    key              TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    subscription_id  TEXT NOT NULL REFERENCES subscriptions (id),
    recipients       TEXT NOT NULL,             -- JSON array of addresses
    payload          TEXT NOT NULL,             -- JSON object: facts particular to this mail
    message_id       TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0, -- attempts started
    next_attempt_at  INTEGER NOT NULL,
    claimed_by       TEXT,
    claimed_at       INTEGER,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    last_error       TEXT
);
-- The redrive looks only at owed rows, so its cost follows the owed mail, not the history.
CREATE INDEX outbox_owed ON outbox (state, next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_subscription ON outbox (subscription_id);

CREATE TABLE delivery_attempts (
    outbox_id    INTEGER NOT NULL REFERENCES outbox (id),
    attempt      INTEGER NOT NULL,
    worker       TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent')),
    smtp_code    INTEGER,
    detail       TEXT,
    PRIMARY KEY (outbox_id, attempt)
);

-- The audit of corrected activation links: who replaced which download URL by which, when,
-- and the outbox key of the corrected mail that went with it.
CREATE TABLE download_url_corrections (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id  TEXT NOT NULL REFERENCES subscriptions (id),
    outbox_key       TEXT NOT NULL UNIQUE,
    old_url          TEXT NOT NULL,
    new_url          TEXT NOT NULL,
    corrected_by     TEXT NOT NULL,
    corrected_at     BIGINT NOT NULL
);
CREATE INDEX download_url_corrections_subscription
    ON download_url_corrections (subscription_id, id);

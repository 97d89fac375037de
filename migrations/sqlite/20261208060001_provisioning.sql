-- Provisioning as a tracked flow (issue 31). Each step's instant (ms) is the first time it was
-- recorded; the state is the furthest step reached, whatever order the notices came in.
-- provisioning_opened_at: the order was put in flight when the subscription was created with
-- `provisioning: "pending"`. order_in_flight: from the first step (or that creation) until
-- `activated` or an operator's abandon; at most one per reseller is expected, and the index
-- answers "which order of this reseller is in flight" without reading its other rows.
ALTER TABLE subscriptions ADD COLUMN provisioning_opened_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN ready_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN order_processed_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN activated_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN order_abandoned_at INTEGER;
ALTER TABLE subscriptions ADD COLUMN order_abandon_reason TEXT;
ALTER TABLE subscriptions ADD COLUMN order_in_flight INTEGER NOT NULL DEFAULT 0
    CHECK (order_in_flight IN (0, 1));
CREATE INDEX subscriptions_order_in_flight ON subscriptions (reseller_id) WHERE order_in_flight = TRUE;

-- Steps recorded before this version: their instant is their mail's. None of them is put in
-- flight: an old order nobody tracked must not block its reseller or page operations.
UPDATE subscriptions SET
    ready_at = (SELECT created_at FROM outbox WHERE outbox.key = subscriptions.id || '/ready'),
    order_processed_at = (SELECT created_at FROM outbox WHERE outbox.key = subscriptions.id || '/order_processed'),
    activated_at = (SELECT created_at FROM outbox WHERE outbox.key = subscriptions.id || '/activated');

-- Every provisioning step recorded for the first time and every abandon, with who did it and
-- whether it overlapped another order of the same reseller in flight at that moment.
CREATE TABLE provisioning_audit (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id  TEXT NOT NULL REFERENCES subscriptions (id),
    reseller_id      TEXT NOT NULL,
    action           TEXT NOT NULL
        CHECK (action IN ('ready', 'order_processed', 'activated', 'abandoned')),
    at               INTEGER NOT NULL,
    via              TEXT NOT NULL,
    reason           TEXT,
    flag             TEXT CHECK (flag IS NULL OR flag = 'overlapping_order'),
    -- The order that was in flight when this one overlapped it.
    overlapping      TEXT
);
CREATE INDEX provisioning_audit_subscription ON provisioning_audit (subscription_id);
CREATE INDEX provisioning_audit_flag ON provisioning_audit (flag) WHERE flag IS NOT NULL;

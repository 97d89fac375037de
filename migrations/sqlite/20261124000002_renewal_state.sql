-- The worker's own state of each subscription's renewal.
-- next_due_at: the earliest instant (ms) at which the periodic poll has something to do for
-- the subscription (a reminder, the term end). Zero means "recompute at the next poll", which
-- is what every change from the marketplace sets. The poll reads only rows due now, through
-- the index, so its cost follows the due rows and not the table.
ALTER TABLE subscriptions ADD COLUMN next_due_at INTEGER NOT NULL DEFAULT 0;
-- 'ended' once a term ended with auto-renew off; nothing more is planned for it.
ALTER TABLE subscriptions ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'ended'));
-- Set when a request to disable auto-renew was accepted: the term end at which it stops.
ALTER TABLE subscriptions ADD COLUMN disable_effective_term_end TEXT;

CREATE INDEX subscriptions_next_due ON subscriptions (next_due_at) WHERE status = 'active';

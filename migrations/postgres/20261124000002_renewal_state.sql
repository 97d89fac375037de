-- The worker's own state of each subscription's renewal (see the SQLite twin).
ALTER TABLE subscriptions ADD COLUMN next_due_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'ended'));
ALTER TABLE subscriptions ADD COLUMN disable_effective_term_end DATE;

CREATE INDEX subscriptions_next_due ON subscriptions (next_due_at) WHERE status = 'active';

-- A claim or a sent mail changes the outbox row's state, so PostgreSQL writes a new version of
-- the row and adds an entry for it to every index whose predicate the new version meets. The
-- per-subscription index serves only the cancelling of reminders still pending: kept to pending
-- rows, it gets no entry from a mail on its way from pending to sent.
DROP INDEX outbox_subscription;
CREATE INDEX outbox_pending_subscription ON outbox (subscription_id) WHERE state = 'pending';

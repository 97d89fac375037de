-- The console lists a subscription's mail, all of it, newest first: the index by subscription
-- that held pending mail only now holds every mail but the few being sent (found through
-- outbox_owed instead), with its id so that a page is read in id order. A mail gets an entry
-- when owed and one when it is sent (or fails, or is skipped); its claim adds none, which is
-- why mail being sent is left out (PostgreSQL indexes every new row version a predicate
-- admits). The cancelling of a subscription's pending reminders reads it as before.
DROP INDEX outbox_pending_subscription;
CREATE INDEX outbox_subscription ON outbox (subscription_id, id) WHERE state <> 'sending';

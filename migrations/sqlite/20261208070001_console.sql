-- The operator's console: flags every daemon reads (sending paused), the audit of operator
-- actions, and the indexes its pages read through.
CREATE TABLE console_flags (
    name        TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Who did what, when: every change an operator makes from the console, the API or the CLI.
CREATE TABLE operator_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT
);

-- Dead mail is few and the console lists it newest first: a partial index stays small and
-- is written only when a mail fails for good or is retried.
CREATE INDEX outbox_failed ON outbox (id) WHERE state = 'failed';
-- Mail sent per hour over the last days, without reading the whole history.
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
-- Renewals whose cutoff falls in a window: the cutoff precedes the term end, so a range of
-- term ends bounds the rows the rules are run on.
CREATE INDEX subscriptions_term_end ON subscriptions (term_end) WHERE status = 'active';

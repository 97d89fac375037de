-- The operator's console: flags every daemon reads (sending paused), the audit of operator
-- actions, and the indexes its pages read through. (Same tables as migrations/sqlite.)
CREATE TABLE console_flags (
    name        TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Who did what, when: every change an operator makes from the console, the API or the CLI.
CREATE TABLE operator_audit (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT
);

-- Partial, so that a mail on its way from pending to sent adds no entry to them but the one
-- its end state calls for (PostgreSQL indexes every new row version a predicate admits).
CREATE INDEX outbox_failed ON outbox (id) WHERE state = 'failed';
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE state = 'sent';
CREATE INDEX subscriptions_term_end ON subscriptions (term_end) WHERE status = 'active';

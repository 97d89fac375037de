-- The console counts the mail sent in the last 48 hours, and per hour, on every overview and
-- mails page. Kept to sent mail, as on PostgreSQL, the index answers both alone (a count of
-- entries) instead of reading each mail's row to ask its state. It is written as before, when
-- a mail is marked sent.
DROP INDEX outbox_sent_at;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE state = 'sent';

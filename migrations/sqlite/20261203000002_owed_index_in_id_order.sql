-- Nothing to change on SQLite: an index's entries end in the rowid (the outbox's id), so
-- `outbox_owed` already gives the mails of one instant in id order. (On PostgreSQL this version
-- adds the id to that index.)
SELECT 1;

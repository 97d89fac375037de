-- Nothing to change on PostgreSQL: its index of sent instants holds sent mail only already.
-- (On SQLite this version narrows that index from mail with a sent instant to sent mail.)
SELECT 1;

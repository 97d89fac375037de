-- Nothing to change on SQLite: it updates only the indexes whose columns an update changes, and
-- the per-subscription index does not hold the state. (On PostgreSQL this version narrows that
-- index to pending rows.)
SELECT 1;

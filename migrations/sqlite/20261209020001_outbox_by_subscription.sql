-- Nothing to change on SQLite: its index by subscription holds every mail already (an update
-- changes only the indexes whose columns it changes), and its entries end in the id. (On
-- PostgreSQL this version widens that index from pending mail to all but mail being sent.)
SELECT 1;

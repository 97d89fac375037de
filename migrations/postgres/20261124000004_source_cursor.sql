-- Where each pulling source left off: the marketplace's `updated_since` cursor.
CREATE TABLE source_cursors (
    source      TEXT PRIMARY KEY NOT NULL,
    cursor      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

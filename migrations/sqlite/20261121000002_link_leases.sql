-- Which gateway replica owns the link to each peer. Replicas of one node share
-- the database (PostgreSQL); exactly one holds a peer's unexpired lease and
-- keeps that link. A lease expires unless renewed, so a dead replica's links
-- are taken over by another.
CREATE TABLE link_leases (
    peer_id     TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    expires_ms  INTEGER NOT NULL
);

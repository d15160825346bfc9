-- Durable messaging state of one gateway (PostgreSQL; several replicas may share it later).

-- Facts about this store, e.g. the outbox epoch (random, made once): a peer
-- keys its deduplication counter by (our node, epoch), so a wiped and
-- recreated outbox restarting at seq 1 is not mistaken for resends.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Messages accepted from local applications and not yet acknowledged by the peer.
CREATE TABLE outbox (
    peer_id      TEXT    NOT NULL,
    seq          BIGINT  NOT NULL,
    message_id   TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    body         BYTEA    NOT NULL,
    created_ms   BIGINT  NOT NULL,
    PRIMARY KEY (peer_id, seq)
);

-- Per peer: the next sequence number to assign, and the highest one the peer acknowledged.
CREATE TABLE outbox_state (
    peer_id   TEXT PRIMARY KEY,
    next_seq  BIGINT  NOT NULL,
    acked_seq BIGINT  NOT NULL
);

-- Idempotency keys of accepted messages (client Message-Id or generated), kept
-- after delivery for the retention period so a retried POST stores nothing new.
CREATE TABLE sent_ids (
    peer_id    TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    created_ms BIGINT  NOT NULL,
    PRIMARY KEY (peer_id, message_id)
);
CREATE INDEX sent_ids_age ON sent_ids (created_ms);

-- Messages received from peers, until a local application acknowledges them.
CREATE TABLE inbox (
    id           BIGSERIAL PRIMARY KEY,
    from_peer    TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    body         BYTEA    NOT NULL,
    received_ms  BIGINT  NOT NULL,
    UNIQUE (from_peer, message_id)
);

-- Per (peer, peer's outbox epoch): highest sequence number durably stored here.
-- Everything at or below it is a resend and is acknowledged without storing.
CREATE TABLE inbound_state (
    from_peer TEXT    NOT NULL,
    epoch     TEXT    NOT NULL,
    last_seq  BIGINT  NOT NULL,
    PRIMARY KEY (from_peer, epoch)
);

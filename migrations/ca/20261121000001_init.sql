-- Issuance database of an offline root CA (one SQLite file, ca.db, in the CA directory).

-- Every certificate this CA has issued, including its own root.
CREATE TABLE certificates (
    serial_hex      TEXT PRIMARY KEY,          -- lowercase hex of the serial bytes
    kind            TEXT NOT NULL CHECK (kind IN ('root', 'peer', 'server')),
    subject         TEXT NOT NULL,
    peer_node_id    TEXT,                      -- for kind = 'peer': the partner it certifies
    not_before      TEXT NOT NULL,             -- RFC 3339 UTC
    not_after       TEXT NOT NULL,
    issued_at       TEXT NOT NULL,
    der             BLOB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at      TEXT,
    revocation_reason TEXT
);

CREATE INDEX certificates_peer ON certificates (peer_node_id);

-- Partners whose roots we have cross-signed.
CREATE TABLE peers (
    node_id             TEXT PRIMARY KEY,
    subject             TEXT NOT NULL,
    subject_der         BLOB NOT NULL,
    spki_der            BLOB NOT NULL,          -- pinned root key: a second key for the same id is refused
    root_fingerprint    TEXT NOT NULL,          -- SHA-256 of the partner's root certificate, hex
    endpoints           TEXT NOT NULL,          -- JSON array of host:port
    status              TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    added_at            TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    registered_cert_serial TEXT                  -- serial of the cross-cert the partner issued us, once registered
);

-- CRL numbers must increase monotonically (RFC 5280 5.2.3).
CREATE TABLE crl_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_number     INTEGER NOT NULL
);
INSERT INTO crl_state (id, last_number) VALUES (1, 0);

-- The type of a message (e.g. Swaptacular's PrepareTransfer): carried by
-- swpt-stomp links in the STOMP `type` header, given by applications in the
-- `Message-Type` header, returned by the inbox. NULL for messages without one
-- (peerlink/1 links carry none).
ALTER TABLE outbox ADD COLUMN message_type TEXT;
ALTER TABLE inbox ADD COLUMN message_type TEXT;

//! Arbitrary UTF-8 as the gateway's TOML configuration
//! (`peer-gateway/src/config.rs`, with the `frame` module it uses for limits).
//!
//! `Config::parse` may read the file named by `api_token_file`; the fuzzer can
//! name any path (relative ones resolve under /tmp). The product caps that
//! read (size and file type), which is what keeps this harness from reading
//! /dev/zero or a FIFO forever.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

use peer_gateway::{config, frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::Config::parse(text, Path::new("/tmp/fuzz.toml")) {
        Ok(c) => {
            // What parse promises about an accepted configuration.
            assert!(c.max_message_bytes >= 1);
            assert!(c.max_message_bytes + 1024 <= c.link.max_frame_bytes as usize);
            assert!(c.link.max_frame_bytes >= frame::MIN_MAX_PAYLOAD);
            assert!(c.link.dead_after_heartbeats >= 2);
            assert!(c.link.backoff_cap_ms >= c.link.backoff_base_ms);
            assert!(c.link.window_bytes >= c.max_message_bytes);
            assert!(c.node_dir.is_absolute() && c.state_dir.is_absolute());
            if let Some(token) = &c.api_token {
                assert!(token.len() >= 16);
            }
            let _ = c.link.dead_after();
            let _ = c.link.handshake_timeout();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

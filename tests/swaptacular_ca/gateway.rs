//! `peer-gateway` with a Swaptacular node directory as its `node_dir`: swpt_stomp's
//! accounting authority test node, used in place, read-only.

use std::time::Duration;

use peerlink_e2e::gateway::{
    admin_status, field, free_port, peer_entry, spawn_gateway, wait_exit, wait_for,
};

use super::*;

#[test]
fn the_gateway_runs_on_a_swaptacular_node_directory_without_writing_to_it() {
    let aa = third_party().join("swpt_stomp/test_data/AA");
    let before = snapshot(&aa);
    let tmp = tmp();
    let admin = free_port();
    let config = tmp.path().join("gateway.toml");
    write_file(
        &config,
        format!(
            "node_dir = {:?}\nserver_cert = {:?}\nserver_key = {:?}\nlisten = \"127.0.0.1:{}\"\n\
             admin_listen = \"127.0.0.1:{admin}\"\napi_listen = \"127.0.0.1:{}\"\n\
             database_url = {:?}\nstate_dir = {:?}\n",
            aa.display().to_string(),
            aa.join("server.crt").display().to_string(),
            aa.join("server.key").display().to_string(),
            free_port(),
            free_port(),
            format!("sqlite://{}", tmp.path().join("gw.db").display()),
            tmp.path().join("state").display().to_string(),
        ),
        0o644,
    );
    let log = tmp.path().join("gw.log");
    let mut child = spawn_gateway("gateway on test_data/AA", &config, &log, &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    let (status, _) = wait_for("the gateway's status", Duration::from_secs(30), || {
        let s = admin_status(addr)?;
        match s["peers"].as_array() {
            Some(p) if p.len() == 3 => Ok(s),
            _ => Err(format!("{s}\n{}", read_text(&log))),
        }
    });
    let _ = child.kill();
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status["node_id"], "1234abcd", "{status:#}");
    for id in [
        "060791aeca7637fa3357dfc0299fb4c5",
        "5921983fe0e6eb987aeedca54ad3c708",
        "09cab36b6079e09c32a9dfd60446c469",
    ] {
        assert!(
            peer_entry(&status, id).is_some(),
            "{id} missing: {status:#}"
        );
    }
    // DEACTIVATED: known but inactive; the others are active (no peerlink/1
    // endpoints: they speak swpt-stomp, so the gateway waits for them to dial).
    let state = |id: &str| field(peer_entry(&status, id).expect("entry"), "state").to_string();
    assert_eq!(
        state("09cab36b6079e09c32a9dfd60446c469"),
        "inactive",
        "{status:#}"
    );
    assert_ne!(
        state("5921983fe0e6eb987aeedca54ad3c708"),
        "inactive",
        "{status:#}"
    );
    assert_ne!(
        state("060791aeca7637fa3357dfc0299fb4c5"),
        "inactive",
        "{status:#}"
    );
    assert_unchanged(&aa, &before, "running the gateway");
}

//! The last step of the round trip: a STOMP link between our gateway and
//! swpt_stomp on exactly the certificates the exchange produced (ca-tool as the
//! creditors agent, the scripts as the accounting authority), both ways:
//! our gateway dials swpt-server (which validates our leaf through the
//! cross-cert the scripts issued, the chain the key-identifier fix is for),
//! and swpt-client dials our gateway.

use std::time::Duration;

use peerlink_e2e::swpt::{take_inbox, Gateway, SwptLab, DEBTOR};

use super::round_trip::tool_ca;

/// The accounting authority the scripts made (`Flavor` TOOL_CA).
const THEIR_ID: &str = "1234abcd";
const N: u64 = 50;

/// The first creditor id of a subnet given as hex digits (`subnet.txt`).
fn first_creditor(subnet_hex: &str) -> u64 {
    let bits = 4 * subnet_hex.len() as u32;
    let prefix = u64::from_str_radix(subnet_hex, 16).expect("a hex subnet");
    (prefix << (64 - bits)) | 1
}

fn account_purge(creditor: u64) -> String {
    format!(
        r#"{{"type": "AccountPurge", "debtor_id": {DEBTOR}, "creditor_id": {creditor}, "creation_date": "2023-01-01", "ts": "2023-01-01T12:00:00+00:00"}}"#
    )
}

#[test]
fn our_gateway_and_swpt_stomp_link_on_the_exchanged_certificates() {
    let test = "our_gateway_and_swpt_stomp_link_on_the_exchanged_certificates";
    let Some(p) = tool_ca() else {
        return;
    };
    let Some(mut lab) = SwptLab::require(test) else {
        return;
    };
    let ours_id = p.ours_id.clone();

    // Their node: a copy of the scripts' directory with the gateway
    // certificate they signed, and `ACTIVE`, which Swaptacular's deployment
    // tooling (not the scripts) creates once a partner is set up.
    let theirs = lab.add_node("S", &p.theirs.dir);
    std::fs::copy(&p.their_leaf, theirs.join("server.crt")).expect("their leaf");
    std::fs::copy(
        p.their_leaf.with_file_name("S-server.key"),
        theirs.join("server.key"),
    )
    .expect("their key");
    std::fs::write(theirs.join("peers").join(&ours_id).join("ACTIVE"), b"").expect("ACTIVE");
    let subnet = std::fs::read_to_string(theirs.join("peers").join(&ours_id).join("subnet.txt"))
        .expect("the subnet they gave us");
    let creditor = first_creditor(subnet.trim());

    // Our gateway on the ca-tool directory as it is, with our leaf.
    let swpt_port = peerlink_e2e::gateway::free_port();
    let work = lab.data.join("ours");
    std::fs::create_dir_all(&work).expect("work dir");
    let mut gw = Gateway::configure_at(
        &p.ours.dir,
        &p.our_leaf,
        &p.our_leaf.with_file_name("T-server.key"),
        &work,
        &format!("\n[peers.\"{THEIR_ID}\"]\nendpoints = [\"127.0.0.1:{swpt_port}\"]\n"),
    );
    lab.set_peer_servers("S", &ours_id, &[format!("127.0.0.1:{}", gw.stomp_port)]);

    // We dial swpt-server: it must take our chain and our messages.
    lab.queue_bound_to("accounts_in", "aa-in");
    let server = lab.start(
        "S",
        "swpt-server",
        &[],
        &[("SWPT_SERVER_PORT", &swpt_port.to_string())],
    );
    gw.start();
    for i in 0..N {
        let body = peerlink_e2e::swpt::prepare_transfer(i, creditor);
        let r = gw
            .api
            .request(
                "POST",
                &format!("/v1/peers/{THEIR_ID}/messages"),
                &[
                    ("Content-Type", "application/json"),
                    ("Message-Type", "PrepareTransfer"),
                ],
                body.as_bytes(),
            )
            .expect("POST");
        assert_eq!(r.code, 202, "{}", String::from_utf8_lossy(&r.body));
    }
    lab.wait(
        "our messages in their accounts_in",
        Duration::from_secs(90),
        |lab| {
            if !lab.running(server) {
                return Err("swpt-server exited".into());
            }
            let depth = lab.queue_depth("aa-in")?;
            (depth >= N).then_some(()).ok_or(format!("{depth} of {N}"))
        },
    );
    assert_eq!(gw.api.outbox_depth(THEIR_ID).expect("outbox"), 0);

    // swpt-client dials us: our validator takes their chain.
    lab.run("S", "configure-queue", &[&ours_id, "to-us"])
        .expect("configure-queue");
    let bodies: Vec<String> = (0..N).map(|_| account_purge(creditor)).collect();
    lab.publish("to-us", "AccountPurge", &bodies);
    let client = lab.start("S", "swpt-client", &[&ours_id, "to-us"], &[]);
    let mut got = Vec::new();
    lab.wait(
        "their messages in our inbox",
        Duration::from_secs(90),
        |_| {
            got.extend(take_inbox(&gw.api));
            (got.len() as u64 >= N)
                .then_some(())
                .ok_or(format!("{} of {N}", got.len()))
        },
    );
    assert!(got.iter().all(|(ty, _)| ty == "AccountPurge"), "{got:?}");
    lab.stop(client);
    assert_eq!(lab.queue_depth("to-us").expect("depth"), 0);
}

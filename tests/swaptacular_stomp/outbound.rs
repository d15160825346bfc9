//! Our gateway (test_data's creditors agent directory) → swpt-server (the
//! accounting authority), which publishes to its `accounts_in` exchange.

use std::time::Duration;

use peerlink_e2e::gateway::free_port;
use peerlink_e2e::swpt::{prepare_transfer, SwptLab, AA_ID, CA_CREDITOR_AT_AA};

use peerlink_e2e::swpt::Gateway;

const N: u64 = 500;

/// Sends message `i` to the accounting authority through our API.
pub fn send(gw: &Gateway, i: u64) -> u16 {
    let body = prepare_transfer(i, CA_CREDITOR_AT_AA);
    gw.api
        .request(
            "POST",
            &format!("/v1/peers/{AA_ID}/messages"),
            &[
                ("Content-Type", "application/json"),
                ("Message-Type", "PrepareTransfer"),
            ],
            body.as_bytes(),
        )
        .map(|r| r.code)
        .unwrap_or(0)
}

#[test]
fn our_gateway_sends_to_swpt_server() {
    let test = "our_gateway_sends_to_swpt_server";
    let Some(mut lab) = SwptLab::require(test) else {
        return;
    };
    lab.queue_bound_to("accounts_in", "aa-in");
    let port = free_port();
    let server = lab.start(
        "AA",
        "swpt-server",
        &[],
        &[("SWPT_SERVER_PORT", &port.to_string())],
    );
    lab.set_peer_servers("CA", AA_ID, &[format!("127.0.0.1:{port}")]);
    let mut gw = Gateway::configure(&lab, "CA", "");
    gw.start();
    lab.wait(
        "our STOMP link to the accounting authority",
        Duration::from_secs(60),
        |lab| {
            if !lab.running(server) {
                return Err("swpt-server exited".into());
            }
            let entry = gw.peer_state(AA_ID)?;
            if entry["state"] == "connected" {
                Ok(())
            } else {
                Err(format!("{entry}"))
            }
        },
    );
    for i in 0..N {
        assert_eq!(send(&gw, i), 202);
    }
    lab.wait(
        "every message in accounts_in",
        Duration::from_secs(90),
        |lab| {
            let depth = lab.queue_depth("aa-in")?;
            if depth >= N {
                Ok(())
            } else {
                Err(format!("{depth} of {N}"))
            }
        },
    );
    assert_eq!(
        lab.queue_depth("aa-in").expect("depth"),
        N,
        "exactly once while nothing fails"
    );
    assert_eq!(
        gw.api.outbox_depth(AA_ID).expect("depth"),
        0,
        "every message confirmed"
    );
    // What swpt-server published carries the headers it derives from a valid message.
    let headers = lab
        .python(
            r#"
import asyncio, os, aio_pika
async def main():
    c = await aio_pika.connect(os.environ["AMQP_URL"])
    ch = await c.channel()
    q = await ch.declare_queue("aa-in", durable=True)
    m = await q.get(no_ack=False)
    print(m.type, sorted(m.headers.items()))
    await m.nack(requeue=True)
    await c.close()
asyncio.run(main())
"#,
        )
        .expect("read a message");
    assert!(headers.starts_with("PrepareTransfer"), "{headers}");
    assert!(
        headers.contains("'message-type', 'PrepareTransfer'"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("'creditor-id', {CA_CREDITOR_AT_AA}")),
        "{headers}"
    );
}

//! swpt-client (test_data's creditors agent) → our gateway (the accounting
//! authority's node directory, as swpt_ca_scripts made it).

use std::collections::BTreeMap;
use std::time::Duration;

use peerlink_e2e::swpt::{SwptLab, AA_ID, CA_ID, CA_OWN_CREDITOR};

use peerlink_e2e::swpt::gateway::{publish, request_id, take_inbox, Gateway};

const N: u64 = 500;

#[test]
fn swpt_client_drains_its_queue_into_our_gateway() {
    let test = "swpt_client_drains_its_queue_into_our_gateway";
    let Some(mut lab) = SwptLab::require(test) else {
        return;
    };
    let mut gw = Gateway::configure(&lab, "AA", "");
    lab.set_peer_servers("CA", AA_ID, &[format!("127.0.0.1:{}", gw.stomp_port)]);
    gw.start();
    lab.run("CA", "configure-queue", &[AA_ID, "to-aa"])
        .expect("configure-queue");
    publish(&lab, "to-aa", 0, N, CA_OWN_CREDITOR);
    let client = lab.start("CA", "swpt-client", &[AA_ID, "to-aa"], &[]);
    let mut got: Vec<(String, String)> = Vec::new();
    lab.wait(
        "every message in our inbox",
        Duration::from_secs(90),
        |_| {
            got.extend(take_inbox(&gw.api));
            if got.len() as u64 >= N {
                Ok(())
            } else {
                Err(format!("{} of {N}", got.len()))
            }
        },
    );
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (ty, body) in &got {
        assert_eq!(ty, "PrepareTransfer");
        *seen
            .entry(request_id(body).expect("an SMP message"))
            .or_default() += 1;
    }
    assert_eq!(seen.len() as u64, N, "every message arrived");
    assert!(
        seen.values().all(|n| *n == 1),
        "exactly once while nothing fails"
    );
    // Every message was confirmed: nothing waits in the agent's queue.
    lab.stop(client);
    assert_eq!(lab.queue_depth("to-aa").expect("depth"), 0);
    // The partner shows in the gateway's log as a STOMP connection.
    assert!(gw.log_text().contains(&format!("peer={CA_ID}")));
}

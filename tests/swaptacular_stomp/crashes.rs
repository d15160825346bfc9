//! Crashes on either side of a swpt-stomp link: nothing is lost, and since
//! swpt_stomp numbers receipts per connection, what was in flight may arrive
//! twice: at most one window (100) per crash.

use std::collections::BTreeMap;
use std::time::Duration;

use peerlink_e2e::gateway::free_port;
use peerlink_e2e::swpt::{SwptLab, AA_ID, CA_OWN_CREDITOR};

use crate::outbound::send;
use peerlink_e2e::swpt::gateway::{publish, request_id, take_inbox, Gateway};

const N: u64 = 2_000;
/// swpt_stomp's buffers and our `[stomp] window`: what one crash may repeat.
const WINDOW: u64 = 100;

/// The `coordinator_request_id`s of every message in `queue`, consumed.
fn drain_ids(lab: &SwptLab, queue: &str) -> Vec<u64> {
    let out = lab
        .python(&format!(
            r#"
import asyncio, os, json, aio_pika
async def main():
    c = await aio_pika.connect(os.environ["AMQP_URL"])
    ch = await c.channel()
    q = await ch.declare_queue({queue:?}, durable=True)
    ids = []
    while True:
        m = await q.get(no_ack=True, fail=False)
        if m is None:
            break
        ids.append(json.loads(m.body)["coordinator_request_id"])
    print(json.dumps(ids))
    await c.close()
asyncio.run(main())
"#
        ))
        .expect("drain");
    serde_json::from_str(out.trim()).expect("ids")
}

fn judge(what: &str, ids: impl IntoIterator<Item = u64>, crashes: u64) {
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<u64> = (0..N).filter(|i| !seen.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let extra: u64 = seen.values().map(|n| n - 1).sum();
    eprintln!("{what}: {N} messages, {extra} delivered twice after {crashes} crashes");
    assert!(
        extra <= crashes * WINDOW,
        "{what}: {extra} duplicates, more than {crashes} crashes x window {WINDOW}"
    );
}

#[test]
fn our_gateway_killed_and_swpt_server_restarted_while_sending() {
    let test = "our_gateway_killed_and_swpt_server_restarted_while_sending";
    let Some(mut lab) = SwptLab::require(test) else {
        return;
    };
    lab.queue_bound_to("accounts_in", "aa-in");
    let port = free_port();
    let env = [("SWPT_SERVER_PORT", port.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = lab.start("AA", "swpt-server", &[], &env);
    lab.set_peer_servers("CA", AA_ID, &[format!("127.0.0.1:{port}")]);
    let mut gw = Gateway::configure(&lab, "CA", "");
    gw.start();
    for i in 0..N {
        assert_eq!(send(&gw, i), 202, "accepted before any crash");
    }
    let arrived = |lab: &SwptLab| lab.queue_depth("aa-in").unwrap_or(0);
    // kill -9 of our gateway once a third has gone out, then a restart.
    lab.wait("a third through", Duration::from_secs(120), |lab| {
        (arrived(lab) >= N / 3)
            .then_some(())
            .ok_or("not yet".into())
    });
    gw.kill9();
    gw.start();
    // swpt-server stops mid-stream and comes back: our link redials.
    lab.wait("two thirds through", Duration::from_secs(120), |lab| {
        (arrived(lab) >= 2 * N / 3)
            .then_some(())
            .ok_or("not yet".into())
    });
    lab.stop(server);
    server = lab.start("AA", "swpt-server", &[], &env);
    lab.wait("our outbox empty", Duration::from_secs(180), |lab| {
        if !lab.running(server) {
            return Err("swpt-server exited".into());
        }
        match gw.api.outbox_depth(AA_ID) {
            Ok(0) => Ok(()),
            other => Err(format!("outbox {other:?}")),
        }
    });
    judge("gateway -> swpt-server", drain_ids(&lab, "aa-in"), 2);
}

#[test]
fn our_gateway_killed_while_swpt_client_drains_into_it() {
    let test = "our_gateway_killed_while_swpt_client_drains_into_it";
    let Some(mut lab) = SwptLab::require(test) else {
        return;
    };
    let mut gw = Gateway::configure(&lab, "AA", "");
    lab.set_peer_servers("CA", AA_ID, &[format!("127.0.0.1:{}", gw.stomp_port)]);
    gw.start();
    lab.run("CA", "configure-queue", &[AA_ID, "to-aa"])
        .expect("configure-queue");
    publish(&lab, "to-aa", 0, N, CA_OWN_CREDITOR);
    let mut client = lab.start("CA", "swpt-client", &[AA_ID, "to-aa"], &[]);
    let mut got: Vec<(String, String)> = Vec::new();
    lab.wait("a third in our inbox", Duration::from_secs(120), |_| {
        got.extend(take_inbox(&gw.api));
        (got.len() as u64 >= N / 3)
            .then_some(())
            .ok_or("not yet".into())
    });
    gw.kill9();
    // swpt-client exits when its connection drops (Kubernetes restarts it).
    lab.wait("swpt-client exits", Duration::from_secs(60), |lab| {
        (!lab.running(client))
            .then_some(())
            .ok_or("still running".into())
    });
    gw.start();
    client = lab.start("CA", "swpt-client", &[AA_ID, "to-aa"], &[]);
    lab.wait(
        "every message in our inbox",
        Duration::from_secs(180),
        |lab| {
            got.extend(take_inbox(&gw.api));
            let ids: std::collections::BTreeSet<u64> =
                got.iter().filter_map(|(_, b)| request_id(b)).collect();
            if ids.len() as u64 == N && lab.queue_depth("to-aa").unwrap_or(1) == 0 {
                Ok(())
            } else {
                Err(format!("{} distinct of {N}", ids.len()))
            }
        },
    );
    lab.stop(client);
    judge(
        "swpt-client -> gateway",
        got.iter().filter_map(|(_, b)| request_id(b)),
        1,
    );
}

//! End-to-end tests of swpt-stomp links between two of our gateways (STOMP
//! 1.2 over mutual TLS without ALPN, one direction per connection): messages
//! with their types both ways, the API's rules for swpt-stomp partners, a
//! refused destination, and the admin ping. The links with Swaptacular's own
//! software are in tests/swaptacular/.
//!
//! Run `cargo build --workspace --bins` first; `cargo test --test stomp_links`.

use std::collections::BTreeMap;

use peerlink_e2e::gateway::{free_port, http, Net, WAIT};
use peerlink_e2e::messaging::{messaging_config_text, sqlite_url, Api, Ports, MESSAGING_LINK};

/// a and b, each with a STOMP listener, speaking swpt-stomp to each other; `extra`
/// adds keys to `[peers."<other>"]` of a. Returns the network and the STOMP ports.
fn stomp_pair(extra_for_a: &str) -> (Net, BTreeMap<String, u16>) {
    let net = Net::mesh(&["a", "b", "c"]);
    let ports: BTreeMap<String, u16> = ["a", "b"]
        .iter()
        .map(|n| (n.to_string(), free_port()))
        .collect();
    for (name, other) in [("a", "b"), ("b", "a")] {
        let node = net.node(name);
        let extra = if name == "a" { extra_for_a } else { "" };
        // c stays on peerlink/1 (and is never started): the API's rules differ for it.
        let top = format!(
            "[stomp]\nlisten = \"127.0.0.1:{}\"\nheartbeat_ms = 1000\n\n\
             [peers.\"{}\"]\nprotocol = \"swpt-stomp\"\nendpoints = [\"127.0.0.1:{}\"]\n{extra}\n\
             [peers.\"{}\"]\nprotocol = \"peerlink\"\n",
            ports[name],
            net.id(other),
            ports[other],
            net.id("c"),
        );
        let text = messaging_config_text(
            node,
            Ports::of(node),
            &format!("{name}-state"),
            &sqlite_url(&net, name),
            &top,
            MESSAGING_LINK,
        );
        std::fs::write(&node.config, text).expect("write config");
    }
    (net, ports)
}

fn send_typed(api: &Api, peer: &str, message_type: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(t) = message_type {
        headers.push(("Message-Type", t));
    }
    let r = api
        .request(
            "POST",
            &format!("/v1/peers/{peer}/messages"),
            &headers,
            body,
        )
        .expect("POST");
    (r.code, r.text())
}

/// Every message in `name`'s inbox: (type, body), acknowledged.
fn take_typed(api: &Api) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let r = api.inbox_raw(1000, 0).expect("inbox");
        let v = r.json().expect("json");
        let list = v["messages"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return out;
        }
        let mut acks = Vec::new();
        for m in &list {
            let body = peerlink_e2e::base64_decode(m["body_base64"].as_str().unwrap_or(""));
            out.push((
                m["type"].as_str().unwrap_or("").to_string(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            acks.push((
                m["from"].as_str().unwrap_or("").to_string(),
                m["id"].as_str().unwrap_or("").to_string(),
            ));
        }
        let pairs: Vec<(&str, &str)> = acks.iter().map(|(f, i)| (f.as_str(), i.as_str())).collect();
        api.ack_from(&pairs).expect("ack");
    }
}

#[test]
fn our_gateways_move_typed_messages_both_ways_over_swpt_stomp() {
    let (mut net, _) = stomp_pair("");
    net.start_all(&["a", "b"]);
    let (a_id, b_id, c_id) = (net.id("a"), net.id("b"), net.id("c"));
    net.wait("both STOMP client links up", WAIT, |net| {
        net.check_state("a", "b", &["connected"])?;
        net.check_state("b", "a", &["connected"])
    });
    let (api_a, api_b) = (Api::of(net.node("a")), Api::of(net.node("b")));
    let n = 150;
    for i in 0..n {
        let body = format!("{{\"from\":\"a\",\"i\":{i}}}");
        assert_eq!(
            send_typed(&api_a, &b_id, Some("PrepareTransfer"), body.as_bytes()).0,
            202
        );
        let body = format!("{{\"from\":\"b\",\"i\":{i}}}");
        assert_eq!(
            send_typed(&api_b, &a_id, Some("AccountUpdate"), body.as_bytes()).0,
            202
        );
    }
    let mut got_b = Vec::new();
    let mut got_a = Vec::new();
    net.wait("every message through", WAIT, |_| {
        got_b.extend(take_typed(&api_b));
        got_a.extend(take_typed(&api_a));
        if got_a.len() >= n && got_b.len() >= n {
            Ok(())
        } else {
            Err(format!(
                "a has {}, b has {} of {n}",
                got_a.len(),
                got_b.len()
            ))
        }
    });
    for (got, ty, from) in [
        (&got_b, "PrepareTransfer", "a"),
        (&got_a, "AccountUpdate", "b"),
    ] {
        assert_eq!(got.len(), n, "exactly once while nothing fails");
        for (i, (t, body)) in got.iter().enumerate() {
            assert_eq!(t, ty);
            assert_eq!(
                body,
                &format!("{{\"from\":\"{from}\",\"i\":{i}}}"),
                "in order"
            );
        }
    }
    // Outboxes empty: every message was confirmed by a RECEIPT.
    assert_eq!(api_a.outbox_depth(&b_id).expect("depth"), 0);
    assert_eq!(api_b.outbox_depth(&a_id).expect("depth"), 0);

    // The API's rules for swpt-stomp partners, and for a peerlink/1 one.
    let (code, text) = send_typed(&api_a, &b_id, None, b"{}");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("Message-Type"), "{text}");
    let (code, text) = send_typed(&api_a, &b_id, Some("T"), &vec![b'x'; 8193]);
    assert_eq!(code, 413, "{text}");
    let (code, text) = send_typed(&api_a, &c_id, Some("T"), b"{}");
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("carried only to swpt-stomp partners"),
        "{text}"
    );

    // STOMP has no ping: the admin API says so at once.
    let (code, body) = http(
        net.node("a").admin(),
        "POST",
        &format!("/v1/peers/{b_id}/ping"),
    )
    .expect("ping");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no ping"), "{body}");
}

#[test]
fn a_destination_the_partner_refuses_keeps_the_messages_and_says_why() {
    let (mut net, _) = stomp_pair("stomp_destination = \"/exchange/elsewhere\"\n");
    net.start_all(&["a", "b"]);
    let b_id = net.id("b");
    let api_a = Api::of(net.node("a"));
    net.wait("a's STOMP link up", WAIT, |net| {
        net.check_state("a", "b", &["connected"])
    });
    assert_eq!(
        send_typed(&api_a, &b_id, Some("PrepareTransfer"), b"{}").0,
        202
    );
    net.wait("a shows b's refusal", WAIT, |net| {
        let entry = net.peer_status("a", "b");
        let error = entry["last_error"].as_str().unwrap_or("").to_string();
        if error.contains("Invalid SEND destination \\\"/exchange/elsewhere\\\"")
            || error.contains("Invalid SEND destination \"/exchange/elsewhere\"")
        {
            Ok(())
        } else {
            Err(format!("last_error {error:?}"))
        }
    });
    // Not lost: still waiting in the outbox.
    assert_eq!(api_a.outbox_depth(&b_id).expect("depth"), 1);
    let b_log = net.node("b").log_text();
    assert!(b_log.contains("Invalid SEND destination"), "{b_log}");
}

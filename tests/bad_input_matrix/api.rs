//! The API surface: `a`'s inbox (2 messages from `b`) and outbox (3 messages for
//! `c`, whose gateway is down) must be unchanged by every bad request, through the
//! API and in the SQLite store (every table but the link leases).
//!
//! Run: `cargo test --test bad_input_matrix api::`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{Net, WAIT};
use peerlink_e2e::messaging::{Api, Outgoing, Response};
use peerlink_e2e::write_file;
use serde_json::{json, Value};

use super::{ensure, one_line, store_rows, Matrix};

const TOKEN: &str = "matrix-token-0123456789abcdef";
const MAX_MESSAGE: usize = 65_536;

/// The message state a bad request must not change.
#[derive(Debug, PartialEq)]
struct ApiState {
    outbox_c: i64,
    outbox_b: i64,
    inbox: Vec<String>,
    store: BTreeMap<String, Vec<String>>,
}

fn api_state(api: &Api, net: &Net, rt: &tokio::runtime::Runtime) -> Result<ApiState, String> {
    Ok(ApiState {
        outbox_c: api.outbox_depth(&net.id("c"))?,
        outbox_b: api.outbox_depth(&net.id("b"))?,
        inbox: api.peek_all()?.into_iter().map(|m| m.id).collect(),
        store: store_rows(rt, &net.path("a-gateway.db"))?,
    })
}

fn diff_state(before: &ApiState, after: &ApiState) -> String {
    let mut s = String::new();
    if before.outbox_c != after.outbox_c || before.outbox_b != after.outbox_b {
        let _ = write!(
            s,
            "outbox depth c {} -> {}, b {} -> {}; ",
            before.outbox_c, after.outbox_c, before.outbox_b, after.outbox_b
        );
    }
    if before.inbox != after.inbox {
        let _ = write!(s, "inbox {:?} -> {:?}; ", before.inbox, after.inbox);
    }
    for (t, rows) in &after.store {
        if before.store.get(t) != Some(rows) {
            let _ = write!(
                s,
                "table {t}: {} -> {} rows; ",
                before.store.get(t).map_or(0, Vec::len),
                rows.len()
            );
        }
    }
    s
}

/// One bad request: expects HTTP `code` with `fragment` in the body (JSON
/// `{"error": ...}` when `json_error`), and the message state unchanged.
struct ApiCase<'a> {
    api: &'a Api,
    net: &'a Net,
    rt: &'a tokio::runtime::Runtime,
}

impl ApiCase<'_> {
    fn expect(
        &self,
        code: u16,
        fragment: &str,
        json_error: bool,
        request: impl FnOnce() -> Result<Response, String>,
    ) -> Result<String, String> {
        let before = api_state(self.api, self.net, self.rt)?;
        let r = request()?;
        let body = r.text();
        let actual = format!("HTTP {}: {}", r.code, one_line(&body, 90));
        ensure(r.code == code, || {
            format!("expected HTTP {code}, got {}", r.describe())
        })?;
        ensure(
            body.to_lowercase().contains(&fragment.to_lowercase()),
            || format!("the answer does not mention {fragment:?}: {}", r.describe()),
        )?;
        if json_error {
            let v: Value = r.json()?;
            ensure(v["error"].is_string(), || {
                format!("no JSON error: {}", r.describe())
            })?;
        }
        let after = api_state(self.api, self.net, self.rt)?;
        ensure(before == after, || {
            format!(
                "the request changed the message state: {}",
                diff_state(&before, &after)
            )
        })?;
        Ok(actual)
    }
}

/// A raw HTTP exchange on the API port: `request` bytes as is, the answer's status
/// line and body.
fn raw_http(port: u16, request: &[u8]) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(request);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    Ok(Response {
        code,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    })
}

#[test]
fn api_bad_inputs() {
    let mut net = Net::mesh(&["a", "b", "c"]);
    let token_file = net.path("a-api.token");
    write_file(&token_file, format!("{TOKEN}\n"), 0o600);
    net.set_config_extra(
        "a",
        &format!(
            "api_token_file = {:?}\nmax_message_bytes = {MAX_MESSAGE}\n",
            token_file.display().to_string()
        ),
    );
    net.start_all(&["a", "b"]);
    net.wait_all_connected(&["a", "b"], WAIT);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = Api::of(net.node("a")).with_token(TOKEN);
    let b_api = Api::of(net.node("b"));
    let (a_id, b_id, c_id) = (net.id("a"), net.id("b"), net.id("c"));
    // State: 2 messages from b in a's inbox, 3 for c (down) in a's outbox.
    for i in 0..2 {
        b_api
            .send(
                &a_id,
                Some("text/plain"),
                Some(&format!("from-b-{i}")),
                b"hello a",
            )
            .unwrap()
            .expect(202)
            .unwrap();
    }
    net.wait("a's inbox to hold b's 2 messages", WAIT, |_| {
        let n = api.peek_all()?.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} messages"))
        }
    });
    for i in 0..3 {
        api.send(&c_id, None, Some(&format!("for-c-{i}")), b"hello c")
            .unwrap()
            .expect(202)
            .unwrap();
    }
    assert_eq!(api.outbox_depth(&c_id).unwrap(), 3);

    // b's inbox is empty: a long poll there shows that `wait` is clamped to 60 s.
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let b_api = b_api.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = b_api.inbox_raw(1, 3600);
            let _ = tx.send((r, started.elapsed()));
        });
    }

    let x = ApiCase {
        api: &api,
        net: &net,
        rt: &rt,
    };
    let no_token = Api::of(net.node("a"));
    let big = vec![b'x'; MAX_MESSAGE + 1];
    let mut m = Matrix::new("API");
    m.case("send without a bearer token", "401 'bearer token'", || {
        x.expect(401, "bearer token", true, || {
            no_token.send(&b_id, None, None, b"hi")
        })
    });
    m.case(
        "send with a wrong bearer token",
        "401 'bearer token'",
        || {
            x.expect(401, "bearer token", true, || {
                no_token
                    .with_token("wrong-token-0123456789abcdef")
                    .send(&b_id, None, None, b"hi")
            })
        },
    );
    m.case(
        "token sent as Basic credentials",
        "401 'bearer token'",
        || {
            let auth = format!("Basic {TOKEN}");
            x.expect(401, "bearer token", true, || {
                no_token.request(
                    "POST",
                    &format!("/v1/peers/{b_id}/messages"),
                    &[("Authorization", &auth)],
                    b"hi",
                )
            })
        },
    );
    m.case("send to an unknown peer", "404 'unknown peer'", || {
        x.expect(404, "unknown peer", true, || {
            api.send("0123456789abcdef0123456789abcdef", None, None, b"hi")
        })
    });
    m.case("batch to an unknown peer", "404 'unknown peer'", || {
        x.expect(404, "unknown peer", true, || {
            api.send_batch(
                "no-such-peer",
                &[Outgoing {
                    id: None,
                    content_type: None,
                    body: b"hi".to_vec(),
                }],
            )
        })
    });
    m.case("status of an unknown peer", "404 'unknown peer'", || {
        x.expect(404, "unknown peer", true, || api.peer_raw("no-such-peer"))
    });
    m.case("peer id with an encoded path traversal", "404", || {
        x.expect(404, "", false, || {
            api.send("..%2F..%2Fetc%2Fpasswd", None, None, b"hi")
        })
    });
    m.case(
        "body of max_message_bytes + 1",
        "413 'max_message_bytes'",
        || {
            x.expect(413, "max_message_bytes", true, || {
                api.send(&b_id, None, None, &big)
            })
        },
    );
    m.case("body of 4 x max_message_bytes", "413", || {
        let huge = vec![b'x'; 4 * MAX_MESSAGE];
        x.expect(413, "", false, || api.send(&b_id, None, None, &huge))
    });
    m.case("Message-Id of 129 characters", "400 'Message-Id'", || {
        let id = "m".repeat(129);
        x.expect(400, "Message-Id", true, || {
            api.send(&b_id, None, Some(&id), b"hi")
        })
    });
    m.case("Message-Id with a space", "400 'Message-Id'", || {
        x.expect(400, "Message-Id", true, || {
            api.send(&b_id, None, Some("two words"), b"hi")
        })
    });
    m.case("Message-Id with a control character", "400", || {
        x.expect(400, "", false, || {
            api.send(&b_id, None, Some("bell\u{7}id"), b"hi")
        })
    });
    m.case("Message-Id not ASCII", "400 'ASCII'", || {
        x.expect(400, "ASCII", true, || {
            api.send(&b_id, None, Some("idé"), b"hi")
        })
    });
    m.case("Content-Type of 300 bytes", "400 'Content-Type'", || {
        let ct = format!("text/{}", "x".repeat(295));
        x.expect(400, "Content-Type", true, || {
            api.send(&b_id, Some(&ct), None, b"hi")
        })
    });
    m.case("batch that is not JSON", "400 'bad JSON'", || {
        x.expect(400, "bad JSON", true, || {
            api.send_batch_raw(&b_id, b"{\"messages\": [}")
        })
    });
    m.case("batch with an unknown field", "400 'unknown field'", || {
        x.expect(400, "unknown field", true, || {
            api.send_batch_raw(
                &b_id,
                br#"{"messages": [{"body_base64": "aGk=", "priority": 9}]}"#,
            )
        })
    });
    m.case("batch body that is not base64", "400 'not base64'", || {
        x.expect(400, "not base64", true, || {
            api.send_batch_raw(&b_id, br#"{"messages": [{"body_base64": "not base64!"}]}"#)
        })
    });
    m.case("empty batch", "400 '1 to 1000'", || {
        x.expect(400, "1 to 1000", true, || {
            api.send_batch_raw(&b_id, br#"{"messages": []}"#)
        })
    });
    m.case("batch of 1001 messages", "400 '1 to 1000'", || {
        let msgs: Vec<Outgoing> = (0..1001)
            .map(|i| Outgoing {
                id: Some(format!("bulk-{i}")),
                content_type: None,
                body: b"x".to_vec(),
            })
            .collect();
        x.expect(400, "1 to 1000", true, || api.send_batch(&b_id, &msgs))
    });
    m.case(
        "batch with one message over max_message_bytes",
        "413 'messages[1]'",
        || {
            let msgs = vec![
                Outgoing {
                    id: Some("ok-1".into()),
                    content_type: None,
                    body: b"fine".to_vec(),
                },
                Outgoing {
                    id: Some("too-big".into()),
                    content_type: None,
                    body: big.clone(),
                },
            ];
            x.expect(413, "messages[1]", true, || api.send_batch(&b_id, &msgs))
        },
    );
    m.case(
        "batch with one bad id after good messages (all or nothing)",
        "400 'Message-Id'",
        || {
            let msgs = vec![
                Outgoing {
                    id: Some("good-1".into()),
                    content_type: None,
                    body: b"1".to_vec(),
                },
                Outgoing {
                    id: Some("good-2".into()),
                    content_type: None,
                    body: b"2".to_vec(),
                },
                Outgoing {
                    id: Some("bad id".into()),
                    content_type: None,
                    body: b"3".to_vec(),
                },
            ];
            x.expect(400, "Message-Id", true, || api.send_batch(&b_id, &msgs))
        },
    );
    m.case("ack that is not JSON", "400 'bad JSON'", || {
        x.expect(400, "bad JSON", true, || api.ack_raw(b"ids=1,2"))
    });
    m.case(
        "ack with ids that are not strings",
        "400 'bad JSON'",
        || x.expect(400, "bad JSON", true, || api.ack_raw(br#"{"ids": [1, 2]}"#)),
    );
    m.case("ack of 1001 ids", "400 'at most 1000'", || {
        let ids: Vec<String> = (0..1001).map(|i| format!("id-{i}")).collect();
        x.expect(400, "at most 1000", true, || {
            api.ack_raw(json!({ "ids": ids }).to_string().as_bytes())
        })
    });
    m.case("ack of ids nobody sent", "200, acknowledged 0", || {
        x.expect(200, "\"acknowledged\":0", false, || {
            api.ack_raw(br#"{"ids": ["never-seen-1", "never-seen-2"]}"#)
        })
    });
    m.case("inbox limit=0", "400 'limit must be 1 to 1000'", || {
        x.expect(400, "limit must be 1 to 1000", true, || {
            api.request("GET", "/v1/inbox?limit=0", &[], b"")
        })
    });
    m.case("inbox limit=5000", "400 'limit must be 1 to 1000'", || {
        x.expect(400, "limit must be 1 to 1000", true, || {
            api.request("GET", "/v1/inbox?limit=5000", &[], b"")
        })
    });
    m.case("inbox limit=abc", "400", || {
        x.expect(400, "limit", false, || {
            api.request("GET", "/v1/inbox?limit=abc", &[], b"")
        })
    });
    m.case("inbox wait=-1", "400", || {
        x.expect(400, "wait", false, || {
            api.request("GET", "/v1/inbox?wait=-1", &[], b"")
        })
    });
    m.case(
        "inbox wait=3600 with messages waiting",
        "200 at once",
        || {
            let started = Instant::now();
            let r = x.expect(200, "from-b-0", false, || {
                api.request("GET", "/v1/inbox?wait=3600", &[], b"")
            })?;
            ensure(started.elapsed() < Duration::from_secs(10), || {
                format!("took {:?} with messages waiting", started.elapsed())
            })?;
            Ok(r)
        },
    );
    m.case("unknown route", "404", || {
        x.expect(404, "", false, || {
            api.request("GET", "/v1/nothing-here", &[], b"")
        })
    });
    m.case("GET on the send route", "405", || {
        x.expect(405, "", false, || {
            api.request("GET", &format!("/v1/peers/{b_id}/messages"), &[], b"")
        })
    });
    m.case("DELETE on the inbox", "405", || {
        x.expect(405, "", false, || {
            api.request("DELETE", "/v1/inbox", &[], b"")
        })
    });
    m.case("malformed request line", "400", || {
        x.expect(400, "", false, || {
            raw_http(net.node("a").api_port, b"HELLO THERE\r\n\r\n")
        })
    });
    m.case("200 request headers", "431", || {
        let mut req =
            format!("GET /v1/inbox HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n");
        for i in 0..200 {
            req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        x.expect(431, "", false, || {
            raw_http(net.node("a").api_port, req.as_bytes())
        })
    });
    m.case("a 1 MiB request header", "431", || {
        let req = format!(
            "GET /v1/inbox HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "y".repeat(1024 * 1024)
        );
        x.expect(431, "", false, || raw_http(net.node("a").api_port, req.as_bytes()))
    });
    m.case(
        "long poll wait=3600 on an empty inbox (b)",
        "200 after 60 s (clamped)",
        || {
            let (r, took) = rx.recv_timeout(Duration::from_secs(100)).map_err(|_| {
                "no answer within 100 s: wait=3600 is not clamped to 60".to_string()
            })?;
            let r = r?;
            ensure(r.code == 200, || r.describe())?;
            ensure(
                took >= Duration::from_secs(59) && took <= Duration::from_secs(90),
                || format!("answered after {took:?}"),
            )?;
            Ok(format!(
                "HTTP {} after {:.1} s: {}",
                r.code,
                took.as_secs_f64(),
                one_line(&r.text(), 40)
            ))
        },
    );
    m.finish(30);
    net.terminate_all();
}

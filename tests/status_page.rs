//! The admin status page in a real browser: Debian's Chromium, headless, loads
//! the page of running gateways and must show the peers and their states as the
//! page's own JavaScript renders them from /v1/status.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use peerlink_e2e::gateway::{Net, WAIT};

fn chromium() -> Option<PathBuf> {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        let p = PathBuf::from(candidate);
        if p.exists() {
            return Some(p);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("chromium is required in CI (.ci/run installs it) but is not installed");
    }
    eprintln!("skipping: chromium is not installed (apt-get install chromium)");
    None
}

/// The DOM after the page's scripts ran (bounded by Chromium's virtual time budget).
fn rendered_dom(browser: &PathBuf, url: &str, profile: &std::path::Path) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state_cell(dom: &str, peer: &str) -> Option<String> {
    let row = dom.find(&format!("data-peer=\"{peer}\""))?;
    let rest = &dom[row..];
    let start = rest.find("class=\"state ")? + "class=\"state ".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

#[test]
fn status_page_shows_peers_and_their_states_in_a_browser() {
    let Some(browser) = chromium() else { return };
    let mut net = Net::mesh(&["a", "b", "c"]);
    net.start_all(&["a", "b"]);
    net.wait("a to show b connected", WAIT, |net| {
        net.check_state("a", "b", &["connected"]).map(|_| ())
    });
    let url = format!("http://{}/", net.node("a").admin());
    let (b, c) = (net.id("b"), net.id("c"));
    // c never started: a shows it down. Poll the rendered page (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let profile = net.path(&format!("chromium-profile-{attempt}"));
        let dom = rendered_dom(&browser, &url, &profile);
        let (sb, sc) = (state_cell(&dom, &b), state_cell(&dom, &c));
        if sb.as_deref() == Some("connected")
            && sc.as_deref().is_some_and(|s| s != "connected")
            && dom.contains(&net.id("a"))
            && dom.contains("data-loaded=\"true\"")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed b connected and c down; b={sb:?} c={sc:?}\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    net.terminate_all();
}

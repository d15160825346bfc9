//! The bad-input matrix (issue 6): enumerated bad inputs to `ca-tool`, to the peer
//! link and to the gateway's API. Each case states the action, the expected
//! refusal (exit code, TLS refusal reason or Goodbye, HTTP status) and a fragment of
//! the message that must explain it, and checks that nothing changed:
//!
//! - `ca-tool`: every case runs on its own copy of a CA directory (a node with a
//!   partner, a server certificate and a CRL); the copy must be byte-for-byte
//!   unchanged (`snapshot`/`assert_unchanged`) and no output file may appear.
//! - the link: gateway `a` is linked to `b`; the `a`–`b` link must stay the same
//!   link (same `since` on both sides, `b` untouched) and `a`'s refusal counters may
//!   move only by the expected reason.
//! - the API: `a`'s inbox (2 messages from `b`) and outbox (3 messages for `c`, whose
//!   gateway is down) must be unchanged, through the API and in the SQLite store
//!   (every table but the link leases, which the gateway renews on its own).
//!
//! Every case can fail on its own; all of them run, then a table (case, expected,
//! actual) is printed and the test fails if any case did.
//!
//! | module | surface | test |
//! |---|---|---|
//! | `ca_tool` | `ca-tool` commands | `ca_tool_bad_inputs` |
//! | `link` | the peer listener and the link (TLS, Hello, frames) | `link_bad_inputs` |
//! | `api` | the gateway's API for local applications | `api_bad_inputs` |
//!
//! Here: the matrix itself ([`Matrix`]) and the store snapshot the link and API
//! cases compare. Run `cargo build --workspace --bins` first, then `cargo test
//! --test bad_input_matrix` (one surface: `cargo test --test bad_input_matrix
//! link::`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Instant;

mod api;
mod ca_tool;
mod link;

// ---------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------

struct Row {
    case: String,
    expected: String,
    actual: String,
    failure: Option<String>,
}

/// The cases of one surface, run one by one; a failing case does not stop the others.
struct Matrix {
    surface: &'static str,
    rows: Vec<Row>,
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

fn one_line(s: &str, max: usize) -> String {
    let s: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

impl Matrix {
    fn new(surface: &'static str) -> Matrix {
        Matrix {
            surface,
            rows: Vec::new(),
        }
    }

    /// Runs one case. `check` returns what actually happened (Ok when it is what
    /// was expected and nothing changed) or why the case fails.
    fn case(&mut self, case: &str, expected: &str, check: impl FnOnce() -> Result<String, String>) {
        let n = self.rows.len() + 1;
        eprintln!("--- {} case {n}: {case}", self.surface);
        let started = Instant::now();
        let (actual, failure) = match std::panic::catch_unwind(AssertUnwindSafe(check)) {
            Ok(Ok(actual)) => (actual, None),
            Ok(Err(why)) => (one_line(&why, 200), Some(why)),
            Err(e) => {
                let why = panic_text(&*e);
                (one_line(&why, 200), Some(why))
            }
        };
        eprintln!(
            "    {} in {:.1} s: {actual}",
            if failure.is_some() { "FAILED" } else { "ok" },
            started.elapsed().as_secs_f64()
        );
        self.rows.push(Row {
            case: format!("{n:2}. {case}"),
            expected: expected.to_string(),
            actual,
            failure,
        });
    }

    /// Prints the table; fails when a case failed or there are fewer than `min`.
    fn finish(self, min: usize) {
        let mut table = format!(
            "\n==== bad-input matrix: {} ({} cases) ====\n",
            self.surface,
            self.rows.len()
        );
        let w = self.rows.iter().map(|r| r.case.len()).max().unwrap_or(0);
        let we = self
            .rows
            .iter()
            .map(|r| r.expected.chars().count())
            .max()
            .unwrap_or(0);
        let _ = writeln!(table, "     {:w$} | {:we$} | actual", "case", "expected");
        for r in &self.rows {
            let _ = writeln!(
                table,
                "{} {:w$} | {:we$} | {}",
                if r.failure.is_some() { "FAIL" } else { "  ok" },
                r.case,
                r.expected,
                one_line(&r.actual, 110)
            );
        }
        println!("{table}");
        let failed: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.failure.as_ref().map(|f| format!("{}:\n{f}", r.case)))
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} {} cases failed:\n\n{}\n{table}",
            failed.len(),
            self.rows.len(),
            self.surface,
            failed.join("\n\n")
        );
        assert!(
            self.rows.len() >= min,
            "only {} {} cases",
            self.rows.len(),
            self.surface
        );
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// The first column, as text, of every row `sql` returns.
async fn first_column(conn: &mut sqlx::SqliteConnection, sql: &str) -> Result<Vec<String>, String> {
    use sqlx::Row;
    Ok(sqlx::query(sql)
        .fetch_all(conn)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect())
}

/// Every table of a gateway's SQLite store but the link leases, as text rows.
fn store_rows(
    rt: &tokio::runtime::Runtime,
    db: &Path,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    use sqlx::Connection;
    rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| format!("open {}: {e}", db.display()))?;
        let mut out = BTreeMap::new();
        let tables = first_column(
            &mut conn,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '_sqlx%' AND name <> 'link_leases' ORDER BY name",
        )
        .await?;
        for table in tables {
            let cols = first_column(
                &mut conn,
                &format!("SELECT name FROM pragma_table_info('{table}')"),
            )
            .await?;
            let expr = cols
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let rows = first_column(
                &mut conn,
                &format!("SELECT {expr} FROM \"{table}\" ORDER BY 1"),
            )
            .await?;
            // A per-peer outbox epoch is the one change an impossible Ack may make
            // (it concerns that peer only); everything else must stay as it was.
            let rows = rows
                .into_iter()
                .filter(|r| !(table == "meta" && r.starts_with("'outbox_epoch:")))
                .collect();
            out.insert(table, rows);
        }
        let _ = conn.close().await;
        Ok(out)
    })
}

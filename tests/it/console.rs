//! The operator console (`/ui/`) in a real headless Chromium, driven through Debian's
//! chromedriver (WebDriver), against the real server over HTTPS with its self-signed
//! certificate. Needs `chromium` and `chromedriver` on PATH (scripts/test installs them).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use crate::common::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Longest wait for something the page does by itself (a fetch, a render, a download).
const PATIENCE: Duration = Duration::from_secs(60);

// ---------- browser plumbing ---------------------------------------------------------

/// At most two browsers at once: the build machines have two cores.
static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
const MAX_BROWSERS: usize = 2;

struct Slot;

impl Slot {
    fn take() -> Self {
        let (lock, cv) = &SLOTS;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= MAX_BROWSERS {
            used = cv.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (lock, cv) = &SLOTS;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cv.notify_one();
    }
}

/// chromedriver in its own process group; dropping it kills the group, so chromium never
/// outlives a test, also a failing one.
struct Driver {
    child: Child,
    port: u16,
    _slot: Slot,
}

/// How many times chromedriver is started when it exits before reporting its port.
const DRIVER_TRIES: usize = 3;

/// What chromedriver printed (stdout and stderr, the last `DRIVER_LOG_LINES` lines), for
/// the message when it does not start.
#[derive(Clone, Default)]
struct DriverLog(Arc<Mutex<VecDeque<String>>>);

const DRIVER_LOG_LINES: usize = 200;

impl DriverLog {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == DRIVER_LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.is_empty() {
            return "  (nothing)".to_string();
        }
        lines
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why one start of chromedriver gave no port.
enum DriverFailure {
    /// It exited (or closed its output) before reporting a port: worth another try.
    /// chromedriver `--port=0` binds [::1] on a port the kernel picks, then 127.0.0.1 on
    /// the same port, and exits ("IPv4 port not available") when an IPv4 socket (any test's
    /// server or connection on loopback) already has that port.
    Exited(String),
    /// It could not be run, or it ran without reporting a port for `PATIENCE`.
    Fatal(String),
}

impl Driver {
    fn start() -> Self {
        Self::try_start(&["chromedriver"]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `argv` as chromedriver (with `--port=0`, the port read from its stdout), up
    /// to `DRIVER_TRIES` times while it exits before reporting its port.
    fn try_start(argv: &[&str]) -> Result<Self, String> {
        let slot = Slot::take();
        let mut failures = Vec::new();
        for attempt in 1..=DRIVER_TRIES {
            match Self::start_once(argv) {
                Ok((child, port)) => {
                    return Ok(Driver {
                        child,
                        port,
                        _slot: slot,
                    })
                }
                Err(DriverFailure::Exited(why)) => failures.push(format!("try {attempt}: {why}")),
                Err(DriverFailure::Fatal(why)) => {
                    failures.push(format!("try {attempt}: {why}"));
                    break;
                }
            }
        }
        Err(format!(
            "chromedriver did not report its port ({} of {DRIVER_TRIES} tries):\n{}",
            failures.len(),
            failures.join("\n")
        ))
    }

    fn start_once(argv: &[&str]) -> Result<(Child, u16), DriverFailure> {
        let program = argv.join(" ");
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new(argv[0])
                .args(&argv[1..])
                .arg("--port=0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .map_err(|e| {
                    DriverFailure::Fatal(format!(
                        "cannot run {program}: {e} (scripts/ensure-chromium installs chromium-driver)"
                    ))
                })?
        };
        let log = DriverLog::default();
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        // Both streams are drained for as long as chromedriver runs, so it never blocks on
        // a full pipe; stdout also yields the port.
        drain(
            child.stdout.take().unwrap(),
            "stdout",
            log.clone(),
            Some(port_tx),
        );
        let stderr_done = drain(child.stderr.take().unwrap(), "stderr", log.clone(), None);
        match port_rx.recv_timeout(PATIENCE) {
            Ok(port) => Ok((child, port)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closed without a port: it is exiting, or has.
                let status = exit_status(&mut child, Duration::from_secs(10));
                let _ = stderr_done.recv_timeout(Duration::from_secs(2));
                Err(DriverFailure::Exited(format!(
                    "{program} exited before reporting a port ({status}); it printed:\n{}",
                    log.text()
                )))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(&child);
                let status = exit_status(&mut child, Duration::from_secs(10));
                Err(DriverFailure::Fatal(format!(
                    "{program} reported no port within {PATIENCE:?} (killed: {status}); it printed:\n{}",
                    log.text()
                )))
            }
        }
    }
}

/// Reads `stream` line by line (bytes, so a non-UTF-8 line does not end the reading) into
/// `log` until it closes; the first "started successfully on port N" goes to `port`. The
/// returned channel closes when the stream has.
fn drain(
    stream: impl std::io::Read + Send + 'static,
    name: &'static str,
    log: DriverLog,
    port: Option<mpsc::Sender<u16>>,
) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _done = done_tx;
        let mut port = port;
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let (Some(tx), Ok(p)) = (port.take(), digits.parse()) {
                    let _ = tx.send(p);
                }
            }
            log.push(format!("[{name}] {line}"));
        }
    });
    done_rx
}

/// SIGKILL to the child's process group (chromedriver and the browsers it started).
fn kill_group(child: &Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
}

/// The child's exit status, waiting up to `limit` for it to exit; killed after that.
fn exit_status(child: &mut Child, limit: Duration) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                kill_group(child);
                return match child.wait() {
                    Ok(status) => format!("still running after {limit:?}, killed: {status}"),
                    Err(e) => format!("still running after {limit:?}, wait failed: {e}"),
                };
            }
            Err(e) => return format!("wait failed: {e}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        kill_group(&self.child);
        let _ = self.child.wait();
    }
}

/// A stand-in for chromedriver (run as `sh <script>`): counts its runs in `counter` and on
/// the first `failing` runs fails as chromedriver does when the IPv4 side of its port is
/// taken; after that reports port 4444 and waits.
fn fake_chromedriver(dir: &Path, failing: u32) -> (PathBuf, PathBuf) {
    let counter = dir.join("runs");
    let script = dir.join("chromedriver.sh");
    std::fs::write(
        &script,
        format!(
            "runs=$(cat '{counter}' 2>/dev/null || echo 0)\n\
             echo $((runs + 1)) > '{counter}'\n\
             if [ \"$runs\" -lt {failing} ]; then\n\
             echo 'Starting ChromeDriver (fake) on port 0'\n\
             echo 'IPv4 port not available. Exiting...'\n\
             echo '[1.000][SEVERE]: bind() failed: Address already in use (98)' >&2\n\
             exit 1\n\
             fi\n\
             echo 'ChromeDriver was started successfully on port 4444.'\n\
             exec sleep 600\n",
            counter = counter.display()
        ),
    )
    .unwrap();
    (script, counter)
}

fn runs(counter: &Path) -> String {
    std::fs::read_to_string(counter).unwrap().trim().to_string()
}

#[test]
fn a_chromedriver_that_exits_before_reporting_its_port_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let (script, counter) = fake_chromedriver(dir.path(), DRIVER_TRIES as u32 - 1);
    let driver =
        Driver::try_start(&["sh", script.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(driver.port, 4444);
    assert_eq!(runs(&counter), DRIVER_TRIES.to_string());
}

#[test]
fn a_chromedriver_that_never_starts_fails_with_its_output_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let (script, counter) = fake_chromedriver(dir.path(), u32::MAX);
    let Err(message) = Driver::try_start(&["sh", script.to_str().unwrap()]) else {
        panic!("a chromedriver that always exits was taken as started");
    };
    assert_eq!(runs(&counter), DRIVER_TRIES.to_string(), "{message}");
    assert!(
        message.contains(&format!("({DRIVER_TRIES} of {DRIVER_TRIES} tries)")),
        "{message}"
    );
    for what in [
        "exit status: 1",
        "[stdout] IPv4 port not available. Exiting...",
        "[stderr] [1.000][SEVERE]: bind() failed: Address already in use (98)",
    ] {
        assert_eq!(
            message.matches(what).count(),
            DRIVER_TRIES,
            "{what} once per try in: {message}"
        );
    }
}

/// A browser session; `download_dir` is where Chrome saves downloads.
async fn browser(driver: &Driver, download_dir: Option<&Path>) -> Client {
    let mut options = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1280,1600",
        ],
    });
    if let Some(dir) = download_dir {
        options["prefs"] = json!({
            "download.default_directory": dir.to_str().unwrap(),
            "download.prompt_for_download": false,
            "download.directory_upgrade": true,
        });
    }
    let caps = json!({
        "browserName": "chrome",
        "acceptInsecureCerts": true,
        // An alert must stay open so the test can see it (the default dismisses it).
        "unhandledPromptBehavior": "ignore",
        "goog:chromeOptions": options,
    });
    let caps = caps.as_object().unwrap().clone();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("WebDriver session")
}

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
}

/// Waits until the view `name` has rendered.
async fn wait_view(c: &Client, name: &str) {
    wait_css(c, &format!("#view[data-ready=\"{name}\"]")).await;
}

async fn text_of(c: &Client, css: &str) -> String {
    wait_css(c, css).await.text().await.unwrap()
}

/// Opens the console and signs in with `token` (the form is shown when no one is signed
/// in).
async fn sign_in(c: &Client, server: &TestServer, token: &str) {
    c.goto(&server.url("/ui/")).await.unwrap();
    let input = wait_css(c, "#token-input").await;
    input.send_keys(token).await.unwrap();
    click(c, "#sign-in-button").await;
}

async fn go(c: &Client, server: &TestServer, route: &str) {
    c.goto(&server.url(&format!("/ui/#/{route}")))
        .await
        .unwrap();
}

/// Runs JavaScript and returns its result.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

// ---------- server-side helpers ------------------------------------------------------

fn heartbeat_body(node_id: &str, key: &SigningKey, seq: u64) -> Value {
    let sent_at = "2026-01-01T00:00:00Z";
    let canonical = format!("lucid-hb-v1|{node_id}|{seq}|{sent_at}|1|2048|0.5|256");
    let signature = B64.encode(key.sign(canonical.as_bytes()).to_bytes());
    json!({"seq": seq, "sent_at": sent_at, "sessions_active": 1, "bytes_relayed": 2048,
           "cpu_load": 0.5, "mem_used_mb": 256, "signature": signature})
}

async fn heartbeat(server: &TestServer, token: &str, node_id: &str, key: &SigningKey, seq: u64) {
    let (status, body) = server
        .call(
            "POST",
            &format!("/api/v1/nodes/{node_id}/heartbeat"),
            Some(token),
            Some(heartbeat_body(node_id, key, seq)),
        )
        .await;
    assert_eq!(status, 202, "heartbeat refused: {body}");
}

/// A server whose PoOT epochs last 2 s.
async fn short_epoch_server() -> TestServer {
    TestServer::start_with(&[
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
    ])
    .await
}

/// Registers a node for `operator`, sends heartbeats every 250 ms until the node has at
/// least `proofs` proofs; returns its id.
async fn node_with_proofs(
    server: &TestServer,
    operator: &str,
    name: &str,
    proofs: usize,
) -> String {
    let (node, key) = server.register_node(operator, name).await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;
    let mut seq = 0;
    wait_until_every(PATIENCE, Duration::from_millis(250), async || {
        seq += 1;
        heartbeat(server, &token, &id, &key, seq).await;
        if seq % 4 == 0 && proof_history(server, &id).await.len() >= proofs {
            Ok(())
        } else {
            Err(format!("the node did not get {proofs} proofs"))
        }
    })
    .await;
    id
}

async fn credit(server: &TestServer, node_id: &str, amount: &str) {
    let (status, body) = server
        .call(
            "POST",
            &format!("/api/v1/nodes/{node_id}/ledger"),
            Some(&server.admin),
            Some(json!({"amount_usdt": amount, "reason": "console test"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

// ---------- tests --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_exactly_their_own_nodes_and_counts() {
    // Day-long epochs: the balances it checks must not move when a 5-minute epoch closes
    // and credits the online nodes mid-test.
    let server = TestServer::start_with(&[("POOT_CALCULATION_INTERVAL", "1d")]).await;
    let op_a = server.cli_token("operator", "op-a");
    let op_b = server.cli_token("operator", "op-b");
    let (alpha1, key1) = server.register_node(&op_a, "alpha-one").await;
    let (alpha2, _) = server.register_node(&op_a, "alpha-two").await;
    let (bravo, bravo_key) = server.register_node(&op_b, "bravo-one").await;
    let alpha1 = alpha1["node_id"].as_str().unwrap().to_string();
    let alpha2 = alpha2["node_id"].as_str().unwrap().to_string();
    let bravo = bravo["node_id"].as_str().unwrap().to_string();
    // alpha-one online; the other operator's node online too, with a balance.
    let t1 = server.login_node(&alpha1, &key1).await;
    heartbeat(&server, &t1, &alpha1, &key1, 1).await;
    let tb = server.login_node(&bravo, &bravo_key).await;
    heartbeat(&server, &tb, &bravo, &bravo_key, 1).await;
    credit(&server, &alpha2, "1.25").await;
    credit(&server, &bravo, "7").await;

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &op_a).await;
    wait_view(&c, "overview").await;

    assert_eq!(text_of(&c, "#count-total").await, "2");
    assert_eq!(text_of(&c, "#count-online").await, "1");
    assert_eq!(text_of(&c, "#count-registered").await, "1");
    assert_eq!(text_of(&c, "#count-offline").await, "0");
    assert_eq!(text_of(&c, "#unpaid-total").await, "1.250000 USDT");
    let mut names = Vec::new();
    for a in c
        .find_all(Locator::Css("#overview-nodes a.node-link"))
        .await
        .unwrap()
    {
        names.push(a.text().await.unwrap());
    }
    names.sort();
    assert_eq!(names, ["alpha-one", "alpha-two"]);
    let page = text_of(&c, "body").await;
    assert!(!page.contains("bravo-one"), "another operator's node shown");
    assert!(!page.contains(&bravo), "another operator's node id shown");
    assert!(text_of(&c, "#who-text")
        .await
        .starts_with("op-a (operator)"));
    let admin_link = c.find(Locator::Id("nav-admin")).await.unwrap();
    assert!(
        !admin_link.is_displayed().await.unwrap(),
        "operator sees Admin"
    );
    // Pools with their fill as the API counts it (pools are not private).
    let (_, pools) = server.call("GET", "/api/v1/pools", Some(&op_a), None).await;
    let default = &pools["items"][0];
    let fill = format!("{} / {}", default["member_count"], default["capacity"]);
    assert!(page.contains(&fill), "pool fill {fill} missing: {page}");

    // The nodes table: search, filter and the link to the node page.
    go(&c, &server, "nodes").await;
    wait_view(&c, "nodes").await;
    assert_eq!(
        c.find_all(Locator::Css("#nodes-table tbody tr"))
            .await
            .unwrap()
            .len(),
        2
    );
    c.find(Locator::Id("filter-search"))
        .await
        .unwrap()
        .send_keys("TWO")
        .await
        .unwrap();
    let rows = c
        .find_all(Locator::Css("#nodes-table tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].text().await.unwrap().contains("alpha-two"));
    c.find(Locator::Id("filter-search"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    click(&c, "#filter-status option[value=\"online\"]").await;
    let rows = c
        .find_all(Locator::Css("#nodes-table tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].text().await.unwrap().contains("alpha-one"));
    click(&c, "#filter-status option[value=\"\"]").await;
    click(&c, "#sort option[value=\"balance-desc\"]").await;
    let first = text_of(&c, "#nodes-table tbody tr:first-child a.node-link").await;
    assert_eq!(first, "alpha-two", "highest balance first");
    c.find(Locator::Css(
        "#nodes-table tbody tr:first-child a.node-link",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_view(&c, "node").await;
    assert_eq!(text_of(&c, "#node-name").await, "alpha-two");
    assert_eq!(text_of(&c, "#node-balance").await, "1.250000 USDT");

    // The admin, in the same browser after signing out, sees the whole fleet.
    click(&c, "#sign-out").await;
    wait_css(&c, "#sign-in-form").await;
    sign_in(&c, &server, &server.admin).await;
    go(&c, &server, "overview").await;
    wait_view(&c, "overview").await;
    assert_eq!(text_of(&c, "#count-total").await, "3");
    assert_eq!(text_of(&c, "#count-online").await, "2");
    assert_eq!(text_of(&c, "#unpaid-total").await, "8.250000 USDT");
    assert!(text_of(&c, "body").await.contains("bravo-one"));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_named_like_html_is_shown_as_text_and_runs_nothing() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-x");
    let evil = "<img src=x onerror=alert(1)>";
    let (node, _) = server.register_node(&op, evil).await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let region = "<script>alert(2)</script>";
    let (status, body) = server
        .call(
            "PUT",
            &format!("/api/v1/nodes/{id}"),
            Some(&op),
            Some(json!({"region": region})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &op).await;
    wait_view(&c, "overview").await;
    assert_eq!(text_of(&c, "#overview-nodes a.node-link").await, evil);
    // From here on, record anything the Content-Security-Policy blocks.
    js(
        &c,
        "window.cspViolations = []; document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI)); return null;",
    )
    .await;
    go(&c, &server, "nodes").await;
    wait_view(&c, "nodes").await;
    assert_eq!(text_of(&c, "#nodes-table a.node-link").await, evil);
    go(&c, &server, &format!("node/{id}")).await;
    wait_view(&c, "node").await;
    assert_eq!(text_of(&c, "#node-name").await, evil);
    assert!(text_of(&c, "body").await.contains(region));

    // Nothing was parsed as markup, and no dialog opened.
    let injected = js(
        &c,
        "return document.querySelectorAll('#view img, #view script').length;",
    )
    .await;
    assert_eq!(injected, 0, "markup from a node name reached the DOM");
    let violations = js(&c, "return window.cspViolations;").await;
    assert_eq!(violations, json!([]), "the console broke its own CSP");
    assert!(c.get_alert_text().await.is_err(), "an alert dialog is open");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_page_draws_the_uptime_chart_from_proofs() {
    let server = short_epoch_server().await;
    let op = server.cli_token("operator", "op-chart");
    let id = node_with_proofs(&server, &op, "chart-node", 3).await;

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &op).await;
    wait_view(&c, "overview").await;
    go(&c, &server, &format!("node/{id}")).await;
    wait_view(&c, "node").await;
    // Online, or offline once the 2 s heartbeat timeout passed; seen either way.
    let status = text_of(&c, "#node-status").await;
    assert!(status == "online" || status == "offline", "{status}");
    assert_ne!(text_of(&c, "#node-last-heartbeat").await, "never");

    for chart in ["#chart-24h", "#chart-7d"] {
        let heights = js(
            &c,
            &format!(
                "return Array.from(document.querySelectorAll('{chart} rect.bar'), r => Number(r.getAttribute('height')));"
            ),
        )
        .await;
        let heights: Vec<f64> = serde_json::from_value(heights).unwrap();
        assert!(!heights.is_empty(), "{chart} has no bars");
        assert!(
            heights.iter().any(|h| *h > 0.0),
            "{chart} shows no uptime: {heights:?}"
        );
        let share = text_of(&c, &format!("{chart} + figcaption .uptime-share")).await;
        assert!(share.ends_with("% up") && share != "0.0% up", "{share}");
    }
    // The chart is drawn in the page's real layout, not a zero-size box.
    let size = js(
        &c,
        "const r = document.getElementById('chart-24h').getBoundingClientRect(); return [r.width, r.height];",
    )
    .await;
    assert!(
        size[0].as_f64().unwrap() > 200.0 && size[1].as_f64().unwrap() > 50.0,
        "{size}"
    );

    let png = c.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let path = target_dir().join("console-node.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();

    // On a phone-sized window the page does not scroll sideways.
    c.set_window_size(390, 844).await.unwrap();
    let overflow = js(
        &c,
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    )
    .await;
    assert!(
        overflow.as_f64().unwrap() <= 0.0,
        "page wider than a phone by {overflow} px"
    );
    std::fs::write(
        target_dir().join("console-node-phone.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payout_csv_download_equals_the_apis_payouts() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-pay");
    let (node, _) = server.register_node(&op, "payee").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    // Another node's payout must not appear in this node's file.
    let (other, _) = server.register_node(&op, "other").await;
    let other = other["node_id"].as_str().unwrap().to_string();

    // Three payouts: confirmed, failed (with a reason that needs CSV quoting), pending.
    async fn run(server: &TestServer) -> Vec<Value> {
        let (s, run) = server
            .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
            .await;
        assert_eq!(s, 200, "{run}");
        run["created"].as_array().unwrap().clone()
    }
    credit(&server, &id, "12.5").await;
    credit(&server, &other, "10").await;
    let first = run(&server).await;
    let mine = |list: &[Value]| {
        list.iter().find(|p| p["node_id"] == id.as_str()).unwrap()["payout_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let confirmed = mine(&first);
    let (s, body) = server
        .call(
            "POST",
            &format!("/api/v1/payouts/{confirmed}/confirm"),
            Some(&server.admin),
            Some(json!({"tx_hash": format!("{:064x}", 0xfeedu32)})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    credit(&server, &id, "10.000001").await;
    let failed = mine(&run(&server).await);
    let (s, body) = server
        .call(
            "POST",
            &format!("/api/v1/payouts/{failed}/fail"),
            Some(&server.admin),
            Some(json!({"reason": "treasury said \"no\", try later"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    run(&server).await; // the re-credited amount is paid again: pending

    let (s, api) = server
        .call("GET", &format!("/api/v1/payouts/{id}"), Some(&op), None)
        .await;
    assert_eq!(s, 200, "{api}");
    let payouts = api["payouts"].as_array().unwrap();
    assert_eq!(payouts.len(), 3, "{api}");

    let downloads = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    let c = browser(&driver, Some(downloads.path())).await;
    sign_in(&c, &server, &op).await;
    wait_view(&c, "overview").await;
    go(&c, &server, &format!("node/{id}")).await;
    wait_view(&c, "node").await;
    assert_eq!(
        c.find_all(Locator::Css("#payouts-table tbody tr"))
            .await
            .unwrap()
            .len(),
        3
    );
    click(&c, "#download-csv").await;
    let file = downloads.path().join(format!("payouts-{id}.csv"));
    let csv = wait_until(PATIENCE, async || match std::fs::read_to_string(&file) {
        Ok(csv) => Ok(csv),
        Err(e) => Err(format!("no download at {}: {e}", file.display())),
    })
    .await;

    // Row by row from the API's JSON, oldest first.
    let columns = [
        "payout_id",
        "node_id",
        "amount_usdt",
        "payout_address",
        "state",
        "created_at",
        "updated_at",
        "tx_hash",
        "attempts",
        "error",
    ];
    let field = |v: &Value| -> String {
        let s = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut expected = columns.join(",") + "\n";
    for p in payouts {
        let row: Vec<String> = columns.iter().map(|c| field(&p[*c])).collect();
        expected.push_str(&(row.join(",") + "\n"));
    }
    assert_eq!(csv, expected);
    assert!(
        csv.contains("\"treasury said \"\"no\"\", try later\""),
        "{csv}"
    );
    assert!(csv.contains(",confirmed,") && csv.contains(",failed,") && csv.contains(",pending,"));

    // And the same lines as the server's own CSV export for this node.
    let export = server
        .client
        .get(server.url("/api/v1/payouts?format=csv"))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut export_lines: Vec<&str> = export.lines().collect();
    let header = export_lines.remove(0);
    let mut export_mine: Vec<&str> = export_lines
        .into_iter()
        .filter(|l| l.split(',').nth(1) == Some(id.as_str()))
        .collect();
    let mut got: Vec<&str> = csv.lines().collect();
    assert_eq!(got.remove(0), header);
    got.sort();
    export_mine.sort();
    assert_eq!(got, export_mine);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_proof_verifies_in_the_browser_and_a_tampered_one_does_not() {
    let server = short_epoch_server().await;
    let op = server.cli_token("operator", "op-proof");
    let id = node_with_proofs(&server, &op, "prover", 3).await;
    let proofs = proof_history(&server, &id).await;
    let epochs: Vec<u64> = proofs
        .iter()
        .take(3)
        .map(|p| p["epoch"].as_u64().unwrap())
        .collect();
    assert!(
        proofs[0]["prev_proof_hash"].is_string(),
        "the chain check needs a previous proof"
    );

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &op).await;
    wait_view(&c, "overview").await;

    /// Clicks "verify" on an epoch's row and returns what the page says.
    async fn verify(c: &Client, epoch: u64) -> String {
        let row = format!("#proofs-table tr[data-epoch=\"{epoch}\"]");
        wait_css(c, &format!("{row} button.verify"))
            .await
            .click()
            .await
            .unwrap();
        let result = wait_css(
            c,
            &format!("{row} .verify-result.ok, {row} .verify-result.bad"),
        )
        .await;
        result.text().await.unwrap()
    }

    go(&c, &server, &format!("node/{id}")).await;
    wait_view(&c, "node").await;
    for (i, epoch) in epochs.iter().enumerate() {
        let said = verify(&c, *epoch).await;
        assert!(said.starts_with("valid ("), "epoch {epoch}: {said}");
        assert!(
            said.contains("epoch signature") && said.contains("inclusion path"),
            "{said}"
        );
        if i == 0 {
            assert!(said.contains("hash chain"), "{said}");
        }
    }

    // Tamper with what the API returns, in the page: the newest proof's credits, the next
    // one's epoch signature, the third one's epoch root. The console's own verification
    // code then runs on the changed proofs.
    let tamper = r#"
        const [e0, e1, e2] = arguments;
        const real = window.fetch;
        window.fetch = async (url, opts) => {
          const resp = await real(url, opts);
          if (!String(url).includes('/history')) return resp;
          const page = await resp.json();
          const at = (e) => page.items.find((p) => p.epoch === e);
          at(e0).credits_usdt = '99.000000';
          const sig = at(e1).epoch_signature;
          at(e1).epoch_signature = (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);
          const root = at(e2).epoch_root;
          at(e2).epoch_root = (root[0] === '0' ? '1' : '0') + root.slice(1);
          return new Response(JSON.stringify(page), {status: resp.status, headers: resp.headers});
        };
        location.hash = '#/overview';
        return null;
        "#;
    c.execute(tamper, epochs.iter().map(|e| json!(e)).collect())
        .await
        .unwrap();
    wait_view(&c, "overview").await;
    js(&c, &format!("location.hash = '#/node/{id}'; return null;")).await;
    wait_view(&c, "node").await;
    let said = verify(&c, epochs[0]).await;
    assert!(said.starts_with("invalid: proof hash"), "{said}");
    let said = verify(&c, epochs[1]).await;
    assert!(said.starts_with("invalid: epoch signature"), "{said}");
    let said = verify(&c, epochs[2]).await;
    assert!(said.starts_with("invalid: inclusion path"), "{said}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_expired_token_shows_the_sign_in_message() {
    let server = TestServer::start().await;
    let driver = Driver::start();
    let c = browser(&driver, None).await;

    // Not a token at all.
    sign_in(&c, &server, "not-a-token").await;
    let msg = wait_css(&c, "#sign-in-message:not([hidden])").await;
    let text = msg.text().await.unwrap();
    assert!(text.starts_with("The token was not accepted"), "{text}");
    assert!(!c
        .find(Locator::Id("nav"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    let stored = js(&c, "return sessionStorage.length;").await;
    assert_eq!(stored, 0, "a refused token was kept");

    // A well-formed token with a broken signature.
    let good = server.cli_token("operator", "op-w");
    let forged = format!("{}x", &good[..good.len() - 1]);
    let forged = if forged == good {
        format!("{}y", &good[..good.len() - 1])
    } else {
        forged
    };
    sign_in(&c, &server, &forged).await;
    let text = text_of(&c, "#sign-in-message:not([hidden])").await;
    assert!(text.starts_with("The token was not accepted"), "{text}");

    // A token that expires during the session: the next page load says so.
    let short = server.cli_token_ttl("operator", "op-w", "1s");
    sign_in(&c, &server, &short).await;
    wait_view(&c, "overview").await;
    // 1 s of life plus the server's 5 s leeway, and a margin.
    tokio::time::sleep(Duration::from_secs(7)).await;
    go(&c, &server, "nodes").await;
    let text = text_of(&c, "#sign-in-message:not([hidden])").await;
    assert!(text.starts_with("Your token has expired"), "{text}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_pools_issues_tokens_and_closes_payouts_from_the_admin_page() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-adm");
    let (a, _) = server.register_node(&op, "to-confirm").await;
    let (b, _) = server.register_node(&op, "to-fail").await;
    let a = a["node_id"].as_str().unwrap().to_string();
    let b = b["node_id"].as_str().unwrap().to_string();
    credit(&server, &a, "10").await;
    credit(&server, &b, "11").await;
    let (s, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(s, 200, "{run}");
    let payout_of = |node: &str| {
        run["created"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == node)
            .unwrap()["payout_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (pa, pb) = (payout_of(&a), payout_of(&b));

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    // An operator is told the page is not theirs.
    sign_in(&c, &server, &op).await;
    wait_view(&c, "overview").await;
    go(&c, &server, "admin").await;
    wait_view(&c, "admin").await;
    assert!(text_of(&c, "#view")
        .await
        .contains("This page is for admins"));
    assert!(c.find(Locator::Id("create-pool")).await.is_err());
    click(&c, "#sign-out").await;

    sign_in(&c, &server, &server.admin).await;
    wait_view(&c, "overview").await;
    go(&c, &server, "admin").await;
    wait_view(&c, "admin").await;

    // A pool.
    wait_css(&c, "#pool-name")
        .await
        .send_keys("east-1")
        .await
        .unwrap();
    c.find(Locator::Id("pool-region"))
        .await
        .unwrap()
        .send_keys("eu-east")
        .await
        .unwrap();
    c.find(Locator::Id("pool-capacity"))
        .await
        .unwrap()
        .send_keys("7")
        .await
        .unwrap();
    click(&c, "#create-pool button[type=submit]").await;
    let said = text_of(&c, "#create-pool .message.ok").await;
    assert!(said.starts_with("Created pool east-1"), "{said}");
    let (_, pools) = server
        .call("GET", "/api/v1/pools", Some(&server.admin), None)
        .await;
    let east = pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "east-1")
        .expect("pool created");
    assert_eq!(east["capacity"], 7);
    assert_eq!(east["region"], "eu-east");

    // An operator token that works.
    c.find(Locator::Id("token-subject"))
        .await
        .unwrap()
        .send_keys("op-new")
        .await
        .unwrap();
    click(&c, "#issue-token button[type=submit]").await;
    let issued = wait_css(&c, "#issued-token")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let (status, _) = server
        .call("GET", "/api/v1/nodes", Some(&issued), None)
        .await;
    assert_eq!(status, 200, "the issued token is refused");
    let (_, audit) = server
        .call("GET", "/api/v1/audit?limit=500", Some(&server.admin), None)
        .await;
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "token.issue"
            && e["target"] == "op-new"
            && e["detail"]["role"] == "operator"));

    // Confirm one pending payout, fail the other.
    let row = |id: &str| format!("#pending-table tr[data-payout-id=\"{id}\"]");
    let tx = format!("{:064x}", 0xc0ffeeu32);
    c.find(Locator::Css(&format!("{} input.tx-hash", row(&pa))))
        .await
        .unwrap()
        .send_keys(&tx)
        .await
        .unwrap();
    c.find(Locator::Css(&format!(
        "{} form.inline:first-child button",
        row(&pa)
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_css(&c, &format!("{} td[colspan]", row(&pa))).await;
    c.find(Locator::Css(&format!("{} input.fail-reason", row(&pb))))
        .await
        .unwrap()
        .send_keys("wrong address")
        .await
        .unwrap();
    c.find(Locator::Css(&format!("{} button.danger", row(&pb))))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(&c, &format!("{} td[colspan]", row(&pb))).await;
    let pay_a = payouts_json(&server, &a).await;
    assert_eq!(pay_a["payouts"][0]["state"], "confirmed");
    assert_eq!(pay_a["payouts"][0]["tx_hash"], tx.as_str());
    let pay_b = payouts_json(&server, &b).await;
    assert_eq!(pay_b["payouts"][0]["state"], "failed");
    assert_eq!(pay_b["payouts"][0]["error"], "wrong address");
    assert_eq!(
        pay_b["balance_usdt"], "11.000000",
        "a failed payout is re-credited"
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_revokes_an_issued_token_and_a_whole_subject_from_the_admin_page() {
    let server = TestServer::start().await;
    let issue = async |subject: &str| {
        let (status, body) = server
            .call(
                "POST",
                "/api/v1/tokens",
                Some(&server.admin),
                Some(json!({"role": "operator", "subject": subject})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["token"].as_str().unwrap().to_string(),
            body["jti"].as_str().unwrap().to_string(),
        )
    };
    let (doomed, doomed_jti) = issue("op-rev").await;
    let (kept, kept_jti) = issue("op-rev").await;
    let whole_subject = server.cli_token("operator", "op-gone");
    for t in [&doomed, &kept, &whole_subject] {
        let (status, body) = server.call("GET", "/api/v1/nodes", Some(t), None).await;
        assert_eq!(status, 200, "{body}");
    }

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &server.admin).await;
    wait_view(&c, "overview").await;
    go(&c, &server, "admin").await;
    wait_view(&c, "admin").await;

    // The issued tokens are listed; the first click arms the button, the second revokes.
    let row = |jti: &str| format!("#issued-tokens tr[data-jti=\"{jti}\"]");
    wait_css(&c, &row(&kept_jti)).await;
    click(&c, &format!("{} button.revoke-token", row(&doomed_jti))).await;
    wait_text(
        &c,
        &format!("{} button.revoke-token", row(&doomed_jti)),
        "Really revoke?",
    )
    .await;
    let (status, _) = server
        .call("GET", "/api/v1/nodes", Some(&doomed), None)
        .await;
    assert_eq!(status, 200, "one click alone revokes nothing");
    click(&c, &format!("{} button.revoke-token", row(&doomed_jti))).await;
    wait_text(&c, &format!("{} .token-state", row(&doomed_jti)), "revoked").await;

    let (status, body) = server
        .call("GET", "/api/v1/nodes", Some(&doomed), None)
        .await;
    assert_problem(status, &body, 401, "token-revoked");
    let (status, body) = server.call("GET", "/api/v1/nodes", Some(&kept), None).await;
    assert_eq!(status, 200, "the other token of the subject: {body}");

    // Every token of a subject.
    wait_css(&c, "#revoke-subject")
        .await
        .send_keys("op-gone")
        .await
        .unwrap();
    click(&c, "#revoke-subject-form button[type=submit]").await;
    let said = text_of(&c, "#revoke-subject-form .message.ok").await;
    assert!(said.starts_with("Every token of op-gone"), "{said}");
    let (status, body) = server
        .call("GET", "/api/v1/nodes", Some(&whole_subject), None)
        .await;
    assert_problem(status, &body, 401, "token-revoked");
    // The page still lists the revoked token as revoked after its refresh.
    wait_text(&c, &format!("{} .token-state", row(&doomed_jti)), "revoked").await;
    c.close().await.unwrap();
}

/// `GET /api/v1/alerts{query}` with `token`, as the API answers it.
async fn alerts_of(server: &TestServer, token: &str, query: &str) -> Value {
    let (status, body) = server
        .call("GET", &format!("/api/v1/alerts{query}"), Some(token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `script` until it returns `want`.
async fn wait_js(c: &Client, script: &str, want: Value) {
    wait_until(PATIENCE, async || {
        let got = js(c, script).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{script} returned {got}, not {want}"))
        }
    })
    .await
}

/// Waits until the element at `css` shows exactly `want` (the page may still be filling
/// it in); fails with what it showed last.
async fn wait_text(c: &Client, css: &str, want: &str) {
    wait_until(PATIENCE, async || {
        // Found again each time: the page may replace the element meanwhile.
        let got = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.ok(),
            Err(_) => None,
        };
        if got.as_deref() == Some(want) {
            Ok(())
        } else {
            Err(format!("{css} shows {got:?}, not {want:?}"))
        }
    })
    .await
}

/// Waits until the form field at `css` holds exactly `want`.
async fn wait_value(c: &Client, css: &str, want: &str) {
    let script = format!(
        "const e = document.querySelector({}); return e && e.value;",
        json!(css)
    );
    wait_js(c, &script, json!(want)).await;
}

async fn click(c: &Client, css: &str) {
    wait_css(c, css).await.click().await.unwrap();
}

async fn value_of(c: &Client, css: &str) -> String {
    wait_css(c, css)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// The events whose boxes are ticked on the Alerts page, in page order.
async fn ticked_events(c: &Client) -> Value {
    js(
        c,
        "return Array.from(document.querySelectorAll('#alert-events input[type=checkbox]:checked'), b => b.value);",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_saves_and_removes_their_alert_webhook_on_the_alerts_page() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-alert");
    let url = "https://127.0.0.1:9/lucid?from=console";

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &op).await;
    wait_view(&c, "overview").await;
    js(
        &c,
        "window.cspViolations = []; document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI)); return null;",
    )
    .await;
    let link = c.find(Locator::Id("nav-alerts")).await.unwrap();
    assert!(link.is_displayed().await.unwrap(), "no Alerts link");
    link.click().await.unwrap();
    wait_view(&c, "alerts").await;

    // Nothing set yet: the defaults, and nothing to remove.
    assert_eq!(
        text_of(&c, "#alert-status").await,
        "No webhook set: nothing is sent."
    );
    assert_eq!(value_of(&c, "#alert-grace").await, "300");
    assert_eq!(
        ticked_events(&c).await,
        json!([
            "node.offline",
            "node.online",
            "payout.created",
            "payout.confirmed",
            "payout.failed"
        ])
    );
    assert!(!wait_css(&c, "#alert-remove")
        .await
        .is_displayed()
        .await
        .unwrap());
    assert!(
        c.find(Locator::Id("alert-scope")).await.is_err(),
        "operators choose no scope"
    );

    // Save: URL, secret, 60 s of grace, two events.
    wait_css(&c, "#alert-url")
        .await
        .send_keys(url)
        .await
        .unwrap();
    wait_css(&c, "#alert-secret")
        .await
        .send_keys("a shared secret")
        .await
        .unwrap();
    let grace = wait_css(&c, "#alert-grace").await;
    grace.clear().await.unwrap();
    grace.send_keys("60").await.unwrap();
    for off in ["node-online", "payout-created", "payout-confirmed"] {
        click(&c, &format!("#alert-event-{off}")).await;
    }
    click(&c, "#alert-save").await;
    let said = text_of(&c, "#alert-result.ok").await;
    assert!(said.starts_with("Saved"), "{said}");
    assert!(said.contains(url), "{said}");
    assert!(text_of(&c, "#alert-status").await.starts_with("Configured"));
    let secret = wait_css(&c, "#alert-secret").await;
    assert_eq!(
        secret.attr("placeholder").await.unwrap().unwrap(),
        "unchanged"
    );
    assert_eq!(secret.prop("value").await.unwrap().unwrap(), "");
    assert!(wait_css(&c, "#alert-remove")
        .await
        .is_displayed()
        .await
        .unwrap());

    // The API has exactly that.
    let saved = alerts_of(&server, &op, "").await;
    assert_eq!(saved["scope"], "operator");
    assert_eq!(saved["operator_id"], "op-alert");
    assert_eq!(saved["configured"], true);
    assert_eq!(saved["webhook_url"], url);
    assert_eq!(saved["secret_set"], true);
    assert_eq!(saved["offline_after_seconds"], 60);
    assert_eq!(saved["events"], json!(["node.offline", "payout.failed"]));
    assert!(saved["updated_at"].is_string(), "{saved}");
    assert!(saved.get("secret").is_none(), "{saved}");

    // A bad URL: the page shows what the API says, and nothing changes.
    let (status, problem) = server
        .call(
            "PUT",
            "/api/v1/alerts",
            Some(&op),
            Some(json!({"webhook_url": "ftp://x"})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let detail = problem["detail"].as_str().unwrap().to_string();
    assert!(!detail.is_empty());
    let field = wait_css(&c, "#alert-url").await;
    field.clear().await.unwrap();
    field.send_keys("ftp://x").await.unwrap();
    click(&c, "#alert-save").await;
    let said = text_of(&c, "#alert-result.error").await;
    assert_eq!(said, format!("Not saved: {detail}"));
    assert_eq!(
        alerts_of(&server, &op, "").await,
        saved,
        "a refused save changed something"
    );
    let violations = js(&c, "return window.cspViolations;").await;
    assert_eq!(violations, json!([]), "the Alerts page broke the CSP");

    // Reloaded, the page shows what is stored; on a phone it does not scroll sideways.
    c.refresh().await.unwrap();
    wait_view(&c, "alerts").await;
    assert_eq!(value_of(&c, "#alert-url").await, url);
    assert_eq!(value_of(&c, "#alert-grace").await, "60");
    assert_eq!(
        ticked_events(&c).await,
        json!(["node.offline", "payout.failed"])
    );
    c.set_window_size(390, 844).await.unwrap();
    let overflow = js(
        &c,
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
    )
    .await;
    assert!(
        overflow.as_f64().unwrap() <= 0.0,
        "Alerts page wider than a phone by {overflow} px"
    );
    js(
        &c,
        "document.getElementById('alert-events').scrollIntoView(); return null;",
    )
    .await;
    std::fs::create_dir_all(target_dir()).unwrap();
    std::fs::write(
        target_dir().join("console-alerts-phone.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // Remove takes a second click; Cancel backs out.
    click(&c, "#alert-remove").await;
    assert_eq!(text_of(&c, "#alert-remove").await, "Really remove?");
    click(&c, "#alert-remove-cancel").await;
    assert_eq!(text_of(&c, "#alert-remove").await, "Remove");
    assert_eq!(
        alerts_of(&server, &op, "").await,
        saved,
        "removed without confirmation"
    );
    click(&c, "#alert-remove").await;
    assert_eq!(
        alerts_of(&server, &op, "").await,
        saved,
        "removed on the first click"
    );
    click(&c, "#alert-remove").await;
    let said = text_of(&c, "#alert-result.ok").await;
    assert!(said.starts_with("Removed"), "{said}");
    let gone = alerts_of(&server, &op, "").await;
    assert_eq!(gone["configured"], false, "{gone}");
    assert_eq!(gone["secret_set"], false, "{gone}");
    assert!(gone["webhook_url"].is_null(), "{gone}");
    // The page shows "Removed" as soon as the DELETE is answered, then reads the settings
    // again and fills the form from them: wait for that, not for a fixed time.
    wait_text(&c, "#alert-status", "No webhook set: nothing is sent.").await;
    wait_value(&c, "#alert-url", "").await;
    assert!(c.get_alert_text().await.is_err(), "a native dialog is open");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_the_fleet_hook_on_the_alerts_page_and_leaves_operators_alone() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-own");
    let (status, body) = server
        .call(
            "PUT",
            "/api/v1/alerts",
            Some(&op),
            Some(
                json!({"webhook_url": "http://127.0.0.1:9/op", "secret": "op secret",
                        "offline_after_seconds": 120, "events": ["payout.created"]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = alerts_of(&server, &op, "").await;

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &server.admin).await;
    wait_view(&c, "overview").await;
    assert!(c
        .find(Locator::Id("nav-alerts"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    go(&c, &server, "alerts").await;
    wait_view(&c, "alerts").await;

    // The fleet-wide hook is the default.
    assert_eq!(value_of(&c, "#alert-scope").await, "fleet");
    assert!(!wait_css(&c, "#alert-operator")
        .await
        .is_displayed()
        .await
        .unwrap());
    assert!(text_of(&c, "#alert-whom").await.contains("fleet-wide"));
    wait_css(&c, "#alert-url")
        .await
        .send_keys("https://127.0.0.1:9/hook")
        .await
        .unwrap();
    wait_css(&c, "#alert-secret")
        .await
        .send_keys("fleet secret")
        .await
        .unwrap();
    click(&c, "#alert-save").await;
    let said = text_of(&c, "#alert-result.ok").await;
    assert!(said.starts_with("Saved"), "{said}");

    let fleet = alerts_of(&server, &server.admin, "").await;
    assert_eq!(fleet["scope"], "fleet");
    assert_eq!(fleet["configured"], true);
    assert_eq!(fleet["webhook_url"], "https://127.0.0.1:9/hook");
    assert_eq!(fleet["secret_set"], true);
    assert_eq!(fleet["offline_after_seconds"], 300);
    assert_eq!(fleet["events"].as_array().unwrap().len(), 5, "{fleet}");
    // The operator's own settings are untouched.
    assert_eq!(alerts_of(&server, &op, "").await, before);
    assert_eq!(
        alerts_of(&server, &server.admin, "?operator_id=op-own").await,
        before
    );

    // An operator's settings, by the id typed in the field.
    click(&c, "#alert-scope option[value=\"operator\"]").await;
    let id_field = wait_css(&c, "#alert-operator").await;
    assert!(id_field.is_displayed().await.unwrap());
    id_field.send_keys("op-own").await.unwrap();
    click(&c, "#alert-scope-show").await;
    wait_js(
        &c,
        "const u = document.getElementById('alert-url'); return u && u.value;",
        json!("http://127.0.0.1:9/op"),
    )
    .await;
    wait_view(&c, "alerts").await;
    assert!(text_of(&c, "#alert-whom").await.contains("op-own"));
    assert_eq!(value_of(&c, "#alert-grace").await, "120");
    assert_eq!(ticked_events(&c).await, json!(["payout.created"]));
    std::fs::create_dir_all(target_dir()).unwrap();
    std::fs::write(
        target_dir().join("console-alerts-admin.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    assert_eq!(
        wait_css(&c, "#alert-secret")
            .await
            .attr("placeholder")
            .await
            .unwrap()
            .unwrap(),
        "unchanged"
    );

    // A malformed id: the API's reason, and the chooser stays to fix it.
    let id_field = wait_css(&c, "#alert-operator").await;
    id_field.clear().await.unwrap();
    id_field.send_keys("no such op!").await.unwrap();
    click(&c, "#alert-scope-show").await;
    let said = text_of(&c, "#alert-load-error").await;
    assert!(
        said.starts_with("Could not load the settings: operator_id must be"),
        "{said}"
    );
    assert!(c.find(Locator::Id("alert-url")).await.is_err());

    // Back to the fleet hook.
    click(&c, "#alert-scope option[value=\"fleet\"]").await;
    click(&c, "#alert-scope-show").await;
    wait_js(
        &c,
        "const u = document.getElementById('alert-url'); return u && u.value;",
        json!("https://127.0.0.1:9/hook"),
    )
    .await;
    assert_eq!(alerts_of(&server, &op, "").await, before);
    c.close().await.unwrap();
}

#[tokio::test]
async fn the_console_is_served_with_strict_security_headers_and_slash_redirects() {
    let server = TestServer::start().await;
    let pem = std::fs::read(server.data_dir().join("tls/cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

    let resp = client.get(server.url("/")).send().await.unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(resp.headers()["location"], "/ui/");

    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/verify.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let resp = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(h["content-security-policy"], csp, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let etag = h["etag"].to_str().unwrap().to_string();
        assert!(!resp.bytes().await.unwrap().is_empty());
        // Revalidation answers 304 without a body.
        let again = client
            .get(server.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let html = client
        .get(server.url("/ui/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<script src=\"app.js\""), "{html}");

    // An unknown file: problem+json 404, still under the policy.
    let resp = client.get(server.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(resp.headers()["content-security-policy"], csp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "not-found");

    // The page needs no token, and the API behind it still does.
    let (status, _) = server.call("GET", "/api/v1/nodes", None, None).await;
    assert_eq!(status, 401);
    let (status, health) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["poot"]["epoch_length_seconds"], 300);
    assert!(health["poot"]["last_closed_epoch"].is_null(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_node_shows_the_one_command_that_enrols_a_node_in_the_chosen_pool() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-add");
    let pools = paginate_all(&server, "/api/v1/pools", &op).await;
    let pool_id = pools[0]["pool_id"].as_str().unwrap().to_string();

    let driver = Driver::start();
    let c = browser(&driver, None).await;
    sign_in(&c, &server, &op).await;
    wait_view(&c, "overview").await;
    js(
        &c,
        "window.cspViolations = []; document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI)); return null;",
    )
    .await;
    go(&c, &server, "nodes").await;
    wait_view(&c, "nodes").await;
    click(&c, "#add-node-card summary").await;
    wait_css(&c, "#enroll-name")
        .await
        .send_keys("<b>rack-7</b>")
        .await
        .unwrap();
    c.find(Locator::Css("#enroll-pool"))
        .await
        .unwrap()
        .select_by_value(&pool_id)
        .await
        .unwrap();
    click(&c, "#add-node-submit").await;
    wait_css(&c, "#enroll-command").await;
    let command = value_of(&c, "#enroll-command").await;
    let lines: Vec<&str> = command.lines().collect();
    assert_eq!(lines.len(), 2, "{command}");
    assert_eq!(lines[1], "systemctl enable --now lucid-node-agent");
    let words: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        &words[..4],
        &["lucid-node-management", "agent", "enroll", "--server"],
        "{command}"
    );
    assert_eq!(words[4], server.base);
    let arg = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).unwrap();
        words[i + 1].to_string()
    };
    let code = arg("--code");
    let fingerprint = arg("--fingerprint");
    assert!(fingerprint.starts_with("sha256:"), "{command}");
    // The open code is listed, without its secret.
    wait_css(&c, "#enroll-open-table tbody tr").await;
    let listed = text_of(&c, "#enroll-open-table").await;
    assert!(
        listed.contains("<b>rack-7</b>") && !listed.contains(&code),
        "{listed}"
    );
    let violations = js(&c, "return window.cspViolations;").await;
    assert_eq!(violations, json!([]), "the console broke its own CSP");
    let injected = js(&c, "return document.querySelectorAll('#view b').length;").await;
    assert_eq!(injected, 0);
    c.close().await.unwrap();

    // The command as shown, run on a "node" (with its files in a temporary directory):
    // it pins the certificate, redeems the code, and the node is the operator's, in the pool.
    let node_dir = tempfile::tempdir().unwrap();
    let config = node_dir.path().join("agent.toml");
    let state = node_dir.path().join("state");
    let mut args: Vec<&str> = words[1..].to_vec();
    args.extend([
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let out = run_cli(node_dir.path(), &[], &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = paginate_all(&server, "/api/v1/nodes", &op).await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["pool_id"], pool_id.as_str());
    assert_eq!(nodes[0]["name"], "<b>rack-7</b>");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains(nodes[0]["node_id"].as_str().unwrap()));
}

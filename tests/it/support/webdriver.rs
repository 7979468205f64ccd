//! A headless Chromium driven through chromedriver: the smallest W3C WebDriver client
//! the browser tests need, JSON over raw HTTP/1.1 to 127.0.0.1, with no crate beyond
//! `serde_json`.
//!
//! chromedriver runs as a child in a process group of its own, so the Chromium it starts
//! goes with it: dropping a [`Browser`] closes the session, then kills that group (and
//! only that group) by its id. Every request, start and wait has a time bound.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use super::process::free_port;

/// Where Debian's packages put the two programs; `CHROMEDRIVER` and `CHROMIUM` override.
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// How long chromedriver may take to answer `GET /status` with `ready: true`.
const DRIVER_START_LIMIT: Duration = Duration::from_secs(20);

/// How long one WebDriver command may take; starting Chromium on two busy cores is the
/// slowest of them.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// How long closing the session may take before the process group is killed anyway.
const QUIT_LIMIT: Duration = Duration::from_secs(10);

/// How long a killed chromedriver may take to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// Fresh ports tried when chromedriver cannot bind the first one.
const PORT_ATTEMPTS: usize = 3;

/// How often [`Browser::wait_until`] looks again.
const WAIT_POLL: Duration = Duration::from_millis(150);

/// The key under which W3C WebDriver passes an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The two programs a [`Browser`] needs.
#[derive(Debug, Clone)]
pub struct BrowserTools {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
}

impl BrowserTools {
    /// The programs named by `CHROMEDRIVER` and `CHROMIUM`, or else Debian's; `Err` says
    /// which is missing and where it was looked for.
    pub fn find() -> Result<BrowserTools, String> {
        let pick = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let tools = BrowserTools {
            chromedriver: pick("CHROMEDRIVER", DEFAULT_CHROMEDRIVER),
            chromium: pick("CHROMIUM", DEFAULT_CHROMIUM),
        };
        let missing: Vec<String> = [
            ("chromedriver (env CHROMEDRIVER)", &tools.chromedriver),
            ("chromium (env CHROMIUM)", &tools.chromium),
        ]
        .iter()
        .filter(|(_, path)| !path.is_file())
        .map(|(what, path)| format!("{what} not found at {}", path.display()))
        .collect();
        if missing.is_empty() {
            Ok(tools)
        } else {
            Err(missing.join("; "))
        }
    }
}

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A WebDriver error answer: the HTTP status, the W3C error code and its message.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first_line = self.message.lines().next().unwrap_or("");
        write!(f, "HTTP {} {}: {first_line}", self.status, self.error)
    }
}

/// chromedriver as a child leading its own process group.
struct Driver {
    child: Child,
    /// Its port on 127.0.0.1.
    port: u16,
    reaped: bool,
}

impl Driver {
    fn spawn(program: &Path, port: u16, log_path: &Path) -> Driver {
        let log = fs::File::create(log_path).expect("creating chromedriver's log");
        let mut cmd = Command::new(program);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("sharing chromedriver's log"))
            .stderr(log)
            // A group of its own, which the Chromium it starts joins: killing the group
            // ends the browser too, and nothing else.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Driver {
            child,
            port,
            reaped: false,
        }
    }

    /// Waits until `GET /status` says ready; `Err` if chromedriver exits or stays silent.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DRIVER_START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling chromedriver") {
                self.reaped = true;
                return Err(format!("chromedriver exited: {status}"));
            }
            if let Ok((200, body)) = exchange(self.port, "GET", "/status", None, WAIT_POLL * 10) {
                if body["value"]["ready"] == true {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no ready /status within {DRIVER_START_LIMIT:?}"));
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// SIGKILL to the whole group this driver leads, then a bounded reap of the driver.
    fn kill_group(&mut self) {
        if self.reaped {
            return;
        }
        // The group id is the driver's PID. It stays reserved until the driver is reaped,
        // which only happens below, so this cannot hit a group someone else made.
        let pgid = self.child.id();
        let killed = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !killed.as_ref().is_ok_and(|s| s.success()) {
            // The group may be gone already; the driver itself is still ours to end.
            let _ = self.child.kill();
        }
        let deadline = Instant::now() + REAP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.reaped = true;
                return;
            }
            thread::sleep(WAIT_POLL);
        }
        eprintln!("chromedriver (pid {pgid}) was not reaped within {REAP_LIMIT:?} of SIGKILL");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// A headless Chromium session. Dropping it ends the session and kills chromedriver's
/// process group.
pub struct Browser {
    driver: Driver,
    session: String,
    // Chromium's profile and chromedriver's log; declared after the driver so both
    // outlive the processes that use them.
    profile: TempDir,
    log_dir: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session with a
    /// `width`×`height` window. Panics with chromedriver's log if either does not start.
    pub fn start(tools: &BrowserTools, width: u32, height: u32) -> Browser {
        let log_dir = temp_dir("ta-chromedriver-");
        let profile = temp_dir("ta-chromium-profile-");
        let log_path = log_dir.path().join("chromedriver.log");
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut driver = Driver::spawn(&tools.chromedriver, port, &log_path);
            match driver.wait_ready() {
                Ok(()) => {
                    let session = new_session(&driver, tools, profile.path(), width, height)
                        .unwrap_or_else(|e| {
                            panic!(
                                "chromedriver could not start {}: {e}\n{}",
                                tools.chromium.display(),
                                read_log(&log_path)
                            )
                        });
                    return Browser {
                        driver,
                        session,
                        profile,
                        log_dir,
                    };
                }
                Err(why) => {
                    failures.push(format!("port {port}: {why}\n{}", read_log(&log_path)));
                    drop(driver);
                }
            }
        }
        panic!("chromedriver did not start:\n{}", failures.join("\n"));
    }

    /// Everything chromedriver wrote so far.
    pub fn log(&self) -> String {
        read_log(&self.log_dir.path().join("chromedriver.log"))
    }

    /// One command of this session: `path` is relative to `/session/{id}`.
    pub fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, WebDriverError> {
        let full = format!("/session/{}{path}", self.session);
        command(self.driver.port, method, &full, body)
    }

    fn must(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.command(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    /// Opens `url` and returns once the page has loaded.
    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Resizes the window, e.g. to a phone's 390×844.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.must(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        );
    }

    /// The first element matching the CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let body = json!({"using": "css selector", "value": css});
        match self.command("POST", "/element", Some(&body)) {
            Ok(value) => Some(element_of(&value)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("finding {css:?}: {e}"),
        }
    }

    /// The first element matching the CSS selector; panics if there is none.
    pub fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?}"))
    }

    /// Whether the element is rendered (not `hidden`, not `display: none`).
    pub fn displayed(&self, el: &Element) -> Result<bool, WebDriverError> {
        self.command("GET", &format!("/element/{}/displayed", el.0), None)
            .map(|v| v == true)
    }

    pub fn click(&self, el: &Element) {
        self.must(
            "POST",
            &format!("/element/{}/click", el.0),
            Some(&json!({})),
        );
    }

    /// Types `text` into the element; for an `<input type=file>`, `text` is a file's path.
    pub fn send_keys(&self, el: &Element, text: &str) {
        self.must(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(&json!({ "text": text })),
        );
    }

    /// The rendered text of the element.
    pub fn text(&self, el: &Element) -> String {
        self.must("GET", &format!("/element/{}/text", el.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// An attribute (or property of the same name) of the element.
    pub fn attribute(&self, el: &Element, name: &str) -> Option<String> {
        self.must("GET", &format!("/element/{}/attribute/{name}", el.0), None)
            .as_str()
            .map(str::to_string)
    }

    /// Runs `script` as a function body with `args` as `arguments`, and returns its value.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": args})),
        )
    }

    /// Saves the viewport as a PNG at `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.must("GET", "/screenshot", None);
        let png = data_encoding::BASE64
            .decode(b64.as_str().expect("a base64 screenshot").as_bytes())
            .expect("the screenshot is base64");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Asks `probe` every 150 ms until it returns `Some`, for at most `limit`. On timeout,
    /// panics naming `what`, with the page's visible text.
    pub fn wait_until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = probe(self) {
                return found;
            }
            if Instant::now() >= deadline {
                let page = self
                    .command(
                        "POST",
                        "/execute/sync",
                        Some(&json!({"script": "return document.body.innerText.slice(0, 4000);", "args": []})),
                    )
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .unwrap_or_else(|e| format!("<page text unavailable: {e}>"));
                panic!("{what} did not happen within {limit:?}; the page reads:\n{page}");
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// Waits until an element matching `css` exists and is displayed, and returns it.
    pub fn wait_for(&self, css: &str, limit: Duration) -> Element {
        self.wait_until(&format!("{css:?} showing"), limit, |b| {
            let el = b.try_find(css)?;
            // A node replaced between the two requests is looked for again.
            b.displayed(&el).ok()?.then_some(el)
        })
    }

    /// Waits until `script` returns something truthy, and returns that.
    pub fn wait_for_script(
        &self,
        what: &str,
        limit: Duration,
        script: &str,
        args: &[Value],
    ) -> Value {
        self.wait_until(what, limit, |b| {
            let v = b.execute(script, args);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            truthy.then_some(v)
        })
    }

    /// Waits for `css` to show, then clicks it.
    pub fn click_css(&self, css: &str, limit: Duration) {
        let el = self.wait_for(css, limit);
        self.click(&el);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session lets chromedriver end Chromium in order; the group kill in
        // `Driver::drop` then catches whatever is left.
        let path = format!("/session/{}", self.session);
        if let Err(e) = exchange(self.driver.port, "DELETE", &path, None, QUIT_LIMIT) {
            eprintln!("closing the browser session: {e}");
        }
        self.driver.kill_group();
    }
}

fn new_session(
    driver: &Driver,
    tools: &BrowserTools,
    profile: &Path,
    width: u32,
    height: u32,
) -> Result<String, WebDriverError> {
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--disable-default-apps".into(),
        "--disable-extensions".into(),
        "--disable-quic".into(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": tools.chromium.display().to_string(),
                    "args": args,
                },
            },
        },
    });
    let value = command(driver.port, "POST", "/session", Some(&caps))?;
    Ok(value["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no sessionId in {value}"))
        .to_string())
}

/// One WebDriver command: its `value` on success, the W3C error otherwise.
fn command(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, WebDriverError> {
    let (status, reply) =
        exchange(port, method, path, body, COMMAND_LIMIT).map_err(|e| WebDriverError {
            status: 0,
            error: "transport".into(),
            message: e,
        })?;
    let value = reply.get("value").cloned().unwrap_or(Value::Null);
    if status == 200 {
        return Ok(value);
    }
    Err(WebDriverError {
        status,
        error: value["error"]
            .as_str()
            .unwrap_or("unknown error")
            .to_string(),
        message: value["message"].as_str().unwrap_or_default().to_string(),
    })
}

fn element_of(value: &Value) -> Element {
    Element(
        value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {value}"))
            .to_string(),
    )
}

/// One HTTP/1.1 exchange with chromedriver on 127.0.0.1, JSON both ways, within `limit`.
/// Like the daemon tests' client it writes by hand what it needs and nothing more.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> Result<(u16, Value), String> {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, limit)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let payload = body.map(|b| serde_json::to_vec(b).expect("encoding a JSON body"));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    if let Some(bytes) = &payload {
        request.push_str("Content-Type: application/json; charset=utf-8\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", bytes.len()));
    } else if method != "GET" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    let mut out = request.into_bytes();
    out.extend_from_slice(payload.as_deref().unwrap_or_default());
    stream
        .write_all(&out)
        .map_err(|e| format!("sending {method} {path}: {e}"))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        // The answer is complete when its Content-Length is in, or when the server
        // closes the connection.
        if let Some((status, head_len, Some(len))) = head_of(&raw) {
            if raw.len() >= head_len + len {
                return finish(status, &raw[head_len..head_len + len], method, path);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("the answer to {method} {path} took over {limit:?}"));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("reading the answer to {method} {path}: {e}")),
        }
    }
    let (status, head_len, _) = head_of(&raw).ok_or_else(|| {
        format!(
            "no HTTP answer to {method} {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })?;
    finish(status, &raw[head_len..], method, path)
}

/// The status, the length of the head with its blank line, and the Content-Length.
fn head_of(raw: &[u8]) -> Option<(u16, usize, Option<usize>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    Some((status, split + 4, len))
}

fn finish(status: u16, body: &[u8], method: &str, path: &str) -> Result<(u16, Value), String> {
    let value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the answer to {method} {path} is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    })?;
    Ok((status, value))
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temp folder for the browser")
}

fn read_log(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

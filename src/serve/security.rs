//! What every request to the daemon must pass before it reaches a handler, and the
//! headers every answer carries.
//!
//! The rules, in the order they are checked:
//!
//! 1. **Host allowlist.** The `Host` header must name this machine by a loopback name
//!    (`localhost`, `127.0.0.1`, `[::1]`) or a name the operator allowed. A page on
//!    another site whose DNS name was re-pointed at 127.0.0.1 (DNS rebinding, the attack
//!    on Transmission's RPC in CVE-2018-5702) sends its own name, and is refused.
//! 2. **Authentication**, when a key is configured: `Authorization: Bearer KEY` or the
//!    session cookie from `POST /api/login`. Keys are compared in constant time, and an
//!    address that fails [`MAX_FAILURES`] times in [`FAILURE_WINDOW`] is locked out for
//!    [`LOCKOUT`].
//! 3. **State changes** (any method but GET, HEAD and OPTIONS) need the per-run token
//!    in `X-TA-Token` (except `POST /api/login`, see [`needs_token`]), and, when the
//!    browser says where the request comes from, it must be this origin: an `Origin`
//!    equal to our own, a `Sec-Fetch-Site` of `same-origin` or `none`. Bodies must be
//!    JSON, which a cross-site form cannot send; a login must have one.
//!
//! A media player cannot send a key: a **signed link** stands in for it on one route
//! only, a file's stream (`GET /api/torrents/{id}/files/{n}/stream?expires=T&sig=S`).
//! `S` is HMAC-SHA-256, under a key drawn at random for this run, of the exact raw path
//! and `T` (Unix seconds); it is valid until `T`, at most [`MAX_LINK_TTL`] ahead, for
//! that path alone, and until the daemon restarts. Authenticated clients get links from
//! `GET /api/torrents/{id}/files/{n}/link`.
//!
//! Every answer says `nosniff`, may not be framed, and allows only this origin's
//! scripts and styles. No answer carries `Access-Control-Allow-Origin`.
//!
//! The checks are pure functions, tested below; the middleware only applies them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use sha1::{Digest, Sha1};

use subtle::ConstantTimeEq;
use torrent_actors::http_stream::{check_link, sign_link, MAX_LINK_TTL};

use super::api::ApiError;

/// The header carrying the per-run token.
pub const TOKEN_HEADER: &str = "x-ta-token";

/// The login cookie's name.
pub const SESSION_COOKIE: &str = "ta_session";

/// Failed authentications an address may make in [`FAILURE_WINDOW`]...
pub const MAX_FAILURES: usize = 5;
/// ...before it is locked out this long.
pub const LOCKOUT: Duration = Duration::from_secs(300);
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);

/// How long a login lasts.
const LOGIN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most logins held at once; the oldest goes first.
const MAX_LOGINS: usize = 64;

/// Equality of two secrets in time that does not depend on where they differ (their
/// digests are compared, so not on their lengths either).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let da = Sha1::digest(a.as_bytes());
    let db = Sha1::digest(b.as_bytes());
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]`, `[v6]:port`),
/// lower-cased; `None` if malformed.
pub fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.len() > 255 {
        return None;
    }
    let name = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        format!("[{inner}]")
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name.to_string(),
            Some(_) => return None,
            None => value.to_string(),
        }
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which `Host` names are this daemon's.
#[derive(Debug, Clone)]
pub struct HostAllowlist {
    names: Vec<String>,
}

impl HostAllowlist {
    /// The loopback names, the address bound (if not a wildcard), and `extra`.
    pub fn new(bound: IpAddr, extra: &[String]) -> Self {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !bound.is_unspecified() && !bound.is_loopback() {
            names.push(match bound {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            });
        }
        names.extend(extra.iter().map(|n| n.to_ascii_lowercase()));
        Self { names }
    }

    pub fn allows(&self, host_header: Option<&str>) -> bool {
        host_header
            .and_then(host_name)
            .is_some_and(|name| self.names.contains(&name))
    }
}

/// Whether a state-changing request comes from our own page (or from no browser at
/// all): `Origin`, if sent, must be `http://` + our own `Host`; `Sec-Fetch-Site`, if
/// sent, must be `same-origin` or `none` (typed by the user).
pub fn same_origin(
    host: Option<&str>,
    origin: Option<&str>,
    fetch_site: Option<&str>,
) -> Result<(), &'static str> {
    if let Some(origin) = origin {
        let ours = host.map(|h| format!("http://{}", h.to_ascii_lowercase()));
        if ours.as_deref() != Some(origin.to_ascii_lowercase().as_str()) {
            return Err("cross-origin request refused");
        }
    }
    if let Some(site) = fetch_site {
        if !matches!(site, "same-origin" | "none") {
            return Err("cross-site request refused");
        }
    }
    Ok(())
}

/// Most addresses the lock-out tracks; past it, the stalest are forgotten.
const MAX_TRACKED: usize = 4096;

/// Failed authentications per address, and lock-outs. Pure: callers pass the time.
/// An IPv6 address counts by its /64, the block one host is usually given, so a host
/// cannot escape its lock-out (or fill the tables) by changing addresses within it.
#[derive(Debug, Default)]
pub struct Lockout {
    failures: HashMap<IpAddr, Vec<Instant>>,
    locked_until: HashMap<IpAddr, Instant>,
}

/// The key an address is counted under: itself for IPv4, its /64 for IPv6.
fn block_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
    }
}

impl Lockout {
    /// How long `ip` is still locked out, if it is.
    pub fn locked(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let ip = block_of(ip);
        match self.locked_until.get(&ip) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                self.locked_until.remove(&ip);
                None
            }
            None => None,
        }
    }

    /// Records a failure; true if it locked the address out.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = block_of(ip);
        let list = self.failures.entry(ip).or_default();
        list.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        list.push(now);
        let locked = list.len() >= MAX_FAILURES;
        if locked {
            self.failures.remove(&ip);
            self.locked_until.insert(ip, now + LOCKOUT);
        }
        self.bound(now);
        locked
    }

    pub fn succeed(&mut self, ip: IpAddr) {
        self.failures.remove(&block_of(ip));
    }

    /// Keeps both tables within [`MAX_TRACKED`] against a flood of addresses: what has
    /// expired goes first, then the entries with the oldest last failure (or the
    /// lock-outs ending soonest). Runs only past the bound, and then halves the table,
    /// so its cost is spread over many failures.
    fn bound(&mut self, now: Instant) {
        if self.failures.len() > MAX_TRACKED {
            self.failures.retain(|_, l| {
                l.last()
                    .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
            if self.failures.len() > MAX_TRACKED / 2 {
                let mut lasts: Vec<Instant> = self
                    .failures
                    .values()
                    .filter_map(|l| l.last().copied())
                    .collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() - MAX_TRACKED / 2];
                self.failures
                    .retain(|_, l| l.last().is_some_and(|t| *t >= cut));
            }
        }
        if self.locked_until.len() > MAX_TRACKED {
            self.locked_until.retain(|_, until| *until > now);
            if self.locked_until.len() > MAX_TRACKED / 2 {
                let mut ends: Vec<Instant> = self.locked_until.values().copied().collect();
                ends.sort_unstable();
                let cut = ends[ends.len() - MAX_TRACKED / 2];
                self.locked_until.retain(|_, until| *until >= cut);
            }
        }
    }

    /// Addresses tracked, failures and lock-outs.
    #[cfg(test)]
    pub fn tracked(&self) -> (usize, usize) {
        (self.failures.len(), self.locked_until.len())
    }
}

/// The daemon's secrets and who has logged in.
pub struct Guard {
    pub hosts: HostAllowlist,
    /// The per-run token for state changes.
    pub token: String,
    /// The key clients must present, if authentication is on.
    pub api_key: Option<String>,
    /// `GET /metrics` from a loopback address needs no key (`--metrics-without-key`):
    /// a scraper on the same machine, where the key would sit in its configuration.
    metrics_without_key: bool,
    logins: Mutex<HashMap<String, Instant>>,
    lockout: Mutex<Lockout>,
    /// The key of this run's signed stream links, drawn at random at start.
    link_key: [u8; 32],
}

/// How a request authenticated, or why not.
enum Auth {
    Ok,
    Missing,
    Wrong,
    Locked(Duration),
}

impl Guard {
    /// A guard for `hosts`, with this run's `token`, the `api_key` if any, and whether
    /// loopback scrapers may read `/metrics` without it.
    pub fn new(
        hosts: HostAllowlist,
        token: String,
        api_key: Option<String>,
        metrics_without_key: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            hosts,
            token,
            api_key,
            metrics_without_key,
            logins: Mutex::new(HashMap::new()),
            lockout: Mutex::new(Lockout::default()),
            link_key: rand::random(),
        })
    }

    /// A signed link's query (`expires=T&sig=S`) to `raw_path`, valid `ttl` from now
    /// (at most [`MAX_LINK_TTL`]), and its expiry in Unix seconds.
    pub fn link_query(&self, raw_path: &str, ttl: Duration) -> (String, u64) {
        let expires = unix_now() + ttl.min(MAX_LINK_TTL).as_secs().max(1);
        let sig = sign_link(&self.link_key, raw_path, expires);
        (format!("expires={expires}&sig={sig}"), expires)
    }

    /// Whether a request for `raw_path` from `ip` may skip authentication: a public
    /// path, or `/metrics` from loopback when the operator allowed it.
    pub fn skips_auth(&self, raw_path: &str, ip: IpAddr) -> bool {
        is_public(raw_path)
            || (self.metrics_without_key && raw_path == "/metrics" && ip.is_loopback())
    }

    pub fn auth_required(&self) -> bool {
        self.api_key.is_some()
    }

    /// Checks a key for `POST /api/login`: on success a new login's cookie value.
    pub fn login(&self, ip: IpAddr, key: &str) -> Result<String, ApiError> {
        let Some(expected) = &self.api_key else {
            return Err(ApiError::bad_request("authentication is not configured"));
        };
        let now = Instant::now();
        let mut lockout = self.lockout.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(left) = lockout.locked(ip, now) {
            return Err(ApiError::locked(left));
        }
        if !secrets_equal(key, expected) {
            lockout.fail(ip, now);
            return Err(ApiError::unauthorized("wrong key"));
        }
        lockout.succeed(ip);
        drop(lockout);
        let session = random_hex(32);
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.retain(|_, at| now.duration_since(*at) < LOGIN_LIFETIME);
        if logins.len() >= MAX_LOGINS {
            if let Some(oldest) = logins
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                logins.remove(&oldest);
            }
        }
        logins.insert(session.clone(), now);
        Ok(session)
    }

    /// Whether the request is authenticated (always, without a key configured).
    fn check_auth(&self, ip: IpAddr, bearer: Option<&str>, cookie: Option<&str>) -> Auth {
        let Some(expected) = &self.api_key else {
            return Auth::Ok;
        };
        let now = Instant::now();
        // A valid login counts before the lock-out: whoever shares the owner's address
        // (a NAT, a proxy) cannot lock a logged-in owner out by guessing.
        if let Some(cookie) = cookie {
            let logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
            let valid = logins.iter().any(|(k, at)| {
                secrets_equal(k, cookie) && now.duration_since(*at) < LOGIN_LIFETIME
            });
            if valid {
                return Auth::Ok;
            }
        }
        let mut lockout = self.lockout.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(left) = lockout.locked(ip, now) {
            return Auth::Locked(left);
        }
        match bearer {
            Some(key) if secrets_equal(key, expected) => {
                lockout.succeed(ip);
                Auth::Ok
            }
            Some(_) => {
                lockout.fail(ip, now);
                Auth::Wrong
            }
            None => Auth::Missing,
        }
    }

    pub fn is_authenticated(&self, req: &actix_web::HttpRequest) -> bool {
        let ip = peer_ip(req.peer_addr());
        let bearer = bearer_of(req.headers().get(header::AUTHORIZATION));
        let cookie = req.cookie(SESSION_COOKIE);
        matches!(
            self.check_auth(ip, bearer.as_deref(), cookie.as_ref().map(|c| c.value())),
            Auth::Ok
        )
    }
}

fn peer_ip(addr: Option<std::net::SocketAddr>) -> IpAddr {
    addr.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

fn bearer_of(value: Option<&HeaderValue>) -> Option<String> {
    let text = value?.to_str().ok()?;
    let (scheme, key) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_string())
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Paths anyone who may reach the daemon may fetch without the key: the page and its
/// files, the API description, and what login needs. An exact list of raw paths, so
/// anything else (an unknown path, a percent-encoded spelling of a public one) needs
/// the key: the check fails closed.
pub fn is_public(raw_path: &str) -> bool {
    matches!(
        raw_path,
        "/" | "/index.html"
            | "/app.js"
            | "/style.css"
            | "/favicon.svg"
            | "/api/auth"
            | "/api/login"
            | "/api/openapi.json"
    )
}

/// Whether a state-changing request to `raw_path` needs the per-run token.
///
/// Every one does but `POST /api/login`. The token is given only to those who have
/// proved the key (the page carries it only when the request is authenticated, and
/// `/api/token` needs the key), so a page that has not logged in yet cannot have it.
/// Of the two ways to let such a page log in, exempting login from the token is the
/// safer: handing the token to unauthenticated same-origin requests would make it
/// readable by anyone who can reach the daemon, while the exemption covers only a
/// request that already proves everything the token would: it must still come from
/// this origin when a browser sends it (`Origin`, `Sec-Fetch-Site`), carry JSON (which
/// a cross-site form cannot send, and a cross-site script could only send after a
/// CORS preflight that is never granted), stay under [`MAX_LOGIN_BODY`], and pass the
/// lock-out. What the token guards against, another site acting through the user's
/// browser, cannot happen here: to log in, that site would have to know the key.
/// The exact raw path is compared, so another spelling of it needs the token.
pub fn needs_token(raw_path: &str) -> bool {
    raw_path != "/api/login"
}

/// Largest body `POST /api/login` may send: it is read before anyone is authenticated.
pub const MAX_LOGIN_BODY: u64 = 4096;

/// Whether a body of this declared length (`None`: chunked or unknown) may be read
/// before authentication.
pub fn login_body_fits(content_length: Option<u64>) -> bool {
    content_length.is_some_and(|n| n <= MAX_LOGIN_BODY)
}

fn header_str(req: &ServiceRequest, name: impl header::AsHeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The checks of the module documentation, for every request.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let guard = req
        .app_data::<web::Data<Arc<Guard>>>()
        .expect("the guard is registered")
        .get_ref()
        .clone();
    let mut res = match check(&guard, &req).err() {
        None => next.call(req).await?.map_into_left_body(),
        Some(error) => {
            let (req, _) = req.into_parts();
            let response = actix_web::ResponseError::error_response(&error);
            ServiceResponse::new(req, response).map_into_right_body()
        }
    };
    add_headers(res.headers_mut());
    Ok(res)
}

fn check(guard: &Guard, req: &ServiceRequest) -> Result<(), ApiError> {
    let host = header_str(req, header::HOST);
    if !guard.hosts.allows(host) {
        return Err(ApiError::forbidden("this Host is not allowed"));
    }
    let path = req.uri().path();
    if path == "/api/login" && *req.method() == Method::POST {
        let length = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
        if !login_body_fits(length) || req.headers().contains_key(header::TRANSFER_ENCODING) {
            return Err(ApiError::too_large(format!(
                "a login body must declare its length, at most {MAX_LOGIN_BODY} bytes"
            )));
        }
    }
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    let link = if reads && guard.auth_required() {
        check_link(&guard.link_key, path, req.query_string(), unix_now())
    } else {
        Ok(None)
    };
    if !guard.skips_auth(path, peer_ip(req.peer_addr())) && link != Ok(Some(())) {
        let ip = peer_ip(req.peer_addr());
        let bearer = bearer_of(req.headers().get(header::AUTHORIZATION));
        let cookie = req.cookie(SESSION_COOKIE);
        match guard.check_auth(ip, bearer.as_deref(), cookie.as_ref().map(|c| c.value())) {
            Auth::Ok => {}
            Auth::Missing => {
                return Err(match link {
                    Err(e) => ApiError::unauthorized(e.to_string()),
                    Ok(_) => ApiError::unauthorized("authentication required"),
                })
            }
            Auth::Wrong => return Err(ApiError::unauthorized("wrong key")),
            Auth::Locked(left) => return Err(ApiError::locked(left)),
        }
    }
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        same_origin(
            host,
            header_str(req, header::ORIGIN),
            header_str(req, "sec-fetch-site"),
        )
        .map_err(ApiError::forbidden)?;
        let token = header_str(req, TOKEN_HEADER).unwrap_or("");
        if needs_token(path) && !secrets_equal(token, &guard.token) {
            return Err(ApiError::forbidden(
                "missing or wrong X-TA-Token (GET /api/token gives it)",
            ));
        }
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        let json = header_str(req, header::CONTENT_TYPE).is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if (has_body || !needs_token(path)) && !json {
            return Err(ApiError::unsupported_media_type(
                "request bodies must be application/json",
            ));
        }
    }
    Ok(())
}

/// The headers of every answer.
fn add_headers(headers: &mut actix_web::http::header::HeaderMap) {
    let set = |headers: &mut actix_web::http::header::HeaderMap,
               name: &'static str,
               value: &'static str| {
        headers.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
    );
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(headers, "cross-origin-resource-policy", "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
}

#[cfg(test)]
mod tests {
    use super::*;
    use torrent_actors::http_stream::LinkError;

    #[test]
    fn only_metrics_from_loopback_skips_the_key_and_only_when_allowed() {
        let guard = |open| {
            Guard::new(
                HostAllowlist::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &[]),
                "t".into(),
                Some("k".repeat(16)),
                open,
            )
        };
        let (open, closed) = (guard(true), guard(false));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let lan: IpAddr = "192.168.1.9".parse().unwrap();
        assert!(open.skips_auth("/metrics", lo) && open.skips_auth("/metrics", v6));
        assert!(!open.skips_auth("/metrics", lan), "another machine");
        assert!(!open.skips_auth("/%6detrics", lo), "another spelling");
        assert!(!open.skips_auth("/metrics/", lo) && !open.skips_auth("/api/metrics", lo));
        assert!(!open.skips_auth("/api/torrents", lo));
        assert!(!closed.skips_auth("/metrics", lo), "not allowed");
        assert!(
            closed.skips_auth("/api/login", lan),
            "public paths stay public"
        );
    }

    #[test]
    fn only_the_exact_login_path_skips_the_token() {
        assert!(!needs_token("/api/login"));
        for path in [
            "/api/torrents",
            "/api/%6Cogin",
            "/api//login",
            "/api/login/",
            "/API/login",
        ] {
            assert!(needs_token(path), "{path}");
        }
    }
    use std::net::Ipv4Addr;

    #[test]
    fn host_names_lose_their_ports_and_case() {
        assert_eq!(host_name("LocalHost:9091").as_deref(), Some("localhost"));
        assert_eq!(host_name("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_name("[::1]").as_deref(), Some("[::1]"));
        for bad in ["", "a:b", "[::1]x", "exa mple", "a:99999999", "x@y"] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_loopback_names_and_configured_ones_are_allowed() {
        let hosts = HostAllowlist::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &["nas.lan".into()]);
        for ok in [
            "localhost:9091",
            "127.0.0.1:9091",
            "[::1]:9091",
            "NAS.lan:9091",
        ] {
            assert!(hosts.allows(Some(ok)), "{ok}");
        }
        // DNS rebinding: an attacker's name pointed at 127.0.0.1.
        for bad in [
            "attacker.example:9091",
            "localhost.attacker.example",
            "127.0.0.2",
            "0.0.0.0:9091",
        ] {
            assert!(!hosts.allows(Some(bad)), "{bad}");
        }
        assert!(!hosts.allows(None));
        let wide = HostAllowlist::new("192.168.1.5".parse().unwrap(), &[]);
        assert!(wide.allows(Some("192.168.1.5:9091")));
        assert!(!HostAllowlist::new("0.0.0.0".parse().unwrap(), &[]).allows(Some("0.0.0.0")));
    }

    #[test]
    fn state_changes_must_come_from_our_origin_or_no_browser() {
        let host = Some("127.0.0.1:9091");
        assert!(same_origin(host, Some("http://127.0.0.1:9091"), Some("same-origin")).is_ok());
        assert!(same_origin(host, None, None).is_ok());
        assert!(same_origin(host, None, Some("none")).is_ok());
        assert!(same_origin(host, Some("http://evil.example"), None).is_err());
        assert!(same_origin(host, Some("null"), None).is_err());
        assert!(same_origin(host, Some("http://127.0.0.1:9092"), None).is_err());
        assert!(same_origin(host, None, Some("cross-site")).is_err());
        assert!(same_origin(host, None, Some("same-site")).is_err());
    }

    #[test]
    fn repeated_failures_lock_an_address_out_for_a_while() {
        let mut lockout = Lockout::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES - 1 {
            assert!(!lockout.fail(ip, t0 + Duration::from_secs(i as u64)));
        }
        assert!(lockout.locked(ip, t0).is_none());
        assert!(lockout.fail(ip, t0 + Duration::from_secs(10)));
        assert!(lockout.locked(ip, t0 + Duration::from_secs(11)).is_some());
        assert!(lockout.locked(other, t0).is_none());
        assert!(lockout
            .locked(ip, t0 + Duration::from_secs(10) + LOCKOUT)
            .is_none());
        // Failures spread beyond the window never add up to a lock-out.
        let mut slow = Lockout::default();
        for i in 0..20u64 {
            assert!(!slow.fail(ip, t0 + FAILURE_WINDOW * i as u32));
        }
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_the_tables_stay_bounded() {
        let mut lockout = Lockout::default();
        let t0 = Instant::now();
        // Five failures from five addresses of one /64 lock the whole /64.
        for i in 0..MAX_FAILURES as u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i + 1));
            lockout.fail(ip, t0);
        }
        let neighbour: IpAddr = "2001:db8:0:1::ffff".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert!(lockout.locked(neighbour, t0).is_some());
        assert!(lockout.locked(elsewhere, t0).is_none());
        // A flood of addresses, one failure each, never grows the tables past the bound.
        for i in 0..(3 * MAX_TRACKED as u32) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            lockout.fail(ip, t0 + Duration::from_millis(u64::from(i)));
            let (failures, locked) = lockout.tracked();
            assert!(failures <= MAX_TRACKED + 1 && locked <= MAX_TRACKED + 1);
        }
        // The most recent guessers are still counted.
        let last = IpAddr::V4(std::net::Ipv4Addr::from(
            0x0a00_0000 + 3 * MAX_TRACKED as u32 - 1,
        ));
        for _ in 1..MAX_FAILURES {
            lockout.fail(last, t0 + Duration::from_secs(100));
        }
        assert!(lockout
            .locked(last, t0 + Duration::from_secs(101))
            .is_some());
    }

    #[test]
    fn only_the_exact_public_paths_skip_the_key() {
        for public in [
            "/",
            "/app.js",
            "/api/login",
            "/api/auth",
            "/api/openapi.json",
        ] {
            assert!(is_public(public), "{public}");
        }
        for private in [
            "/api/torrents",
            "/api/token",
            "/%61pi/torrents",
            "/api/%74orrents",
            "/api//torrents",
            "/api/login/",
            "/API/torrents",
            "/nope",
            "",
        ] {
            assert!(!is_public(private), "{private}");
        }
    }

    #[test]
    fn a_login_body_must_be_small_and_declared() {
        assert!(login_body_fits(Some(20)));
        assert!(login_body_fits(Some(MAX_LOGIN_BODY)));
        assert!(!login_body_fits(Some(MAX_LOGIN_BODY + 1)));
        assert!(!login_body_fits(None));
    }

    const PATH: &str = "/api/torrents/0123456789abcdef0123456789abcdef01234567/files/2/stream";

    #[test]
    fn a_link_expiring_too_far_ahead_is_refused_and_made_links_are_capped() {
        let key = [7u8; 32];
        let far = 10 + MAX_LINK_TTL.as_secs() + 1;
        let sig = sign_link(&key, PATH, far);
        assert_eq!(
            check_link(&key, PATH, &format!("expires={far}&sig={sig}"), 10),
            Err(LinkError::TooFarAhead)
        );
        let guard = Guard::new(
            HostAllowlist::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), &[]),
            "t".into(),
            Some("k".into()),
            false,
        );
        let (query, expires) = guard.link_query(PATH, Duration::from_secs(u64::MAX / 4));
        assert!(expires <= unix_now() + MAX_LINK_TTL.as_secs());
        assert_eq!(
            check_link(&guard.link_key, PATH, &query, unix_now()),
            Ok(Some(()))
        );
    }

    #[test]
    fn secrets_compare_by_value_only() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
        assert!(!secrets_equal("", "a"));
    }
}

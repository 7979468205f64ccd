//! The HTTP side of a Tracker actor: one GET per announce, with a bounded body.
//!
//! It owns the `reqwest::Client` of one tracker URL and the limits on what a reply may
//! cost us (time, redirects, body size). It must not build query strings, read bencode
//! or decide which redirects are safe itself: `crate::tracker::http` does all three.
//!
//! Redirects are followed here, by hand, rather than by reqwest's policy: the rule
//! ([`http::check_redirect`]) needs the addresses the target's name resolves to, which a
//! redirect policy (a synchronous callback) cannot look up without blocking the thread.
//! Each hop is [`pinned_hop`]'s: the target resolved once, checked, and connected to
//! through a client pinned to exactly the checked addresses, as web seeds' are.

use std::time::Duration;

use reqwest::redirect::Policy;
use url::Url;

use super::{error_chain, AnnounceError, TrackerConfig, TrackerError};
use crate::engine::redirect::{pinned_hop, HopError};
use crate::tracker::http::{self, HttpError, RedirectError};
use crate::tracker::{AnnounceRequest, AnnounceResponse};

/// The most body bytes read from an error reply (4xx, 5xx) to look for a `failure
/// reason`: such pages carry a short message or nothing useful at all.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Announces to one HTTP or HTTPS tracker. Cloning is cheap, so each announce future can
/// own a copy.
#[derive(Clone)]
pub(super) struct HttpTransport {
    /// The single client of this tracker, which applies the overall request timeout and
    /// keeps no connection between announces (see [`client_builder`]).
    client: reqwest::Client,
    /// The announce URL from the metainfo; the query is appended per announce.
    base: Url,
    /// The largest reply body accepted, so a hostile tracker cannot make us buffer
    /// an endless stream.
    max_body: usize,
    /// The timeout the client was built with, named in the error when it fires; it
    /// bounds a whole announce, redirects included.
    timeout: Duration,
    /// How many redirects one announce may follow.
    max_redirects: usize,
}

impl HttpTransport {
    /// Builds the client for `config.url`.
    pub(super) fn new(config: &TrackerConfig) -> Result<HttpTransport, TrackerError> {
        let client = client_builder(config.request_timeout)
            .build()
            .map_err(|e| TrackerError::HttpClient(error_chain(&e)))?;
        Ok(HttpTransport {
            client,
            base: config.url.clone(),
            max_body: config.max_body,
            timeout: config.request_timeout,
            max_redirects: config.max_redirects,
        })
    }

    /// Sends the GET for `url`, following the redirects [`http::check_redirect`] allows,
    /// and returns the first reply that is not a redirect. The whole chain shares one
    /// timeout.
    async fn get_following_redirects(&self, url: Url) -> Result<reqwest::Response, AnnounceError> {
        let chain = async {
            let mut current = url;
            let mut response = self
                .client
                .get(current.clone())
                .send()
                .await
                .map_err(|e| self.request_error(e))?;
            let mut hops = 0;
            loop {
                let Some(location) = redirect_location(&response) else {
                    return Ok(response);
                };
                hops += 1;
                let target = current
                    .join(location)
                    .map_err(|_| AnnounceError::Redirect(RedirectError::BadLocation))?;
                let client = pinned_hop(
                    &current,
                    response.remote_addr(),
                    &target,
                    hops,
                    self.max_redirects,
                    client_builder(self.timeout),
                )
                .await
                .map_err(|e| match e {
                    HopError::Redirect(e) => AnnounceError::Redirect(e),
                    HopError::Resolve { host, reason } => AnnounceError::Resolve { host, reason },
                    HopError::Client(text) => AnnounceError::Request(text),
                })?;
                response = client
                    .get(target.clone())
                    .send()
                    .await
                    .map_err(|e| self.request_error(e))?;
                current = target;
            }
        };
        tokio::time::timeout(self.timeout, chain)
            .await
            .unwrap_or(Err(AnnounceError::TimedOut(self.timeout)))
    }

    /// Sends one announce and parses the reply.
    pub(super) async fn announce(
        &self,
        request: &AnnounceRequest,
    ) -> Result<AnnounceResponse, AnnounceError> {
        let url = http::announce_url(&self.base, request).map_err(AnnounceError::HttpReply)?;
        let mut response = self.get_following_redirects(url).await?;
        let status = response.status();
        if !status.is_success() {
            // Some trackers refuse with an error status and still explain themselves in
            // a bencoded `failure reason`; that text tells the user more than a number.
            let reason = read_capped(&mut response, ERROR_BODY_LIMIT)
                .await
                .ok()
                .and_then(|body| match http::parse_announce_response(&body) {
                    Err(HttpError::Failure(reason)) => Some(reason),
                    _ => None,
                });
            return Err(match reason {
                Some(reason) => AnnounceError::Refused(reason),
                None => AnnounceError::Status(status.as_u16()),
            });
        }
        let body = read_capped(&mut response, self.max_body)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => AnnounceError::BodyTooLarge {
                    limit: self.max_body,
                },
                BodyError::Transfer(e) => self.request_error(e),
            })?;
        http::parse_announce_response(&body).map_err(|e| match e {
            HttpError::Failure(reason) => AnnounceError::Refused(reason),
            other => AnnounceError::HttpReply(other),
        })
    }

    /// Turns a client error into announce-error text without the request URL, which
    /// carries the info-hash and, on private trackers, the user's passkey.
    fn request_error(&self, error: reqwest::Error) -> AnnounceError {
        if error.is_timeout() {
            AnnounceError::TimedOut(self.timeout)
        } else {
            AnnounceError::Request(error_chain(&error.without_url()))
        }
    }
}

/// A client with the tracker's limits that follows no redirect by itself, and a new
/// connection for every announce. Announces are minutes apart, so a kept connection
/// saves nothing, and trackers close connections when they like (opentracker right
/// after each reply): a request sent on one as it closes is lost. A hybrid's second
/// announce, right after the first, lost that race about one time in twenty.
fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(Policy::none())
        .user_agent(concat!("torrent-actors/", env!("CARGO_PKG_VERSION")))
}

/// The `Location` of a redirect reply (301, 302, 303, 307, 308), or `None` for any
/// other reply. A redirect without a usable `Location` is handed back as it is and
/// ends as an error status.
fn redirect_location(response: &reqwest::Response) -> Option<&str> {
    matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308)
        .then(|| response.headers().get(reqwest::header::LOCATION))
        .flatten()
        .and_then(|value| value.to_str().ok())
}

/// Why a body could not be read whole.
enum BodyError {
    /// It is longer than the limit.
    TooLarge,
    /// The transfer failed or timed out.
    Transfer(reqwest::Error),
}

/// Reads the body chunk by chunk, giving up as soon as it would exceed `limit`, so the
/// memory spent on one reply never exceeds the limit plus one chunk.
async fn read_capped(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transfer)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

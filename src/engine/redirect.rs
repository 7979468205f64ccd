//! One HTTP redirect hop, for the clients that follow redirects by hand: the trackers'
//! (`tracker::http_client`) and the web seeds' (`webseed`).
//!
//! Each caller reads the reply and its `Location` by its own rules (a tracker hands a
//! redirect without a usable `Location` back as an error status; a web seed refuses it);
//! from the target on, the hop is the same for both, and is here: the URL rule
//! ([`check_redirect_url`]), the target's name resolved once, every address it gave
//! checked against the address the redirect came from ([`check_redirect`]), and a client
//! pinned to exactly those addresses, so a name that answers differently the second time
//! (DNS rebinding) cannot slip past the check.

use std::net::{IpAddr, SocketAddr};

use url::Url;

use super::tracker::error_chain;
use crate::tracker::http::{check_redirect, check_redirect_url, RedirectError};

/// Why a redirect hop is not taken.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    /// The redirect breaks a rule.
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    /// The target's name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    /// The pinned client could not be built.
    #[error("{0}")]
    Client(String),
}

/// Checks the `hops`-th redirect, from a request for `current` answered from `from` (the
/// reply's own address, if the connection said), to `target`, and returns a client for
/// `target` alone built from `builder` (which must follow no redirect by itself), its
/// name pinned to the addresses checked.
pub async fn pinned_hop(
    current: &Url,
    from: Option<SocketAddr>,
    target: &Url,
    hops: usize,
    max_hops: usize,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, HopError> {
    check_redirect_url(current, target, hops, max_hops)?;
    // Without the reply's address, the strictest assumption: an Internet host.
    let from = from.map_or(IpAddr::from([192, 0, 2, 1]), |a| a.ip());
    let addrs = resolve(target).await?;
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    check_redirect(current, from, target, &ips, hops, max_hops)?;
    let builder = match target.host() {
        Some(url::Host::Domain(name)) => builder.resolve_to_addrs(name, &addrs),
        _ => builder,
    };
    builder
        .build()
        .map_err(|e| HopError::Client(error_chain(&e)))
}

/// The addresses of `url`'s host: the literal itself, or what the system resolver says.
pub async fn resolve(url: &Url) -> Result<Vec<SocketAddr>, HopError> {
    let port = url.port_or_known_default().unwrap_or(80);
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(vec![SocketAddr::from((ip, port))]),
        Some(url::Host::Ipv6(ip)) => Ok(vec![SocketAddr::from((ip, port))]),
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map(Iterator::collect)
            .map_err(|e| HopError::Resolve {
                host: name.to_string(),
                reason: e.to_string(),
            }),
        None => Err(RedirectError::BadLocation.into()),
    }
}

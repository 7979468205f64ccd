//! Web seeds (BEP 19): the `url-list` of a `.torrent`, checked into [`WebSeedUrl`]s, and
//! the URL of each file on such a server.
//!
//! `url-list` is optional, so a bad entry costs that entry only, never the torrent: each
//! is kept or refused on its own, with a [`WebSeedError`] saying why. Only `http` and
//! `https` URLs with a host pass, at most [`MAX_WEB_SEEDS`] of them and each at most
//! [`MAX_WEB_SEED_URL_BYTES`] long. Nothing here talks to the network.

use std::fmt;

use url::Url;

use crate::bencode::Value;
use crate::layout::FileEntry;

/// The most web seeds a torrent may name; the rest are refused. Each one costs a few
/// connections and an actor, and no real torrent lists more than a handful of mirrors.
pub const MAX_WEB_SEEDS: usize = 16;

/// The longest web seed URL accepted, in bytes: far beyond any real mirror's address,
/// short enough that a torrent cannot make each request carry megabytes of URL.
pub const MAX_WEB_SEED_URL_BYTES: usize = 2048;

/// Why one `url-list` entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebSeedError {
    /// `url-list` is neither a string nor a list, or an entry is not a string.
    #[error("url-list entry is not a string")]
    NotText,
    /// The entry is longer than [`MAX_WEB_SEED_URL_BYTES`].
    #[error("web seed URL is {len} bytes, more than the {limit} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// More entries than [`MAX_WEB_SEEDS`]; this one is past the limit.
    #[error("more than {limit} web seeds, the rest are ignored")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// The entry does not parse as a URL.
    #[error("not a URL: {0}")]
    NotAUrl(String),
    /// A scheme other than `http` or `https` (`ftp`, `file`, `javascript`, ...).
    #[error("web seed scheme {0:?} is not supported (only http and https are)")]
    Scheme(String),
    /// The URL has no host to connect to.
    #[error("web seed URL has no host")]
    NoHost,
    /// The same URL appears earlier in the list.
    #[error("web seed listed twice")]
    Duplicate,
}

/// A web seed's URL, checked: `http` or `https`, with a host, of bounded length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebSeedUrl(Url);

impl WebSeedUrl {
    /// Checks one URL as [`web_seeds`] does (length, syntax, scheme, host).
    pub fn parse(text: &str) -> Result<WebSeedUrl, WebSeedError> {
        if text.len() > MAX_WEB_SEED_URL_BYTES {
            return Err(WebSeedError::TooLong {
                len: text.len(),
                limit: MAX_WEB_SEED_URL_BYTES,
            });
        }
        let url = Url::parse(text.trim()).map_err(|e| WebSeedError::NotAUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebSeedError::Scheme(url.scheme().to_string()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WebSeedError::NoHost);
        }
        // Parsing may lengthen it (percent-encoding), so the limit holds for the result
        // too: the value checked is the value used.
        if url.as_str().len() > MAX_WEB_SEED_URL_BYTES {
            return Err(WebSeedError::TooLong {
                len: url.as_str().len(),
                limit: MAX_WEB_SEED_URL_BYTES,
            });
        }
        Ok(WebSeedUrl(url))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// Where `file` lives on this server (BEP 19). A multi-file torrent's files are
    /// under the URL taken as a folder, then the torrent's name and the file's path; a
    /// single-file torrent's file is the URL itself, or the torrent's name under it when
    /// it ends with `/`. Each path component is percent-encoded, so a name holding `?`,
    /// `#` or `%` stays one component. `file.path` already starts with the torrent's
    /// name.
    pub fn file_url(&self, file: &FileEntry, multi_file: bool) -> Url {
        let mut url = self.0.clone();
        let ends_in_slash = url.path().ends_with('/');
        if !multi_file && !ends_in_slash {
            return url;
        }
        if let Ok(mut segments) = url.path_segments_mut() {
            // `pop_if_empty` drops the empty segment after a trailing `/`, so the names
            // follow the folder without an empty component between.
            segments.pop_if_empty();
            segments.extend(file.path.components());
        }
        url
    }
}

impl fmt::Display for WebSeedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl std::ops::Deref for WebSeedUrl {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl serde::Serialize for WebSeedUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// An entry of `url-list` that was not taken, and why, for the log and `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedWebSeed {
    /// The entry as found, cut to [`MAX_WEB_SEED_URL_BYTES`] and lossily decoded.
    pub entry: String,
    /// Why it was refused.
    pub reason: WebSeedError,
}

/// `url-list` (BEP 19): a single string or a list of them. Returns the usable URLs, in
/// order and each once, and the refused entries with their reasons. At most
/// `2 × MAX_WEB_SEEDS` entries are looked at; the rest are summed up in one refusal, so
/// a list of a million entries costs no more than a short one.
pub fn web_seeds(value: Option<&Value<'_>>) -> (Vec<WebSeedUrl>, Vec<RefusedWebSeed>) {
    let mut good = Vec::new();
    let mut refused = Vec::new();
    let Some(value) = value else {
        return (good, refused);
    };
    let entries: Vec<&Value<'_>> = match (value.as_bytes(), value.as_list()) {
        (Some(_), _) => vec![value],
        (None, Some(list)) => list.iter().collect(),
        (None, None) => {
            refused.push(RefusedWebSeed {
                entry: String::new(),
                reason: WebSeedError::NotText,
            });
            return (good, refused);
        }
    };
    let total = entries.len();
    for entry in entries.into_iter().take(MAX_WEB_SEEDS * 2) {
        let Some(bytes) = entry.as_bytes() else {
            refused.push(RefusedWebSeed {
                entry: String::new(),
                reason: WebSeedError::NotText,
            });
            continue;
        };
        let text =
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_WEB_SEED_URL_BYTES)]).into_owned();
        // An empty string is what some makers write for "no web seed".
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if good.len() >= MAX_WEB_SEEDS {
            refused.push(RefusedWebSeed {
                entry: text,
                reason: WebSeedError::TooMany {
                    limit: MAX_WEB_SEEDS,
                },
            });
            continue;
        }
        let parsed = match std::str::from_utf8(bytes) {
            Ok(s) => WebSeedUrl::parse(s),
            Err(_) if bytes.len() > MAX_WEB_SEED_URL_BYTES => Err(WebSeedError::TooLong {
                len: bytes.len(),
                limit: MAX_WEB_SEED_URL_BYTES,
            }),
            Err(_) => Err(WebSeedError::NotAUrl("not UTF-8".to_string())),
        };
        match parsed {
            Ok(url) if good.contains(&url) => refused.push(RefusedWebSeed {
                entry: text,
                reason: WebSeedError::Duplicate,
            }),
            Ok(url) => good.push(url),
            Err(reason) => refused.push(RefusedWebSeed {
                entry: text,
                reason,
            }),
        }
    }
    // Past twice the limit nothing is even looked at: one summary stands for the rest.
    if total > MAX_WEB_SEEDS * 2 {
        refused.push(RefusedWebSeed {
            entry: format!("{} more entries", total - MAX_WEB_SEEDS * 2),
            reason: WebSeedError::TooMany {
                limit: MAX_WEB_SEEDS,
            },
        });
    }
    (good, refused)
}

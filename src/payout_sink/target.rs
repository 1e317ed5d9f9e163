//! A webhook target resolved, checked and pinned (issue 16), for alert webhooks and the
//! payment service alike: the host is resolved, every address it gives is checked against
//! [`crate::domain::netguard`], and the request goes only to the addresses checked (the
//! client resolves the name to them, never again). Webhook clients follow no redirects,
//! use no proxy, and read at most [`MAX_ANSWER_BYTES`] of an answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::domain::netguard::{check, redact_url, AllowedNetworks};

/// Most of an answer that is ever read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest wait for the resolver.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients kept for reuse (loading the trust roots per request would cost milliseconds).
const MAX_CACHED_CLIENTS: usize = 256;

/// Why a URL may not be sent to. Messages name the scheme and host only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an http(s) URL with a host.
    Invalid(String),
    /// The host does not resolve (now).
    Unresolvable(String),
    /// The host is or resolves to an address the guard refuses.
    Refused(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Invalid(m) | Refusal::Unresolvable(m) | Refusal::Refused(m) => m,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A URL whose addresses were checked.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: reqwest::Url,
    /// The host name to pin (`None` when the URL names an address).
    domain: Option<String>,
    addrs: Vec<SocketAddr>,
}

/// Resolves `url`'s host and checks every address it gives; no packet goes to the host.
pub async fn resolve(url: &str, allowed: &AllowedNetworks) -> Result<Target, Refusal> {
    let shown = redact_url(url);
    let invalid = || Refusal::Invalid(format!("{shown} is not an http:// or https:// URL"));
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid());
    }
    let host = parsed.host_str().ok_or_else(invalid)?.to_string();
    let port = parsed.port_or_known_default().ok_or_else(invalid)?;
    // The URL parser has already normalised the host (`0x7f.1` is `127.0.0.1`).
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let (domain, addrs) = match literal {
        Some(ip) => (None, vec![SocketAddr::new(ip, port)]),
        None => {
            let unresolvable =
                |why: String| Refusal::Unresolvable(format!("the webhook host of {shown} {why}"));
            let found = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| unresolvable("did not resolve in time".into()))?
            .map_err(|e| unresolvable(format!("does not resolve: {e}")))?;
            let mut addrs: Vec<SocketAddr> = found.collect();
            addrs.dedup();
            if addrs.is_empty() {
                return Err(unresolvable("resolves to no address".into()));
            }
            (Some(host.clone()), addrs)
        }
    };
    for addr in &addrs {
        check(addr.ip(), allowed)
            .map_err(|why| Refusal::Refused(format!("webhook {shown} refused: {why}")))?;
    }
    Ok(Target {
        url: parsed,
        domain,
        addrs,
    })
}

impl Target {
    /// The URL as logs may show it.
    pub fn shown(&self) -> String {
        redact_url(self.url.as_str())
    }

    /// A client that reaches only the checked addresses, follows no redirect and uses no
    /// proxy (a proxy would resolve the name again, elsewhere).
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, String> {
        type Key = (Option<String>, Vec<SocketAddr>, Duration);
        static CLIENTS: OnceLock<Mutex<HashMap<Key, reqwest::Client>>> = OnceLock::new();
        let key = (self.domain.clone(), self.addrs.clone(), timeout);
        let cache = CLIENTS.get_or_init(Default::default);
        if let Some(client) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(domain) = &self.domain {
            builder = builder.resolve_to_addrs(domain, &self.addrs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the webhook client: {}", e.without_url()))?;
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_CLIENTS {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
    }
}

/// At most `cap` bytes of an answer's body; the rest is not read.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> reqwest::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> AllowedNetworks {
        AllowedNetworks::default()
    }

    #[tokio::test]
    async fn literal_addresses_are_checked_without_resolving() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            // Other spellings of loopback, normalised by the URL parser.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0/",
        ] {
            match resolve(url, &none()).await {
                Err(Refusal::Refused(m)) => {
                    assert!(!m.contains("/x") && !m.contains("meta"), "{m}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let allowed = AllowedNetworks::parse("127.0.0.0/8").unwrap();
        assert!(resolve("http://127.0.0.1:9/x", &allowed).await.is_ok());
        assert!(resolve("https://8.8.8.8/hook", &none()).await.is_ok());
    }

    #[tokio::test]
    async fn names_are_resolved_and_every_address_checked() {
        assert!(matches!(
            resolve("http://localhost:9/", &none()).await,
            Err(Refusal::Refused(_))
        ));
        assert!(matches!(
            resolve("ftp://example.com/", &none()).await,
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            resolve("not a url", &none()).await,
            Err(Refusal::Invalid(_))
        ));
        // RFC 6761: .invalid never resolves.
        assert!(matches!(
            resolve("https://hook.invalid/x", &none()).await,
            Err(Refusal::Unresolvable(_))
        ));
    }
}

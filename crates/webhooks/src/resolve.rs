//! Pluggable name resolution, and resolve-then-vet (DESIGN.md §6: "resolve once, refuse if any
//! address is not public").

use crate::ssrf::{BlockReason, HostKind, Policy, SsrfError, ValidatedUrl, validate_url};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Resolves a host name to its addresses. Implementations must not apply any policy.
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
        ips.dedup();
        Ok(ips)
    }
}

/// A scripted resolver for tests. Each host has a queue of answers: every lookup takes the next
/// answer and the last one repeats, so "public first, then private" (DNS rebinding) is one call
/// to [`StubResolver::script`]. Unknown hosts fail with `NotFound`.
#[derive(Debug, Default)]
pub struct StubResolver {
    answers: Mutex<HashMap<String, VecDeque<Vec<IpAddr>>>>,
    calls: AtomicUsize,
}

impl StubResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder form of [`StubResolver::script`] with a single answer.
    pub fn with(self, host: &str, ips: &[IpAddr]) -> Self {
        self.script(host, vec![ips.to_vec()]);
        self
    }

    /// Replaces the answers for `host` with this sequence.
    pub fn script(&self, host: &str, answers: Vec<Vec<IpAddr>>) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), answers.into());
    }

    /// Lookups answered so far (all hosts).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Resolve for StubResolver {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut map = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let queue = map
            .get_mut(&host.to_ascii_lowercase())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))?;
        let answer = if queue.len() > 1 {
            queue.pop_front().unwrap_or_default()
        } else {
            queue.front().cloned().unwrap_or_default()
        };
        Ok(answer)
    }
}

/// Why a host could not be turned into dialable addresses.
#[derive(Debug, thiserror::Error)]
pub enum VetError {
    /// The lookup failed or returned nothing (kept for logs; never shown to API callers).
    #[error("name resolution failed")]
    Dns(#[source] io::Error),
    /// At least one address is refused by the policy.
    #[error("destination is not allowed")]
    Blocked(BlockReason),
}

/// Resolves `host` once and vets every address. Refuses the whole answer if ANY address is not
/// allowed, so a mixed answer cannot be used to race the dialler onto the private one.
pub async fn resolve_and_vet(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    policy: &Policy,
) -> Result<Vec<SocketAddr>, VetError> {
    let ips = resolver.resolve(host).await.map_err(VetError::Dns)?;
    if ips.is_empty() {
        return Err(VetError::Dns(io::Error::new(
            io::ErrorKind::NotFound,
            "no addresses",
        )));
    }
    let mut out = Vec::with_capacity(ips.len());
    for ip in ips {
        policy.check_ip(ip).map_err(VetError::Blocked)?;
        let ip = ip.to_canonical();
        let sa = SocketAddr::new(ip, port);
        if !out.contains(&sa) {
            out.push(sa);
        }
    }
    Ok(out)
}

/// [`validate_url`] plus, for names, one resolution with every address vetted: for registration,
/// so a name that resolves to a refused address is refused up front (same message as every other
/// refusal). A name that does not resolve is accepted: the receiver may not be in DNS yet, or this
/// server may have no resolver (the guide's own example host); every send resolves again, and a
/// name that still does not resolve fails that attempt with class `dns` and is retried.
pub async fn validate_url_resolved(
    input: &str,
    policy: &Policy,
    resolver: &dyn Resolve,
) -> Result<ValidatedUrl, SsrfError> {
    let v = validate_url(input, policy)?;
    if let HostKind::Domain(name) = v.host() {
        match resolve_and_vet(resolver, name, v.port(), policy).await {
            Ok(_) | Err(VetError::Dns(_)) => {}
            Err(VetError::Blocked(r)) => return Err(SsrfError::Blocked(r)),
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[tokio::test]
    async fn stub_scripts_rebinding_and_any_private_address_refuses_all() {
        let stub = StubResolver::new();
        stub.script(
            "hooks.example.com",
            vec![vec![ip("93.184.216.34")], vec![ip("10.0.0.7")]],
        );
        let p = Policy::default();
        let first = resolve_and_vet(&stub, "hooks.example.com", 443, &p).await;
        assert_eq!(first.expect("public first").len(), 1);
        let second = resolve_and_vet(&stub, "hooks.example.com", 443, &p).await;
        assert!(matches!(
            second,
            Err(VetError::Blocked(BlockReason::Private))
        ));
        // The last answer repeats.
        let third = resolve_and_vet(&stub, "HOOKS.example.com", 443, &p).await;
        assert!(matches!(
            third,
            Err(VetError::Blocked(BlockReason::Private))
        ));
        assert_eq!(stub.calls(), 3);

        let mixed = StubResolver::new().with("mixed.example.com", &[ip("8.8.8.8"), ip("::1")]);
        let r = resolve_and_vet(&mixed, "mixed.example.com", 80, &p).await;
        assert!(matches!(r, Err(VetError::Blocked(BlockReason::Loopback))));
        let r = resolve_and_vet(&mixed, "unknown.example.com", 80, &p).await;
        assert!(matches!(r, Err(VetError::Dns(_))));
        let empty = StubResolver::new().with("empty.example.com", &[]);
        let r = resolve_and_vet(&empty, "empty.example.com", 80, &p).await;
        assert!(matches!(r, Err(VetError::Dns(_))));
    }

    #[tokio::test]
    async fn registration_refuses_private_names_and_accepts_unresolvable_ones() {
        let stub = StubResolver::new()
            .with(
                "private.example.com",
                &[IpAddr::V4(Ipv4Addr::new(192, 168, 0, 5))],
            )
            .with("ok.example.com", &[ip("2606:4700::1")]);
        let p = Policy::default();
        let private = validate_url_resolved("https://private.example.com/x", &p, &stub)
            .await
            .expect_err("private");
        assert_eq!(private.reason(), Some(BlockReason::Private));
        let literal = validate_url_resolved("https://10.0.0.1/x", &p, &stub)
            .await
            .expect_err("literal");
        assert_eq!(private.to_string(), literal.to_string(), "one message");
        // Not in DNS (yet): accepted; every send resolves again.
        assert!(
            validate_url_resolved("https://missing.example.com/x", &p, &stub)
                .await
                .is_ok()
        );
        assert!(
            validate_url_resolved("https://ok.example.com/x", &p, &stub)
                .await
                .is_ok()
        );
        // Static rules still apply to names that do not resolve.
        for refused in ["http://intranet/x", "http://metadata.google.internal/x"] {
            assert!(
                validate_url_resolved(refused, &p, &stub).await.is_err(),
                "{refused}"
            );
        }
    }

    #[tokio::test]
    async fn system_resolver_resolves_an_ip_literal_without_network() {
        let ips = SystemResolver.resolve("127.0.0.1").await.expect("literal");
        assert_eq!(ips, vec![ip("127.0.0.1")]);
    }
}

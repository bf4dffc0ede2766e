//! SSRF guard (DESIGN.md §6): which webhook URLs and which addresses may be dialled.
//!
//! [`validate_url`] runs at registration and again before every send; the sender then resolves the
//! host once and vets every address with [`Policy::check_ip`] before dialling one of them.
//! An operator allowlist ([`Policy::allow_cidrs`], `ARAGORA_WEBHOOK_ALLOW_CIDRS`) is the only way
//! to reach a non-public address. Unspecified, broadcast, multicast and cloud-metadata
//! destinations stay refused even when allowlisted: they are never a legitimate receiver.
//!
//! Refusals by policy all print the same message, so a caller cannot map the internal network or
//! the resolver's view of it; the precise [`BlockReason`] is kept for logs and metrics.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Name of the environment variable holding the operator allowlist.
pub const ALLOW_CIDRS_ENV: &str = "ARAGORA_WEBHOOK_ALLOW_CIDRS";
/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a destination was refused. Not shown to API callers (see [`SsrfError`]'s `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`, `localhost` and `*.localhost`.
    Loopback,
    /// RFC 1918, NAT64 local-use `64:ff9b:1::/48`.
    Private,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// CGNAT `100.64.0.0/10`.
    SharedAddressSpace,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4`, `192.88.99.0/24`, IPv6 outside `2000::/3`, Teredo with public ends.
    Reserved,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `192.0.0.0/24`, `2001::/23` (IETF protocol assignments).
    ProtocolAssignment,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10` (deprecated site-local).
    SiteLocal,
    /// Deprecated IPv4-compatible IPv6 `::a.b.c.d`.
    Ipv4Compatible,
    /// NAT64 `64:ff9b::/96` embedding a refused IPv4 address.
    EmbeddedNat64,
    /// 6to4 `2002::/16` embedding a refused IPv4 address.
    Embedded6to4,
    /// Teredo `2001::/32` whose server or client IPv4 address is refused.
    EmbeddedTeredo,
    /// Cloud metadata services, by address or by name.
    Metadata,
    /// Names under local-only suffixes: `.local`, `.internal`, `.localdomain`, `.home.arpa`, ….
    LocalName,
    /// Host names ending in a dot (`localhost.`), which dodge name matching.
    TrailingDot,
    /// Single-label names (`intranet`): resolved through search domains, never public.
    SingleLabel,
    /// IPv4 written in a non-canonical form (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`).
    NumericSpelling,
    /// The name did not resolve to any address.
    Unresolvable,
}

impl BlockReason {
    /// May the operator allowlist reach an address refused for this reason?
    pub fn allowlistable(self) -> bool {
        !matches!(
            self,
            BlockReason::Unspecified
                | BlockReason::Multicast
                | BlockReason::Broadcast
                | BlockReason::Metadata
                | BlockReason::Ipv4Compatible
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::Unspecified => "unspecified",
            BlockReason::Loopback => "loopback",
            BlockReason::Private => "private",
            BlockReason::LinkLocal => "link_local",
            BlockReason::SharedAddressSpace => "shared_address_space",
            BlockReason::Multicast => "multicast",
            BlockReason::Broadcast => "broadcast",
            BlockReason::Reserved => "reserved",
            BlockReason::Documentation => "documentation",
            BlockReason::Benchmarking => "benchmarking",
            BlockReason::ProtocolAssignment => "protocol_assignment",
            BlockReason::UniqueLocal => "unique_local",
            BlockReason::SiteLocal => "site_local",
            BlockReason::Ipv4Compatible => "ipv4_compatible",
            BlockReason::EmbeddedNat64 => "embedded_nat64",
            BlockReason::Embedded6to4 => "embedded_6to4",
            BlockReason::EmbeddedTeredo => "embedded_teredo",
            BlockReason::Metadata => "metadata",
            BlockReason::LocalName => "local_name",
            BlockReason::TrailingDot => "trailing_dot",
            BlockReason::SingleLabel => "single_label",
            BlockReason::NumericSpelling => "numeric_spelling",
            BlockReason::Unresolvable => "unresolvable",
        }
    }
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The input is not an acceptable webhook URL (shape errors; safe to show).
    #[error("url: {0}")]
    Invalid(&'static str),
    /// Refused by the SSRF policy. The message is deliberately the same for every reason.
    #[error("url: destination is not allowed; webhooks must target a public http(s) address")]
    Blocked(BlockReason),
}

impl SsrfError {
    pub fn reason(&self) -> Option<BlockReason> {
        match self {
            SsrfError::Blocked(r) => Some(*r),
            SsrfError::Invalid(_) => None,
        }
    }
}

impl From<SsrfError> for aragora_core::Error {
    fn from(e: SsrfError) -> Self {
        let msg = e.to_string();
        aragora_core::Error::invalid("url", msg.trim_start_matches("url: "))
    }
}

/// Bad `ARAGORA_WEBHOOK_ALLOW_CIDRS` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ALLOW_CIDRS_ENV}: {entry:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address")]
pub struct PolicyError {
    pub entry: String,
}

/// The SSRF policy. Default: nothing but public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Non-public ranges the operator allows (default empty).
    pub allow_cidrs: Vec<IpNet>,
}

impl Policy {
    /// Parses a comma-separated list of CIDRs or bare addresses (`"10.0.0.0/8, 127.0.0.1"`).
    /// Empty entries are skipped.
    pub fn from_env_str(s: &str) -> Result<Policy, PolicyError> {
        let mut allow_cidrs = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| PolicyError {
                    entry: entry.to_string(),
                })?;
            allow_cidrs.push(net.trunc());
        }
        Ok(Policy { allow_cidrs })
    }

    /// Reads [`ALLOW_CIDRS_ENV`]; unset means the empty allowlist.
    pub fn from_env() -> Result<Policy, PolicyError> {
        match std::env::var(ALLOW_CIDRS_ENV) {
            Ok(v) => Policy::from_env_str(&v),
            Err(_) => Ok(Policy::default()),
        }
    }

    /// Allows loopback (`127.0.0.0/8`, `::1`): what tests use to reach their receiver.
    pub fn allow_loopback() -> Policy {
        Policy {
            allow_cidrs: vec![
                IpNet::V4(Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("valid prefix")),
                IpNet::V6(Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).expect("valid prefix")),
            ],
        }
    }

    fn allowlisted(&self, ip: IpAddr) -> bool {
        self.allow_cidrs.iter().any(|n| n.contains(&ip))
    }

    /// May this address be dialled? IPv4-mapped IPv6 is judged as the IPv4 address it is.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), BlockReason> {
        let ip = ip.to_canonical();
        match classify_ip(ip) {
            None => Ok(()),
            Some(r) if r.allowlistable() && self.allowlisted(ip) => Ok(()),
            Some(r) => Err(r),
        }
    }
}

/// What an address is, if it is not a plain public unicast address. Pure; ignores any policy.
pub fn classify_ip(ip: IpAddr) -> Option<BlockReason> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

const V4_METADATA: [Ipv4Addr; 7] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, DigitalOcean, OpenStack …
    Ipv4Addr::new(169, 254, 169, 253), // AWS VPC DNS
    Ipv4Addr::new(169, 254, 169, 123), // AWS time sync
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud (classic)
    Ipv4Addr::new(168, 63, 129, 16),   // Azure WireServer (a public address)
];

const V6_METADATA: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), // AWS IMDS over IPv6
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),  // AWS VPC DNS over IPv6
];

fn in4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn in6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    let n = Ipv6Addr::new(
        net[0], net[1], net[2], net[3], net[4], net[5], net[6], net[7],
    );
    u128::from(ip) & mask == u128::from(n) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockReason> {
    use BlockReason::*;
    if V4_METADATA.contains(&ip) {
        return Some(Metadata);
    }
    let table: [([u8; 4], u32, BlockReason); 17] = [
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, ProtocolAssignment),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
        // 233.252.0.0/24 (MCAST-TEST-NET) lies inside 224/4 and is caught above.
        ([0, 0, 0, 0], 32, Unspecified),
    ];
    table
        .iter()
        .find(|(net, p, _)| in4(ip, *net, *p))
        .map(|(_, _, r)| *r)
}

fn v4_at(ip: Ipv6Addr, bit_offset: u32) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(ip) >> (96 - bit_offset)) as u32)
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockReason> {
    use BlockReason::*;
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if V6_METADATA.contains(&ip) {
        return Some(Metadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    if in6(ip, [0; 8], 96) {
        return Some(Ipv4Compatible);
    }
    if in6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        // NAT64 well-known prefix: the gateway dials the embedded IPv4 address.
        return classify_v4(v4_at(ip, 96)).map(|_| EmbeddedNat64);
    }
    if in6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48) {
        return Some(Private);
    }
    if in6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return classify_v4(v4_at(ip, 16)).map(|_| Embedded6to4);
    }
    if in6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 32) {
        let server = v4_at(ip, 32);
        let client = Ipv4Addr::from(!(u128::from(ip) as u32));
        if classify_v4(server).is_some() || classify_v4(client).is_some() {
            return Some(EmbeddedTeredo);
        }
        return Some(Reserved);
    }
    let table: [([u16; 8], u32, BlockReason); 9] = [
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, Benchmarking),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, ProtocolAssignment),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, SiteLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
        // Everything outside global unicast 2000::/3 (e.g. 100::/64 discard, 5f00::/16 SRv6).
        ([0, 0, 0, 0, 0, 0, 0, 0], 0, Reserved),
    ];
    for (net, p, r) in table {
        if r == Reserved && in6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
            return None;
        }
        if in6(ip, net, p) {
            return Some(r);
        }
    }
    None
}

/// Host names of metadata services (compared after lowercasing).
const METADATA_NAMES: [&str; 8] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "kubernetes.default",
    "kubernetes.default.svc",
];

/// Suffixes that only ever resolve inside a private network.
const LOCAL_SUFFIXES: [&str; 7] = [
    "localhost",
    "localdomain",
    "local",
    "internal",
    "home.arpa",
    "in-addr.arpa",
    "ip6.arpa",
];

/// Why a host name (already lowercased IDNA/punycode) is refused before any resolution.
pub fn classify_host_name(name: &str) -> Option<BlockReason> {
    if name.ends_with('.') {
        return Some(BlockReason::TrailingDot);
    }
    if METADATA_NAMES.contains(&name) {
        return Some(BlockReason::Metadata);
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(BlockReason::Loopback);
    }
    if LOCAL_SUFFIXES
        .iter()
        .any(|s| name == *s || name.strip_suffix(s).is_some_and(|p| p.ends_with('.')))
    {
        return Some(BlockReason::LocalName);
    }
    if parse_ipv4_loose(name).is_some() {
        return Some(BlockReason::NumericSpelling);
    }
    if !name.contains('.') {
        return Some(BlockReason::SingleLabel);
    }
    None
}

/// Parses IPv4 the permissive way `inet_aton` and WHATWG URL parsers do: 1–4 parts, each decimal,
/// octal (leading `0`) or hex (`0x`), the last part filling the remaining bytes, one trailing dot
/// allowed. `None` when the text is not such a number.
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let lower = p.to_ascii_lowercase();
        let n = if let Some(h) = lower.strip_prefix("0x") {
            if h.is_empty() {
                0
            } else {
                u64::from_str_radix(h, 16).ok()?
            }
        } else if lower.len() > 1 && lower.starts_with('0') {
            u64::from_str_radix(&lower[1..], 8).ok()?
        } else {
            lower.parse::<u64>().ok()?
        };
        nums.push(n);
    }
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - head.len() as u32);
    if last_bits < 64 && *last >= (1u64 << last_bits) {
        return None;
    }
    let mut v: u32 = 0;
    for (i, &n) in head.iter().enumerate() {
        v |= (n as u32) << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(v | *last as u32))
}

/// A URL that passed [`validate_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedUrl {
    url: Url,
    host: HostKind,
    port: u16,
}

/// The destination host of a validated URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Ip(IpAddr),
    /// Lowercased, IDNA-mapped name, to be resolved and vetted at send time.
    Domain(String),
}

impl ValidatedUrl {
    pub fn url(&self) -> &Url {
        &self.url
    }
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
    pub fn host(&self) -> &HostKind {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn into_url(self) -> Url {
        self.url
    }
}

/// The host as written in the input (between `scheme://` and the port/path), for spotting
/// non-canonical numeric spellings that the URL parser silently normalises.
fn raw_host(input: &str) -> &str {
    let after = input.split_once("://").map_or("", |(_, a)| a);
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| h);
    }
    authority.split(':').next().unwrap_or("")
}

/// Validates a webhook URL (registration and every send). No DNS lookups; see
/// [`crate::resolve::validate_url_resolved`] for the variant that also vets resolved addresses.
pub fn validate_url(input: &str, policy: &Policy) -> Result<ValidatedUrl, SsrfError> {
    if input.is_empty() || input.len() > MAX_URL_LEN {
        return Err(SsrfError::Invalid("must be 1..=2048 characters"));
    }
    // The URL parser silently strips or rewrites these; refuse rather than guess.
    if input
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(SsrfError::Invalid(
            "must not contain whitespace, control characters or backslashes",
        ));
    }
    let lower_prefix = input.get(..8).unwrap_or(input).to_ascii_lowercase();
    if !(lower_prefix.starts_with("http://") || lower_prefix.starts_with("https://")) {
        return Err(SsrfError::Invalid("scheme must be http or https"));
    }
    let url = Url::parse(input).map_err(|_| SsrfError::Invalid("not a valid absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SsrfError::Invalid("scheme must be http or https"));
    }
    let raw = raw_host(input);
    let authority_has_at = input
        .split_once("://")
        .map(|(_, a)| a.split(['/', '?', '#']).next().unwrap_or(""))
        .is_some_and(|a| a.contains('@'));
    if !url.username().is_empty() || url.password().is_some() || authority_has_at {
        return Err(SsrfError::Invalid("must not contain user credentials"));
    }
    let port = url
        .port_or_known_default()
        .ok_or(SsrfError::Invalid("port required"))?;
    if port == 0 {
        return Err(SsrfError::Invalid("port must not be 0"));
    }
    let host = match url.host() {
        None => return Err(SsrfError::Invalid("host required")),
        Some(Host::Ipv4(v4)) => {
            if raw != v4.to_string() {
                return Err(SsrfError::Blocked(BlockReason::NumericSpelling));
            }
            policy
                .check_ip(IpAddr::V4(v4))
                .map_err(SsrfError::Blocked)?;
            HostKind::Ip(IpAddr::V4(v4))
        }
        Some(Host::Ipv6(v6)) => {
            policy
                .check_ip(IpAddr::V6(v6))
                .map_err(SsrfError::Blocked)?;
            HostKind::Ip(IpAddr::V6(v6))
        }
        Some(Host::Domain(d)) => {
            if d.is_empty() || d.split('.').any(str::is_empty) && !d.ends_with('.') {
                return Err(SsrfError::Invalid("host name has an empty label"));
            }
            if let Some(r) = classify_host_name(d) {
                return Err(SsrfError::Blocked(r));
            }
            HostKind::Domain(d.to_string())
        }
    };
    Ok(ValidatedUrl { url, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every URL here must be refused with the default (empty-allowlist) policy.
    const REFUSED: &[&str] = &[
        // schemes, credentials, shape
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "http:example.com/x",
        "http://user:pass@example.com/",
        "http://example.com@127.0.0.1/",
        "https://@example.com/",
        "http://exa mple.com/",
        "http://example.com\\@127.0.0.1/",
        "http:///path",
        "http://example.com:0/",
        // loopback, numeric spellings
        "http://127.0.0.1/",
        "http://127.255.255.254:8080/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://017700000001/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://127。0。0。1/",
        "http://①②⑦.0.0.1/",
        "http://１２７.0.0.1/",
        "http://134744072/",
        "http://localhost/",
        "http://LOCALHOST:8080/",
        "http://localhost./",
        "http://api.localhost/",
        "http://[::1]/",
        "http://[0:0:0:0:0:0:0:1]/",
        // unspecified
        "http://0.0.0.0/",
        "http://0/",
        "http://[::]/",
        "http://0.1.2.3/",
        // private, CGNAT, link-local
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://172.31.255.255/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://100.127.255.254/",
        "http://169.254.1.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[fec0::1]/",
        // metadata
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",
        "http://100.100.100.200/latest/meta-data/",
        "http://192.0.0.192/",
        "http://168.63.129.16/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./",
        "http://metadata/",
        "http://metadata.goog/",
        "http://instance-data/",
        // multicast, broadcast, reserved, documentation, benchmarking
        "http://224.0.0.1/",
        "http://239.255.255.250/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://192.88.99.1/",
        "http://192.0.2.10/",
        "http://198.51.100.7/",
        "http://203.0.113.9/",
        "http://198.18.0.1/",
        "http://198.19.255.255/",
        "http://192.0.0.8/",
        "http://[ff02::1]/",
        "http://[2001:db8::1]/",
        "http://[3fff::1]/",
        "http://[2001:2::1]/",
        "http://[100::1]/",
        "http://[5f00::1]/",
        // IPv4 inside IPv6
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[::8.8.8.8]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::1]/",
        "http://[2002:7f00:1::]/",
        "http://[2002:c0a8:101::1]/",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
        "http://[2001:0:7f00:1::1]/",
        // names that never resolve publicly
        "http://printer.local/",
        "http://db.internal/",
        "http://router.home.arpa/",
        "http://intranet/",
        "http://host.localdomain/",
        "http://example.com./",
    ];

    const ACCEPTED: &[&str] = &[
        "https://your-app.com/webhooks/aragora",
        "http://example.com/",
        "https://hooks.example.co.uk:8443/a/b?c=d",
        "https://8.8.8.8/",
        "http://1.1.1.1:8080/x",
        "http://[2606:4700:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
        "http://[64:ff9b::808:808]/",
        "http://[2002:808:808::1]/",
        "https://xn--bcher-kva.example/",
        "https://bücher.example/",
        "https://a-b_c.example.com/",
        "HTTPS://EXAMPLE.COM/Path",
        "http://100.63.255.255/",
        "http://100.128.0.1/",
        "http://172.32.0.1/",
        "http://169.255.0.1/",
    ];

    #[test]
    fn refuses_table() {
        assert!(REFUSED.len() >= 50, "table has {}", REFUSED.len());
        let policy = Policy::default();
        for u in REFUSED {
            assert!(
                validate_url(u, &policy).is_err(),
                "{u} should be refused, got {:?}",
                validate_url(u, &policy)
            );
        }
    }

    #[test]
    fn accepts_table() {
        let policy = Policy::default();
        for u in ACCEPTED {
            let v = validate_url(u, &policy).unwrap_or_else(|e| panic!("{u}: {e:?}"));
            assert!(matches!(v.url().scheme(), "http" | "https"));
        }
        let v = validate_url("https://bücher.example/", &policy).expect("idna");
        assert_eq!(v.host(), &HostKind::Domain("xn--bcher-kva.example".into()));
        assert_eq!(v.port(), 443);
    }

    #[test]
    fn specific_reasons() {
        let p = Policy::default();
        let reason = |u: &str| validate_url(u, &p).err().and_then(|e| e.reason());
        use BlockReason::*;
        assert_eq!(reason("http://2130706433/"), Some(NumericSpelling));
        assert_eq!(reason("http://0x7f.1/"), Some(NumericSpelling));
        assert_eq!(reason("http://127.0.0.1/"), Some(Loopback));
        assert_eq!(reason("http://169.254.169.254/"), Some(Metadata));
        assert_eq!(reason("http://[fd00:ec2::254]/"), Some(Metadata));
        assert_eq!(reason("http://100.64.1.1/"), Some(SharedAddressSpace));
        assert_eq!(reason("http://[::ffff:127.0.0.1]/"), Some(Loopback));
        assert_eq!(reason("http://[64:ff9b::7f00:1]/"), Some(EmbeddedNat64));
        assert_eq!(reason("http://[2002:a00:1::]/"), Some(Embedded6to4));
        assert_eq!(
            reason("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/"),
            Some(EmbeddedTeredo)
        );
        assert_eq!(reason("http://[::127.0.0.1]/"), Some(Ipv4Compatible));
        assert_eq!(reason("http://metadata.google.internal/"), Some(Metadata));
        assert_eq!(reason("http://localhost./"), Some(TrailingDot));
        assert_eq!(reason("http://a.localhost/"), Some(Loopback));
        assert_eq!(reason("http://intranet/"), Some(SingleLabel));
        assert_eq!(reason("http://198.18.3.4/"), Some(Benchmarking));
        assert_eq!(reason("http://[2001:db8::5]/"), Some(Documentation));
        assert_eq!(
            validate_url("ftp://x.com/", &p),
            Err(SsrfError::Invalid("scheme must be http or https"))
        );
    }

    #[test]
    fn blocked_errors_are_uniform() {
        let p = Policy::default();
        let msgs: std::collections::HashSet<String> = [
            "http://127.0.0.1/",
            "http://169.254.169.254/",
            "http://metadata/",
            "http://2130706433/",
            "http://[::ffff:10.0.0.1]/",
        ]
        .iter()
        .map(|u| validate_url(u, &p).expect_err("refused").to_string())
        .collect();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        let core: aragora_core::Error = validate_url("http://10.1.1.1/", &p).unwrap_err().into();
        assert_eq!(core.code(), "validation_failed");
    }

    #[test]
    fn allowlist_is_the_only_way_in_and_not_for_everything() {
        let p = Policy::from_env_str(" 127.0.0.0/8, 10.1.2.3 ,, 169.254.0.0/16,0.0.0.0/0").unwrap();
        assert_eq!(p.allow_cidrs.len(), 4);
        assert!(validate_url("http://127.0.0.1:9000/hook", &p).is_ok());
        assert!(validate_url("http://[::ffff:127.0.0.1]:9000/hook", &p).is_ok());
        assert!(validate_url("http://10.1.2.3/", &p).is_ok());
        assert!(validate_url("http://169.254.1.1/", &p).is_ok());
        // Never allowlistable: metadata, unspecified, multicast, broadcast, spellings, names.
        for u in [
            "http://169.254.169.254/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://2130706433/",
            "http://localhost/",
        ] {
            assert!(validate_url(u, &p).is_err(), "{u}");
        }
        assert!(
            validate_url(
                "http://10.1.2.4/",
                &Policy::from_env_str("10.1.2.3").unwrap()
            )
            .is_err()
        );
        assert_eq!(
            Policy::from_env_str("10.0.0.0/33"),
            Err(PolicyError {
                entry: "10.0.0.0/33".into()
            })
        );
        assert_eq!(Policy::from_env_str("").unwrap(), Policy::default());
    }

    #[test]
    fn loose_ipv4_parser_matches_inet_aton() {
        let lo = Some(Ipv4Addr::new(127, 0, 0, 1));
        for s in [
            "2130706433",
            "0177.0.0.1",
            "0x7f.1",
            "0x7F.0.0.1",
            "127.1",
            "127.0.1",
            "017700000001",
            "0x7f000001",
            "127.0.0.1.",
        ] {
            assert_eq!(parse_ipv4_loose(s), lo, "{s}");
        }
        assert_eq!(parse_ipv4_loose("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_ipv4_loose("1.2.3.4.5"), None);
        assert_eq!(parse_ipv4_loose("256.1"), None);
        assert_eq!(parse_ipv4_loose("1.2.65536"), None);
        assert_eq!(parse_ipv4_loose("08.1.1.1"), None);
        assert_eq!(parse_ipv4_loose("example.com"), None);
        assert_eq!(parse_ipv4_loose(""), None);
    }
}

//! Who a request comes from: the peer's address, or the client a trusted proxy names.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The peer's address of a connection, put into each request's extensions by the server
/// (with the `axum` feature, `axum::extract::ConnectInfo<SocketAddr>` is read too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The proxies whose `Forwarded` / `X-Forwarded-For` headers are believed.
///
/// ```
/// use breakwater::guard::TrustedProxies;
///
/// let trusted = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
/// assert!(trusted.contains("10.1.2.3".parse().unwrap()));
/// assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

/// The header the trusted proxies name the client in. Only that one is read: a proxy that
/// sets one and passes the other through from the client would otherwise let the client
/// choose its address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (the default; what most proxies set).
    #[default]
    XForwardedFor,
    /// `Forwarded`'s `for=` (RFC 7239).
    Forwarded,
}

impl TrustedProxies {
    /// None: forwarding headers are ignored, the peer is the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// A comma-separated list of addresses and networks (`127.0.0.1, 10.0.0.0/8, ::1`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("`{item}` is not an address or a network")),
                },
            };
            nets.push(net);
        }
        Ok(Self {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    /// Reads the client from `header` (default `X-Forwarded-For`).
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether none is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// The client of a request: the peer, or, when the peer is a trusted proxy, the nearest
/// address in the proxies' header ([`ForwardedHeader`]) that is not a trusted proxy itself
/// (read from the right, as each proxy appends; a hop that is not an address stops the walk
/// at the last trusted one). `None` without a peer address.
pub fn client_ip<B>(req: &http::Request<B>, trusted: &TrustedProxies) -> Option<IpAddr> {
    client_of(req.headers(), req.extensions(), trusted)
}

pub(crate) fn client_of(
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = extensions.get::<PeerAddr>().map(|p| p.0.ip());
    #[cfg(feature = "axum")]
    let peer = peer.or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    });
    let peer = peer?;
    if trusted.is_empty() || !trusted.contains(peer) {
        return Some(peer);
    }
    // Each hop as written (`None`: not an address), nearest last.
    let mut chain: Vec<Option<IpAddr>> = Vec::new();
    let name = match trusted.header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    if trusted.header == ForwardedHeader::XForwardedFor {
        for value in headers.get_all(name) {
            let Ok(v) = value.to_str() else {
                chain.push(None);
                continue;
            };
            chain.extend(v.split(',').map(|s| parse_hop(s.trim())));
        }
    } else {
        for value in headers.get_all(name) {
            let Ok(v) = value.to_str() else {
                chain.push(None);
                continue;
            };
            for part in v.split([',', ';']) {
                let Some(addr) = part
                    .trim()
                    .strip_prefix("for=")
                    .or_else(|| part.trim().strip_prefix("For="))
                else {
                    continue;
                };
                chain.push(parse_hop(addr.trim_matches('"')));
            }
        }
    }
    // From the nearest hop outwards, past trusted proxies; a hop that is not an address stops
    // the walk at the last trusted one (what lies beyond it cannot be vouched for).
    let mut client = peer;
    for hop in chain.into_iter().rev() {
        match hop {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return Some(ip),
            None => return Some(client),
        }
    }
    Some(client)
}

/// A hop of a forwarding header: an address, `ip:port`, or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let bracketed = hop
        .strip_prefix('[')
        .map(|a| a.split(']').next().unwrap_or(a));
    let addr = bracketed.unwrap_or(hop);
    addr.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

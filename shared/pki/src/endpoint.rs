//! Gateway endpoints, `host:port`, as bundles announce them and gateway
//! configurations name them: both must accept exactly the same strings, or a
//! partner's bundle could list an endpoint its gateway cannot dial.

/// An endpoint that is not `HOST:PORT` (host: a DNS name, IPv4 or bracketed
/// IPv6 address; port: 1 to 65535).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {0:?}: expected HOST:PORT")]
pub struct EndpointError(pub String);

/// Checks a `host:port` endpoint.
pub fn check_endpoint(endpoint: &str) -> Result<(), EndpointError> {
    let bad = || EndpointError(endpoint.to_string());
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

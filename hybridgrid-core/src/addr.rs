//! `host:port` addresses as users write them.

/// An address that is not `host:port`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{input}` is not a host:port address: {reason}")]
pub struct AddrError {
    input: String,
    reason: &'static str,
}

/// This machine's host name as the kernel has it (`None` when it is unset
/// or cannot be read). Callers choose their own fallback and form.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Splits `host:port` (or `[v6]:port`), checking both parts.
pub fn parse_host_port(s: &str) -> Result<(String, u16), AddrError> {
    let err = |reason| AddrError {
        input: s.to_owned(),
        reason,
    };
    let s = s.trim();
    let s = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| err("expected [ipv6]:port"))?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(|| err("missing :port"))?
    };
    if host.is_empty() {
        return Err(err("missing host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(err("invalid host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| err("port must be a number 0-65535"))?;
    Ok((host.to_owned(), port))
}

/// The `http://host:port` URI of a `host:port` address (adds the scheme only
/// when missing; `https` is used when `tls` is true).
pub fn to_uri(addr: &str, tls: bool) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        return addr.to_owned();
    }
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_host_port("a:1").unwrap(), ("a".into(), 1));
        assert_eq!(parse_host_port("[::1]:9000").unwrap(), ("::1".into(), 9000));
        assert_eq!(
            parse_host_port("http://127.0.0.1:9000").unwrap(),
            ("127.0.0.1".into(), 9000)
        );
        assert!(parse_host_port("nohost").is_err());
        assert!(parse_host_port(":9").is_err());
        assert!(parse_host_port("a:99999").is_err());
        assert!(parse_host_port("a b:1").is_err());
    }

    #[test]
    fn uri() {
        assert_eq!(to_uri("h:1", false), "http://h:1");
        assert_eq!(to_uri("h:1", true), "https://h:1");
        assert_eq!(to_uri("http://h:1", true), "http://h:1");
    }
}

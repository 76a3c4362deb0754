//! The request as every host hands it to the core: method, raw `:path`
//! (undecoded, with the query) and headers with lower-case names, all
//! borrowed. proxy-wasm and ext_authz adapters build one without copying.

/// A borrowed view of an HTTP request head.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The raw request target: path and query exactly as received.
    pub target: &'a str,
    /// Header (name, value) pairs. Names are expected in lower case (Envoy
    /// lower-cases them); lookups are case-insensitive anyway. Pseudo-headers
    /// (`:authority`, …) may be present and are ignored for signing.
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> RequestParts<'a> {
    pub fn new(method: &'a str, target: &'a str, headers: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            method,
            target,
            headers,
        }
    }

    /// The raw path (before `?`).
    pub fn path(&self) -> &'a str {
        crate::query::split_target(self.target).0
    }

    /// The raw query (after the first `?`, empty when absent).
    pub fn query(&self) -> &'a str {
        crate::query::split_target(self.target).1
    }

    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// All values of a header, in order.
    pub fn header_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The Host: the `host` header, else HTTP/2's `:authority`.
    pub fn host(&self) -> Option<&'a str> {
        self.header("host").or_else(|| self.header(":authority"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let h = [(":authority", "a.example"), ("x-a", "1"), ("X-A", "2")];
        let r = RequestParts::new("GET", "/b/k?x", &h);
        assert_eq!(r.host(), Some("a.example"));
        assert_eq!(r.header("x-a"), Some("1"));
        assert_eq!(r.header_all("x-a").collect::<Vec<_>>(), vec!["1", "2"]);
        assert_eq!((r.path(), r.query()), ("/b/k", "x"));
        let h2 = [("host", "h"), (":authority", "a")];
        assert_eq!(RequestParts::new("GET", "/", &h2).host(), Some("h"));
    }
}

/// The address part of a socket address as Envoy renders it: `1.2.3.4:5`
/// → `1.2.3.4`, `[::1]:5` → `::1`, anything else unchanged. Limits per
/// source address must not be per connection.
pub fn address_without_port(addr: &str) -> &str {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(addr, |(ip, _)| ip);
    }
    match addr.rsplit_once(':') {
        // One colon: IPv4 (or a name) with a port; more: a bare IPv6.
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => addr,
    }
}

#[cfg(test)]
mod address_tests {
    #[test]
    fn ports_are_dropped() {
        for (a, want) in [
            ("127.0.0.1:4567", "127.0.0.1"),
            ("6.6.6.6:0", "6.6.6.6"),
            ("[::1]:80", "::1"),
            ("::1", "::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("10.0.0.1", "10.0.0.1"),
        ] {
            assert_eq!(super::address_without_port(a), want, "{a}");
        }
    }
}

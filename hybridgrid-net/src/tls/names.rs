//! The names in a certificate (subject, issuer, subjectAltName), read
//! straight from its DER encoding, for error messages only: nothing here
//! decides trust (rustls and webpki do that).
//!
//! The reader is small and total: any input, however malformed, gives a
//! result or `None`, never a panic (a fuzz target checks this).

/// What an error message says about a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject's common name (or other attributes when it has none).
    pub subject: String,
    /// The issuer's common name (or other attributes).
    pub issuer: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub alt_names: Vec<String>,
}

impl CertNames {
    /// Reads the names of a DER certificate; `None` if it cannot be read.
    pub fn from_der(der: &[u8]) -> Option<CertNames> {
        let (tag, cert, _) = tlv(der)?;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, tbs, _) = tlv(cert)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut rest = tbs;
        // [0] version (optional), serial, signature algorithm.
        let (mut tag, mut body, mut next) = tlv(rest)?;
        if tag == 0xa0 {
            (tag, body, next) = tlv(next)?;
        }
        let _ = (tag, body);
        rest = next;
        let (_, _, next) = tlv(rest)?; // signature algorithm
        let (tag, issuer, next) = tlv(next)?;
        if tag != SEQUENCE {
            return None;
        }
        let (_, _, next) = tlv(next)?; // validity
        let (tag, subject, next) = tlv(next)?;
        if tag != SEQUENCE {
            return None;
        }
        let (_, _, mut next) = tlv(next)?; // subject public key info
        let mut alt_names = Vec::new();
        while let Some((tag, body, after)) = tlv(next) {
            if tag == 0xa3 {
                alt_names = extensions(body);
            }
            next = after;
        }
        Some(CertNames {
            subject: name(subject),
            issuer: name(issuer),
            alt_names,
        })
    }

    /// `CN=x` or `CN=x, names a, b` for messages.
    pub fn describe(&self) -> String {
        if self.alt_names.is_empty() {
            format!("subject {}", self.subject)
        } else {
            format!(
                "subject {}, names {}",
                self.subject,
                self.alt_names.join(", ")
            )
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: (tag, contents, the bytes after it). Only the
/// single-byte tags and definite lengths X.509 uses.
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn attr_label(oid: &[u8]) -> Option<&'static str> {
    match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x0a] => Some("O"),
        [0x55, 0x04, 0x0b] => Some("OU"),
        [0x55, 0x04, 0x06] => Some("C"),
        _ => None,
    }
}

fn text(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, TeletexString
        0x0c | 0x13 | 0x16 | 0x14 => Some(
            String::from_utf8_lossy(body)
                .chars()
                .filter(|c| !c.is_control())
                .take(256)
                .collect(),
        ),
        _ => None,
    }
}

/// A Name as `CN=x` (or `O=.., OU=..` when there is no CN).
fn name(mut rdns: &[u8]) -> String {
    let mut parts: Vec<(&'static str, String)> = Vec::new();
    while let Some((tag, set, after)) = tlv(rdns) {
        rdns = after;
        if tag != SET {
            continue;
        }
        let mut atvs = set;
        while let Some((tag, atv, after)) = tlv(atvs) {
            atvs = after;
            if tag != SEQUENCE {
                continue;
            }
            let Some((OID, oid, value)) = tlv(atv) else {
                continue;
            };
            let (Some(label), Some((vt, vb, _))) = (attr_label(oid), tlv(value)) else {
                continue;
            };
            if let Some(t) = text(vt, vb) {
                parts.push((label, t));
            }
        }
    }
    if let Some((_, cn)) = parts.iter().find(|(l, _)| *l == "CN") {
        return format!("CN={cn}");
    }
    if parts.is_empty() {
        return "(no name)".into();
    }
    parts
        .iter()
        .map(|(l, v)| format!("{l}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn extensions(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some((SEQUENCE, mut exts, _)) = tlv(body) else {
        return out;
    };
    while let Some((tag, ext, after)) = tlv(exts) {
        exts = after;
        if tag != SEQUENCE {
            continue;
        }
        let Some((OID, oid, mut rest)) = tlv(ext) else {
            continue;
        };
        if oid != OID_SAN {
            continue;
        }
        // Optional BOOLEAN critical, then the OCTET STRING.
        while let Some((tag, value, after)) = tlv(rest) {
            rest = after;
            if tag == OCTET_STRING {
                alt_names(value, &mut out);
            }
        }
    }
    out
}

fn alt_names(value: &[u8], out: &mut Vec<String>) {
    let Some((SEQUENCE, mut names, _)) = tlv(value) else {
        return;
    };
    while let Some((tag, body, after)) = tlv(names) {
        names = after;
        if out.len() >= 32 {
            return;
        }
        match tag {
            0x82 => {
                if let Some(t) = text(0x16, body) {
                    out.push(t);
                }
            }
            0x87 => match body.len() {
                4 => {
                    let a: [u8; 4] = [body[0], body[1], body[2], body[3]];
                    out.push(std::net::Ipv4Addr::from(a).to_string());
                }
                16 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(body);
                    out.push(std::net::Ipv6Addr::from(a).to_string());
                }
                _ => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_of_a_real_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Root CA");
        let ca = ca_params.self_signed(&key).expect("ca");
        let ca_issuer = rcgen::Issuer::new(ca_params, key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "worker-1");
        let leaf = p.signed_by(&leaf_key, &ca_issuer).expect("leaf");
        let n = CertNames::from_der(leaf.der()).expect("names");
        assert_eq!(n.subject, "CN=worker-1");
        assert_eq!(n.issuer, "CN=Test Root CA");
        assert_eq!(n.alt_names, vec!["localhost", "127.0.0.1"]);
        let n = CertNames::from_der(ca.der()).expect("names");
        assert_eq!(n.subject, "CN=Test Root CA");
        assert!(n.alt_names.is_empty());
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for bad in [
            &b""[..],
            &b"\x30"[..],
            &b"\x30\x84\xff\xff\xff\xff"[..],
            &b"\x30\x03\x30\x01"[..],
            &b"\x1f\x00"[..],
        ] {
            assert_eq!(CertNames::from_der(bad), None);
        }
    }
}

//! Arbitrary DER through the certificate name reader of TLS error messages.
#![no_main]

use hybridgrid_net::tls::CertNames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(n) = CertNames::from_der(data) {
        let _ = n.describe();
    }
});

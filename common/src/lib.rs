//! What every Mizzen binary shares: logging ([`telemetry`]), graceful shutdown ([`shutdown`]), reading
//! artifacts from storage URIs ([`storage`]) and resolving `registry://` URIs ([`registry`]).

pub mod features;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod training;

/// The sha256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` (trimmed) cut to at most `max` characters, saying how many were left out: for messages that quote
/// something long (a server's error page, a container's log).
pub fn shortened(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{} ... ({} more characters)", &text[..cut], text[cut..].chars().count()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shortened_cuts_at_characters_and_says_how_many() {
        assert_eq!(super::shortened(" abc ", 5), "abc");
        assert_eq!(super::shortened("abcdefgh", 3), "abc ... (5 more characters)");
        assert_eq!(super::shortened("ééé", 1), "é ... (2 more characters)");
    }
}

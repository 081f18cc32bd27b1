//! What every Mizzen binary shares: logging ([`telemetry`]), graceful shutdown ([`shutdown`]) and reading
//! artifacts from storage URIs ([`storage`]).

pub mod metrics;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod training;

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

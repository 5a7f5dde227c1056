//! Percent-encoding of query and form values.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters is escaped, so a value means the same to a
/// form decoder, a query parser and `decodeURIComponent` (a space is `%20`, never `+`).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` as one query or form value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, VALUE).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(super::encode("a b+c/d=é~-._"), "a%20b%2Bc%2Fd%3D%C3%A9~-._");
    }
}

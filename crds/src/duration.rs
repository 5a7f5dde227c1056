//! Durations as Kubernetes users write them: `250ms`, `5s`, `2m`, `1h`, or `1m30s`.

/// Parses a duration into milliseconds. Zero and empty strings are rejected by callers that
/// need a positive value; here only the syntax is checked.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = s.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration {text:?}: expected a number"));
        }
        let n: u64 = s[start..i]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (ms, s, m, h)"
                ));
            }
            u => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {u:?} (ms, s, m, h)"
                ));
            }
        };
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("5s"), Ok(5_000));
        assert_eq!(parse_millis("2m"), Ok(120_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert_eq!(parse_millis("1m30s"), Ok(90_000));
        assert_eq!(parse_millis(" 0s "), Ok(0));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(parse_millis("").is_err());
        assert!(parse_millis("5").unwrap_err().contains("missing unit"));
        assert!(parse_millis("5 seconds").is_err());
        assert!(parse_millis("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_millis("s").is_err());
        assert!(parse_millis("99999999999999999999h").is_err());
    }
}

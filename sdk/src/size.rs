//! Byte sizes written as Kubernetes quantities (`1Gi`, `512Mi`, `10G`, `1000`).

use crate::{Error, Result};

/// Binary and decimal suffixes and their multipliers, as Kubernetes accepts
/// them for byte quantities (`m`, milli, makes no sense for bytes).
const SUFFIXES: [(&str, u64); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// More fractional digits than this cannot matter for a byte count (the
/// largest multiplier is below 10^19) and would overflow the arithmetic.
const MAX_FRACTION_DIGITS: u32 = 19;

const EXAMPLES: &str = "e.g. 1Gi, 512Mi, 10G or 1000";

/// Parses a byte size written as a Kubernetes quantity: a number, optionally
/// with a fraction, followed by an optional suffix — binary `Ki` `Mi` `Gi`
/// `Ti` `Pi` `Ei` or decimal `k` `M` `G` `T` `P` `E`. A fractional result is
/// rounded up to whole bytes, as Kubernetes does (`1.5Ki` is 1536, `0.5` is 1).
///
/// The error names the offending text and says what is expected, so it can be
/// shown to people as is.
///
/// ```
/// # use flexwasm_sdk::parse_size;
/// assert_eq!(parse_size("1Gi").unwrap(), 1 << 30);
/// assert_eq!(parse_size("10G").unwrap(), 10_000_000_000);
/// assert_eq!(parse_size("1.5Ki").unwrap(), 1536);
/// assert!(parse_size("ten gigs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64> {
    parse(text.trim())
        .map_err(|problem| Error::Failure(format!("invalid size {text:?}: {problem}")))
}

fn parse(text: &str) -> std::result::Result<u64, String> {
    if text.is_empty() {
        return Err(format!(
            "empty; expected a number with an optional unit, {EXAMPLES}"
        ));
    }
    let number_len = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_len);
    let multiplier = multiplier(suffix)?;

    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(format!(
            "expected a number with an optional unit, {EXAMPLES}"
        ));
    }
    if fraction.contains('.') {
        return Err("more than one decimal point".to_owned());
    }
    // Trailing zeros add precision but no value; dropping them keeps `1.50000…`
    // within the digit limit.
    let fraction = fraction.trim_end_matches('0');
    let fraction_digits = u32::try_from(fraction.len())
        .ok()
        .filter(|&digits| digits <= MAX_FRACTION_DIGITS)
        .ok_or_else(|| format!("more than {MAX_FRACTION_DIGITS} decimal places"))?;

    let too_large = || format!("larger than the maximum of {} bytes", u64::MAX);
    // value = (whole + fraction / 10^digits) * multiplier, computed exactly as
    // (whole * 10^digits + fraction) * multiplier / 10^digits, rounded up.
    let scale = 10u128.pow(fraction_digits);
    let scaled = digits_value(whole)
        .and_then(|whole| whole.checked_mul(scale))
        .and_then(|whole| whole.checked_add(digits_value(fraction)?))
        .and_then(|scaled| scaled.checked_mul(u128::from(multiplier)))
        .ok_or_else(too_large)?;
    u64::try_from(scaled.div_ceil(scale)).map_err(|_| too_large())
}

fn multiplier(suffix: &str) -> std::result::Result<u64, String> {
    if suffix.is_empty() {
        return Ok(1);
    }
    SUFFIXES
        .iter()
        .find(|(name, _)| *name == suffix)
        .map(|&(_, multiplier)| multiplier)
        .ok_or_else(|| {
            let known: Vec<&str> = SUFFIXES.iter().map(|(name, _)| *name).collect();
            format!(
                "unknown unit {suffix:?}; use one of {} or none for bytes, {EXAMPLES}",
                known.join(", ")
            )
        })
}

/// The value of a string of ASCII digits (empty is 0); `None` on overflow.
fn digits_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |value, digit| {
        value.checked_mul(10)?.checked_add(u128::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size(" 4096 "), Ok(4096));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn binary_suffixes() {
        assert_eq!(parse_size("1Ki"), Ok(1024));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("2Ti"), Ok(2 << 40));
        assert_eq!(parse_size("1Pi"), Ok(1 << 50));
        assert_eq!(parse_size("15Ei"), Ok(15 << 60));
    }

    #[test]
    fn decimal_suffixes() {
        assert_eq!(parse_size("1k"), Ok(1_000));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("10G"), Ok(10_000_000_000));
        assert_eq!(parse_size("3T"), Ok(3_000_000_000_000));
        assert_eq!(parse_size("1P"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_size("18E"), Ok(18_000_000_000_000_000_000));
    }

    #[test]
    fn fractions_round_up_to_whole_bytes() {
        assert_eq!(parse_size("1.5Ki"), Ok(1536));
        assert_eq!(parse_size("0.5Gi"), Ok(1 << 29));
        assert_eq!(parse_size(".5k"), Ok(500));
        assert_eq!(parse_size("2."), Ok(2));
        assert_eq!(parse_size("0.5"), Ok(1));
        assert_eq!(parse_size("1.0001k"), Ok(1001));
        assert_eq!(parse_size("1.2500000000000000000000000Mi"), Ok(1_310_720));
    }

    #[test]
    fn junk_is_rejected_with_a_clear_message() {
        for junk in [
            "",
            "  ",
            "abc",
            "Gi",
            "-1Gi",
            "+1Gi",
            "1 Gi",
            "1gi",
            "1m",
            "1.2.3",
            ".",
            "1e3",
            "0x10",
            "0.00000000000000000001",
        ] {
            let error = parse_size(junk).expect_err(junk).to_string();
            assert!(
                error.starts_with(&format!("invalid size {junk:?}: ")),
                "{error}"
            );
        }
        assert_eq!(
            parse_size("10GB").unwrap_err().to_string(),
            "invalid size \"10GB\": unknown unit \"GB\"; use one of Ki, Mi, Gi, Ti, Pi, Ei, \
             k, M, G, T, P, E or none for bytes, e.g. 1Gi, 512Mi, 10G or 1000"
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        for huge in [
            "18446744073709551616",
            "16Ei",
            "19E",
            "99999999999999999999999999999999999999999999Ki",
        ] {
            assert!(parse_size(huge).is_err(), "{huge}");
        }
        assert!(
            parse_size("16Ei")
                .unwrap_err()
                .to_string()
                .contains("larger than the maximum")
        );
    }
}

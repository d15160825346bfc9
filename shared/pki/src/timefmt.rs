//! RFC 3339, the one text form of time the project writes and reads.
//!
//! The issuance database, JSON output, the gateway's API and status pages,
//! bundles and error messages all print times this way, and `ca-tool verify
//! --at` and the database read them back. Keeping the formatting in one place
//! (it used to live in the issuance database module, which the gateway then
//! had to link for it) keeps every output the same.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Formats a time as RFC 3339 in UTC (`2027-01-31T12:00:00Z`), the form stored
/// and printed everywhere. Years outside 0..=9999, which RFC 3339 cannot
/// express, fall back to the Unix timestamp rather than failing an operation
/// that only wanted to print the time.
pub fn rfc3339(t: OffsetDateTime) -> String {
    rfc3339_in_offset(t.to_offset(UtcOffset::UTC))
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Formats a time as RFC 3339 in its own offset, for messages that echo a time
/// the operator gave (`--at 2027-01-31T14:00:00+02:00`) and for signed data
/// (bundles) where a time that cannot be expressed must be an error.
pub fn rfc3339_in_offset(t: OffsetDateTime) -> Result<String, time::error::Format> {
    t.format(&Rfc3339)
}

/// Parses an RFC 3339 time (any offset).
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text, &Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_in_utc_and_parses_back() {
        let t = datetime!(2027-01-31 14:00 +02:00);
        assert_eq!(rfc3339(t), "2027-01-31T12:00:00Z");
        assert_eq!(rfc3339_in_offset(t).unwrap(), "2027-01-31T14:00:00+02:00");
        assert_eq!(parse_rfc3339("2027-01-31T14:00:00+02:00"), Ok(t));
        assert!(parse_rfc3339("31/01/2027").is_err());
    }
}

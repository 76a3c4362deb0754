//! Time as the core sees it: callers pass `now` as Unix seconds (the core
//! never reads a clock). This module parses and formats the SigV4 basic
//! ISO 8601 form (`20130524T000000Z`), RFC 3339 (Secret annotations) and the
//! S3 XML timestamp form.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Seconds since the Unix epoch. Every time-dependent function takes one.
pub type UnixSeconds = i64;

/// A SigV4 `x-amz-date` value: the Unix time and its 16-byte text form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AmzDate {
    unix: UnixSeconds,
    text: [u8; 16],
}

impl AmzDate {
    /// Parses `YYYYMMDDTHHMMSSZ`.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
        let dt = PrimitiveDateTime::parse(s, &fmt).ok()?;
        let mut text = [0u8; 16];
        text.copy_from_slice(b);
        Some(Self {
            unix: dt.assume_utc().unix_timestamp(),
            text,
        })
    }

    pub fn from_unix(unix: UnixSeconds) -> Option<Self> {
        let dt = OffsetDateTime::from_unix_timestamp(unix).ok()?;
        let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
        let s = dt.format(&fmt).ok()?;
        Self::parse(&s)
    }

    pub fn unix(&self) -> UnixSeconds {
        self.unix
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The `YYYYMMDD` part used in the credential scope.
    pub fn date(&self) -> &str {
        &self.as_str()[..8]
    }
}

/// Parses an RFC 3339 timestamp (the `expires-at` annotation).
pub fn parse_rfc3339(s: &str) -> Option<UnixSeconds> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Formats Unix seconds as RFC 3339 in UTC (`2026-11-23T10:00:00Z`).
pub fn format_rfc3339(unix: UnixSeconds) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// Formats Unix seconds the way S3 XML bodies do (`2006-02-03T16:45:09.000Z`).
pub fn format_s3_xml(unix: UnixSeconds) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].000Z");
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_round_trip() {
        let d = AmzDate::parse("20130524T000000Z").unwrap();
        assert_eq!(d.unix(), 1369353600);
        assert_eq!(d.date(), "20130524");
        assert_eq!(AmzDate::from_unix(1369353600), Some(d));
        for bad in [
            "",
            "20130524T000000",
            "20130524 000000Z",
            "20131324T000000Z",
            "2013052400000000",
        ] {
            assert!(AmzDate::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_and_xml() {
        assert_eq!(parse_rfc3339("2013-05-24T00:00:00Z"), Some(1369353600));
        assert_eq!(parse_rfc3339("2013-05-24T02:00:00+02:00"), Some(1369353600));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(
            format_rfc3339(1369353600).as_deref(),
            Some("2013-05-24T00:00:00Z")
        );
        assert_eq!(format_s3_xml(1369353600), "2013-05-24T00:00:00.000Z");
    }
}

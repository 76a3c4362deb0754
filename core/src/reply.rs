//! Upstream replies the tenant must not see as they are.
//!
//! The gateway signs every forwarded request with the backend's admin key,
//! so an upstream *authentication* error is about the admin credentials,
//! never the tenant's: S3's `SignatureDoesNotMatch` carries the admin
//! access key id, the string to sign and the canonical request, and an
//! `AccessDenied` can name the admin principal's ARN. Such a reply reaches
//! the tenant as [`DenyReason::UpstreamCredentialsRejected`] (502, no
//! detail); the adapter logs and counts it for the operator.
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>)

use crate::error::DenyReason;

/// The most of an error body an adapter holds to decide. A longer error
/// body on a 401/403 is replaced unread (fail closed); on other statuses
/// it passes.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Error codes that are about the request's credentials, i.e. the admin's.
const CREDENTIAL_CODES: &[&str] = &[
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "RequestTimeTooSkewed",
    "CredentialsNotSupported",
];

/// Elements that echo what was signed, and with which key.
const DETAIL_ELEMENTS: &[&str] = &[
    "<AWSAccessKeyId>",
    "<StringToSign>",
    "<StringToSignBytes>",
    "<CanonicalRequest>",
    "<CanonicalRequestBytes>",
    "<SignatureProvided>",
];

/// Whether the status alone means the body must be read before forwarding.
pub fn is_error(status: u16) -> bool {
    status >= 400
}

/// Decides on an upstream error reply: `Some(reason)` to answer the tenant
/// with instead. `body` is what the adapter holds (at most
/// [`MAX_ERROR_BODY_BYTES`]); `complete` whether that is all of it.
/// `admin_key_ids` are every backend's admin access key ids.
pub fn screen<S: AsRef<str>>(
    status: u16,
    body: &[u8],
    complete: bool,
    admin_key_ids: &[S],
) -> Option<DenyReason> {
    if !is_error(status) {
        return None;
    }
    let rejected = Some(DenyReason::UpstreamCredentialsRejected);
    if !complete {
        return if matches!(status, 401 | 403) {
            rejected
        } else {
            None
        };
    }
    let text = String::from_utf8_lossy(body);
    if admin_key_ids
        .iter()
        .map(AsRef::as_ref)
        .any(|k| !k.is_empty() && text.contains(k))
    {
        return rejected;
    }
    if DETAIL_ELEMENTS.iter().any(|e| text.contains(e)) || text.contains("arn:aws") {
        return rejected;
    }
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(c, _)| c.trim());
    if code.is_some_and(|c| CREDENTIAL_CODES.contains(&c)) {
        return rejected;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &[&str] = &["AKIAADMIN0000000001"];

    fn err(code: &str, extra: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>m</Message>{extra}<RequestId>r</RequestId></Error>"
        )
    }

    #[test]
    fn credential_errors_and_details_are_replaced() {
        let rejected = Some(DenyReason::UpstreamCredentialsRejected);
        for (status, body) in [
            (403, err("SignatureDoesNotMatch", "")),
            (403, err("InvalidAccessKeyId", "")),
            (400, err("ExpiredToken", "")),
            (
                403,
                err(
                    "AccessDenied",
                    "<Message>User: arn:aws:iam::123456789012:user/admin is not authorized</Message>",
                ),
            ),
            (403, err("Other", "<AWSAccessKeyId>X</AWSAccessKeyId>")),
            (
                400,
                err("Other", "<StringToSign>AWS4-HMAC-SHA256</StringToSign>"),
            ),
            (
                404,
                err("NoSuchKey", "<Message>AKIAADMIN0000000001</Message>"),
            ),
        ] {
            assert_eq!(
                screen(status, body.as_bytes(), true, ADMIN),
                rejected,
                "{body}"
            );
        }
        // Too long to read: a 401/403 is replaced unread.
        assert_eq!(screen(403, b"<Error>", false, ADMIN), rejected);
        assert_eq!(screen(500, b"<Error>", false, ADMIN), None);
    }

    #[test]
    fn ordinary_errors_and_successes_pass() {
        for (status, body) in [
            (404, err("NoSuchKey", "<Key>k</Key>")),
            (403, err("AccessDenied", "<Message>Access Denied</Message>")),
            (409, err("BucketNotEmpty", "")),
            (412, err("PreconditionFailed", "")),
            (200, err("SignatureDoesNotMatch", "")),
            (403, String::new()),
        ] {
            assert_eq!(screen(status, body.as_bytes(), true, ADMIN), None, "{body}");
        }
    }
}

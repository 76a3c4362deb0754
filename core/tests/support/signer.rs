//! aws-sigv4 as the signing oracle for integration tests (never hand-rolled).
#![allow(dead_code, clippy::unwrap_used, clippy::too_many_arguments)]

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;

pub struct Signed {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub signature: String,
}

pub fn aws_sign(
    method: &str,
    host: &str,
    target: &str,
    headers: &[(String, String)],
    payload: Option<&str>,
    presign: Option<u64>,
    akid: &str,
    secret: &str,
    token: Option<&str>,
    region: &str,
    at: u64,
) -> Signed {
    let creds = Credentials::new(akid, secret, token.map(str::to_owned), None, "test");
    let identity = creds.into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.session_token_mode = SessionTokenMode::Include;
    let body = match presign {
        Some(secs) => {
            settings.signature_location = SignatureLocation::QueryParams;
            settings.expires_in = Some(Duration::from_secs(secs));
            SignableBody::UnsignedPayload
        }
        None => {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            SignableBody::Precomputed(payload.unwrap_or("UNSIGNED-PAYLOAD").to_owned())
        }
    };
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(UNIX_EPOCH + Duration::from_secs(at))
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let mut all: Vec<(&str, &str)> = vec![("host", host)];
    all.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let uri = format!("http://{host}{target}");
    let signable = SignableRequest::new(method, uri.as_str(), all.iter().copied(), body).unwrap();
    let (instructions, signature) = sign(signable, &params).unwrap().into_parts();
    let mut builder = http::Request::builder().method(method).uri(uri.as_str());
    for (k, v) in &all {
        builder = builder.header(*k, *v);
    }
    let mut request = builder.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut request);
    let target = request.uri().path_and_query().unwrap().as_str().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    Signed {
        method: method.to_owned(),
        target,
        headers,
        signature,
    }
}

pub fn borrowed(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

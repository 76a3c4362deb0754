//! The AWS SDK for Rust (aws-sdk-s3) as an end-to-end client: one S3 call
//! per invocation, the result printed as one JSON line for tests/e2e.
//! An interceptor records the `x-amz-content-sha256` of every request sent,
//! so the tests can assert which payload mode the SDK really used (file
//! bodies over HTTP go out as STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER).
//!
//! usage: bucketgate-sdkclient ENDPOINT ACCESS_KEY SECRET REGION OP ARGS…
//!   put-file BUCKET KEY PATH         PutObject, body streamed from a file
//!   put-bytes BUCKET KEY PATH        PutObject, body read into memory first
//!   multipart BUCKET KEY PATH PART   multipart upload, parts read from the file
//!   get BUCKET KEY OUT               GetObject into OUT
//!   head BUCKET KEY | delete BUCKET KEY | list BUCKET
//!   copy SRC_BUCKET SRC_KEY BUCKET KEY
//!   list-buckets
//!   presign-get BUCKET KEY SECONDS   prints the presigned URL

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde_json::{Value, json};

/// Records what each request said about its payload.
#[derive(Clone, Debug, Default)]
struct PayloadModes(Arc<Mutex<Vec<String>>>);

impl Intercept for PayloadModes {
    fn name(&self) -> &'static str {
        "PayloadModes"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mode = ctx
            .request()
            .headers()
            .get("x-amz-content-sha256")
            .unwrap_or("")
            .to_owned();
        self.0.lock().unwrap().push(mode);
        Ok(())
    }
}

fn failure<E: ProvideErrorMetadata + std::fmt::Debug>(e: &SdkError<E, HttpResponse>) -> Value {
    let status = e.raw_response().map(|r| r.status().as_u16());
    json!({"ok": false, "status": status, "code": e.code(), "message": e.message(),
           "debug": format!("{e:?}").chars().take(400).collect::<String>()})
}

macro_rules! call {
    ($fut:expr, |$ok:ident| $body:expr) => {
        match $fut.await {
            Ok($ok) => $body,
            Err(e) => failure(&e),
        }
    };
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: {} ENDPOINT ACCESS_KEY SECRET REGION OP ARGS…", a[0]);
        std::process::exit(2);
    }
    let modes = PayloadModes::default();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&a[1])
        .credentials_provider(Credentials::new(&a[2], &a[3], None, None, "e2e"))
        .region(Region::new(a[4].clone()))
        .force_path_style(true)
        .interceptor(modes.clone())
        .build();
    let s3 = Client::from_conf(config);
    let args = &a[6..];
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();

    let mut out = match a[5].as_str() {
        "put-file" => {
            let body = ByteStream::from_path(arg(2)).await.unwrap();
            call!(
                s3.put_object().bucket(arg(0)).key(arg(1)).body(body).send(),
                |r| { json!({"ok": true, "etag": r.e_tag()}) }
            )
        }
        "put-bytes" => {
            let body = ByteStream::from(std::fs::read(arg(2)).unwrap());
            call!(
                s3.put_object().bucket(arg(0)).key(arg(1)).body(body).send(),
                |r| { json!({"ok": true, "etag": r.e_tag()}) }
            )
        }
        "multipart" => multipart(&s3, &arg(0), &arg(1), &arg(2), arg(3).parse().unwrap()).await,
        "get" => call!(s3.get_object().bucket(arg(0)).key(arg(1)).send(), |r| {
            let bytes = r.body.collect().await.unwrap().into_bytes();
            std::fs::write(arg(2), &bytes).unwrap();
            json!({"ok": true, "size": bytes.len()})
        }),
        "head" => call!(s3.head_object().bucket(arg(0)).key(arg(1)).send(), |r| {
            json!({"ok": true, "size": r.content_length()})
        }),
        "delete" => call!(s3.delete_object().bucket(arg(0)).key(arg(1)).send(), |_r| {
            json!({"ok": true})
        }),
        "list" => call!(s3.list_objects_v2().bucket(arg(0)).send(), |r| {
            let keys: Vec<_> = r.contents().iter().filter_map(|o| o.key()).collect();
            json!({"ok": true, "keys": keys})
        }),
        "copy" => call!(
            s3.copy_object()
                .copy_source(format!("{}/{}", arg(0), arg(1)))
                .bucket(arg(2))
                .key(arg(3))
                .send(),
            |_r| json!({"ok": true})
        ),
        "list-buckets" => call!(s3.list_buckets().send(), |r| {
            let names: Vec<_> = r.buckets().iter().filter_map(|b| b.name()).collect();
            json!({"ok": true, "buckets": names})
        }),
        "presign-get" => {
            let expires = Duration::from_secs(arg(2).parse().unwrap());
            let req = s3
                .get_object()
                .bucket(arg(0))
                .key(arg(1))
                .presigned(PresigningConfig::expires_in(expires).unwrap())
                .await
                .unwrap();
            json!({"ok": true, "url": req.uri()})
        }
        op => {
            eprintln!("unknown op {op}");
            std::process::exit(2);
        }
    };
    out["payload_modes"] = json!(*modes.0.lock().unwrap());
    println!("{out}");
}

async fn multipart(s3: &Client, bucket: &str, key: &str, path: &str, part: u64) -> Value {
    let len = std::fs::metadata(path).unwrap().len();
    let upload = match s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
    {
        Ok(u) => u,
        Err(e) => return failure(&e),
    };
    let id = upload.upload_id().unwrap_or_default().to_owned();
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut number = 1;
    while offset < len {
        let length = part.min(len - offset);
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(aws_sdk_s3::primitives::Length::Exact(length))
            .build()
            .await
            .unwrap();
        let r = match s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(number)
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return failure(&e),
        };
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(r.e_tag().map(str::to_owned))
                .set_checksum_crc32(r.checksum_crc32().map(str::to_owned))
                .build(),
        );
        offset += length;
        number += 1;
    }
    let done = CompletedMultipartUpload::builder()
        .set_parts(Some(parts))
        .build();
    call!(
        s3.complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(done)
            .send(),
        |_r| json!({"ok": true, "parts": number - 1})
    )
}

//! Test harness shared by the controllers' tests: the ApiServerVerifier
//! pattern over `tower_test::mock`. The reconciler under test talks to a
//! mock API server; the test script takes each request in order, asserts
//! it and answers with typed objects. Each test module adds its own
//! `expect_*` helpers in an `impl Verifier` block of its own.

use std::future::Future;
use std::time::Duration;

use bucketgate_core::UnixSeconds;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::Value;

use crate::reconcile::Clock;

pub(crate) type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A mock API server client and its handle.
pub(crate) fn mock_client() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

/// A clock that does not move.
pub(crate) struct FixedClock(pub UnixSeconds);

impl Clock for FixedClock {
    fn now(&self) -> UnixSeconds {
        self.0
    }
}

/// `200 OK` with `v` as the body.
pub(crate) fn ok(v: impl serde::Serialize) -> (StatusCode, Value) {
    (StatusCode::OK, serde_json::to_value(v).unwrap())
}

/// `404` with a Kubernetes `Status`.
pub(crate) fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        serde_json::to_value(kube::core::Status::failure("not found", "NotFound").with_code(404))
            .unwrap(),
    )
}

/// Plays the API server.
pub(crate) struct Verifier {
    pub handle: Handle,
}

/// One request the reconciler made.
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Verifier {
    /// Takes the next request and answers it with `reply(&request)`.
    pub async fn next(&mut self, reply: impl FnOnce(&Seen) -> (StatusCode, Value)) -> Seen {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
            .await
            .expect("reconciler made no further request")
            .expect("service closed");
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
        };
        let (status, v) = reply(&seen);
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
        );
        seen
    }

    /// Expects `method path` and answers `reply`; returns what was sent.
    pub async fn expect(&mut self, method: &str, path: &str, reply: (StatusCode, Value)) -> Seen {
        let seen = self.next(|_| reply).await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (method, path),
            "query {}",
            seen.query
        );
        seen
    }

    /// Nothing more was requested.
    pub async fn done(mut self) {
        let extra =
            tokio::time::timeout(Duration::from_millis(100), self.handle.next_request()).await;
        if let Ok(Some((req, _))) = extra {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

/// Runs `task` (one reconcile) while `script` plays the API server, then
/// checks nothing more was asked.
pub(crate) async fn drive<T, F, Fut>(
    task: impl Future<Output = T> + Send + 'static,
    handle: Handle,
    script: F,
) -> T
where
    T: Send + 'static,
    F: FnOnce(Verifier) -> Fut,
    Fut: Future<Output = Verifier>,
{
    let task = tokio::spawn(task);
    let verifier = script(Verifier { handle }).await;
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("reconcile finished")
        .expect("no panic");
    verifier.done().await;
    result
}

//! The feed's hostcalls: the poller a root context drives from `on_tick` /
//! `on_http_call_response`, and the view each HTTP context reads its
//! configuration through. Every hostcall result is handled; nothing here
//! can panic the VM.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use bucketgate_core::feed::{FEED_PATH, FeedSnapshot};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use super::{FeedSettings, PollOutcome, SHARED_POLL, SHARED_VERSION, body_key, classify, due};
use crate::config::Config;

/// Failures are logged on the first one and then at most this often.
const LOG_EVERY_MS: u64 = 30_000;

fn now_ms() -> Option<u64> {
    hostcalls::get_current_time()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

fn shared_string(key: &str) -> (Option<String>, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((data, cas)) => (
            data.and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty()),
            cas,
        ),
        Err(_) => (None, None),
    }
}

/// Polls the feed for one root context.
#[derive(Debug)]
pub struct Poller {
    settings: FeedSettings,
    in_flight: Option<u32>,
    failures: u64,
    last_log_ms: Option<u64>,
}

impl Poller {
    pub fn new(settings: FeedSettings) -> Self {
        Self {
            settings,
            in_flight: None,
            failures: 0,
            last_log_ms: None,
        }
    }

    pub fn tick_period(&self) -> Duration {
        // Tick at half the period so one of the workers is always due soon.
        Duration::from_millis((self.settings.poll_ms / 2).max(50))
    }

    /// On every tick: take the turn if it is due, and dispatch the request.
    pub fn tick(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let Some(now) = now_ms() else { return };
        let (last, cas) = match hostcalls::get_shared_data(SHARED_POLL) {
            Ok((data, cas)) => (
                data.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map(u64::from_be_bytes),
                cas,
            ),
            Err(_) => (None, None),
        };
        if !due(last, now, self.settings.poll_ms) {
            return;
        }
        // Claim the turn; another worker that got there first wins.
        if hostcalls::set_shared_data(SHARED_POLL, Some(&now.to_be_bytes()), cas).is_err() {
            return;
        }
        let version = shared_string(SHARED_VERSION).0;
        let headers = self.settings.request_headers(version.as_deref());
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match hostcalls::dispatch_http_call(
            &self.settings.cluster,
            borrowed,
            None,
            vec![],
            Duration::from_millis(self.settings.timeout_ms),
        ) {
            Ok(token) => self.in_flight = Some(token),
            Err(status) => self.failed(&format!("cannot dispatch the request ({status:?})")),
        }
    }

    /// `on_http_call_response` of the root context (`headers`: how many
    /// response headers there are). Returns false when the token is not
    /// this poller's.
    pub fn on_response(&mut self, token: u32, headers: usize, body_size: usize) -> bool {
        if self.in_flight != Some(token) {
            return false;
        }
        self.in_flight = None;
        // A call Envoy failed (reset, or an answer larger than its
        // async-client buffer, which it drains) has no header map at all:
        // reading one then is an error proxy-wasm turns into a panic, which
        // would kill the VM. No headers: no answer.
        let status = if headers == 0 {
            None
        } else {
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        };
        let body = if body_size > 0 {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
        } else {
            None
        };
        match classify(status.as_deref(), body.as_deref()) {
            PollOutcome::Unchanged => self.recovered(),
            PollOutcome::Updated { version, body } => {
                self.recovered();
                publish(&version, &body);
            }
            PollOutcome::Failed(reason) => self.failed(&reason),
        }
        true
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            log::warn!(
                "bucketgate: feed {}{} reachable again after {} failed poll(s)",
                self.settings.cluster,
                FEED_PATH,
                self.failures
            );
        }
        self.failures = 0;
        self.last_log_ms = None;
    }

    fn failed(&mut self, reason: &str) {
        self.failures += 1;
        let now = now_ms().unwrap_or_default();
        if self
            .last_log_ms
            .is_some_and(|t| now.saturating_sub(t) < LOG_EVERY_MS)
        {
            return;
        }
        self.last_log_ms = Some(now);
        match shared_string(SHARED_VERSION).0 {
            Some(v) => log::warn!(
                "bucketgate: feed {}{} failed: {reason}; keeping the last snapshot (version {v})",
                self.settings.cluster,
                FEED_PATH
            ),
            None => log::warn!(
                "bucketgate: feed {}{} failed: {reason}; no snapshot yet, only static credentials are accepted",
                self.settings.cluster,
                FEED_PATH
            ),
        }
    }
}

/// Stores a validated snapshot for every worker: the body under its own
/// key, then the version pointer (compare-and-swap), then the old body
/// emptied.
fn publish(version: &str, body: &[u8]) {
    let (current, cas) = shared_string(SHARED_VERSION);
    if current.as_deref() == Some(version) {
        return;
    }
    if hostcalls::set_shared_data(&body_key(version), Some(body), None).is_err() {
        log::warn!("bucketgate: cannot store the feed snapshot in shared data");
        return;
    }
    match hostcalls::set_shared_data(SHARED_VERSION, Some(version.as_bytes()), cas) {
        Ok(()) => {
            log::info!("bucketgate: feed snapshot {version} loaded");
            if let Some(old) = current {
                let _ = hostcalls::set_shared_data(&body_key(&old), Some(b""), None);
            }
        }
        // Another worker published meanwhile; its version stands.
        Err(Status::CasMismatch) => {
            let _ = hostcalls::set_shared_data(&body_key(version), Some(b""), None);
        }
        Err(_) => log::warn!("bucketgate: cannot store the feed version in shared data"),
    }
}

/// The configuration a worker uses: the plugin config with the latest feed
/// snapshot applied, re-parsed only when the shared version changes.
#[derive(Debug)]
pub struct View {
    base: Rc<Config>,
    version: Option<String>,
    current: Rc<Config>,
}

impl View {
    pub fn new(base: Rc<Config>) -> Self {
        Self {
            current: base.clone(),
            base,
            version: None,
        }
    }

    /// The configuration to use now.
    pub fn current(&mut self) -> Rc<Config> {
        if self.base.feed.is_some() {
            self.refresh();
        }
        self.current.clone()
    }

    fn refresh(&mut self) {
        let (Some(version), _) = shared_string(SHARED_VERSION) else {
            return;
        };
        if self.version.as_deref() == Some(version.as_str()) {
            return;
        }
        let body = match hostcalls::get_shared_data(&body_key(&version)) {
            Ok((Some(b), _)) if !b.is_empty() => b,
            // Replaced between the two reads: the next request picks it up.
            _ => return,
        };
        match FeedSnapshot::parse(&body) {
            Ok(feed) if feed.version == version => {
                self.current = Rc::new(super::apply(&self.base, &feed));
                self.version = Some(version);
            }
            Ok(_) => {}
            Err(e) => log::warn!("bucketgate: stored feed snapshot does not parse: {e}"),
        }
    }
}

/// Shared between a root context and the HTTP contexts it creates.
pub type SharedView = Rc<RefCell<View>>;

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

use super::{
    FeedSettings, Manifest, Paging, PollOutcome, Run, SHARED_GEN, SHARED_MANIFEST, SHARED_POLL,
    SHARED_RUN, apply_page, classify, due, page_key,
};
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

/// A big-endian u64 in shared data, with its CAS token.
fn shared_u64(key: &str) -> (Option<u64>, Option<u32>) {
    match hostcalls::get_shared_data(key) {
        Ok((data, cas)) => (
            data.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_be_bytes),
            cas,
        ),
        Err(_) => (None, None),
    }
}

/// The current manifest, with its CAS token.
fn manifest() -> (Option<Manifest>, Option<u32>) {
    match hostcalls::get_shared_data(SHARED_MANIFEST) {
        Ok((data, cas)) => (
            data.and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| Manifest::decode(&s)),
            cas,
        ),
        Err(_) => (None, None),
    }
}

/// Empties the pages of `runs` (shared data has no delete).
fn clear(runs: &[Run]) {
    for key in runs.iter().flat_map(|r| r.page_keys()) {
        let _ = hostcalls::set_shared_data(&key, Some(b""), None);
    }
}

/// A fresh page-run number (a shared counter, compare-and-swap).
fn next_run_id() -> Option<u64> {
    for _ in 0..16 {
        let (current, cas) = shared_u64(SHARED_RUN);
        let id = current.unwrap_or(0) + 1;
        match hostcalls::set_shared_data(SHARED_RUN, Some(&id.to_be_bytes()), cas) {
            Ok(()) => return Some(id),
            Err(Status::CasMismatch) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// One poll past its first page.
#[derive(Debug)]
struct Session {
    paging: Paging,
    run: Run,
}

/// Polls the feed for one root context.
#[derive(Debug)]
pub struct Poller {
    settings: FeedSettings,
    in_flight: Option<u32>,
    /// The version the first page's request named.
    since_sent: Option<String>,
    session: Option<Session>,
    failures: u64,
    last_log_ms: Option<u64>,
}

impl Poller {
    pub fn new(settings: FeedSettings) -> Self {
        Self {
            settings,
            in_flight: None,
            since_sent: None,
            session: None,
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
        if self.in_flight.is_some() || self.session.is_some() {
            return;
        }
        let Some(now) = now_ms() else { return };
        let (last, cas) = shared_u64(SHARED_POLL);
        if !due(last, now, self.settings.poll_ms) {
            return;
        }
        // Claim the turn; another worker that got there first wins.
        if hostcalls::set_shared_data(SHARED_POLL, Some(&now.to_be_bytes()), cas).is_err() {
            return;
        }
        self.since_sent = manifest().0.and_then(|m| m.since().map(str::to_owned));
        let headers = self
            .settings
            .request_headers(self.since_sent.as_deref(), None);
        self.dispatch(headers);
    }

    fn dispatch(&mut self, headers: Vec<(String, String)>) {
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
            PollOutcome::Unchanged if self.session.is_none() => self.recovered(),
            PollOutcome::Unchanged => self.failed("a 304 in the middle of a paged answer"),
            PollOutcome::Updated { page, body } => self.page(&page, &body),
            PollOutcome::Failed(reason) => self.failed(&reason),
        }
        true
    }

    /// Stores one page; asks for the next or commits the manifest.
    fn page(&mut self, page: &FeedSnapshot, body: &[u8]) {
        let session = match self.session.take() {
            None => Paging::first(self.since_sent.clone(), page).and_then(|paging| {
                let id = next_run_id().ok_or("cannot number the feed's pages in shared data")?;
                Ok(Session {
                    paging,
                    run: Run { id, pages: 0 },
                })
            }),
            Some(mut s) => s.paging.follow(page).map(|()| s),
        };
        let mut session = match session {
            Ok(s) => s,
            Err(e) => return self.failed(&e),
        };
        let key = page_key(session.run.id, session.run.pages);
        session.run.pages += 1;
        if hostcalls::set_shared_data(&key, Some(body), None).is_err() {
            clear(&[session.run]);
            return self.failed("cannot store a feed page in shared data");
        }
        if !session.paging.complete() {
            // Keep the turn while paging: other workers wait.
            if let Some(now) = now_ms() {
                let _ = hostcalls::set_shared_data(SHARED_POLL, Some(&now.to_be_bytes()), None);
            }
            let headers = session.paging.next_request(&self.settings);
            self.session = Some(session);
            self.dispatch(headers);
            return;
        }
        self.recovered();
        commit(&session);
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
        if let Some(s) = self.session.take() {
            clear(&[s.run]);
        }
        self.failures += 1;
        let now = now_ms().unwrap_or_default();
        if self
            .last_log_ms
            .is_some_and(|t| now.saturating_sub(t) < LOG_EVERY_MS)
        {
            return;
        }
        self.last_log_ms = Some(now);
        match manifest().0 {
            Some(m) => log::warn!(
                "bucketgate: feed {}{} failed: {reason}; keeping the last snapshot (version {})",
                self.settings.cluster,
                FEED_PATH,
                m.version
            ),
            None => log::warn!(
                "bucketgate: feed {}{} failed: {reason}; no snapshot yet, only static credentials are accepted",
                self.settings.cluster,
                FEED_PATH
            ),
        }
    }
}

/// Points the manifest at a complete answer (compare-and-swap), bumps the
/// generation, and empties the pages no longer referenced.
fn commit(session: &Session) {
    let (current, cas) = manifest();
    let Some(next) = Manifest::after(current.as_ref(), &session.paging, session.run) else {
        // Another worker committed meanwhile; its answer stands.
        clear(&[session.run]);
        return;
    };
    match hostcalls::set_shared_data(SHARED_MANIFEST, Some(next.encode().as_bytes()), cas) {
        Ok(()) => {
            let _ =
                hostcalls::set_shared_data(SHARED_GEN, Some(&next.generation.to_be_bytes()), None);
            log::info!(
                "bucketgate: feed snapshot {} loaded ({}, {} page(s))",
                next.version,
                if session.paging.delta {
                    "delta"
                } else {
                    "whole"
                },
                session.run.pages
            );
            if let Some(old) = current {
                clear(&old.dropped_by(&next));
            }
        }
        Err(status) => {
            if status != Status::CasMismatch {
                log::warn!("bucketgate: cannot store the feed manifest in shared data");
            }
            clear(&[session.run]);
        }
    }
}

/// The configuration a worker uses: the plugin config with the feed's
/// pages applied, updated only when the shared generation moves.
#[derive(Debug)]
pub struct View {
    base: Rc<Config>,
    generation: Option<u64>,
    /// The whole-set run and how many delta runs `current` holds.
    applied: Option<(Run, usize)>,
    current: Rc<Config>,
}

impl View {
    pub fn new(base: Rc<Config>) -> Self {
        Self {
            current: base.clone(),
            base,
            generation: None,
            applied: None,
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
        let (Some(generation), _) = shared_u64(SHARED_GEN) else {
            return;
        };
        if self.generation == Some(generation) {
            return;
        }
        let (Some(m), _) = manifest() else { return };
        if self.applied == Some((m.whole, m.deltas.len())) {
            self.generation = Some(m.generation);
            return;
        }
        // Only the delta runs not applied yet, or everything again when
        // the whole set changed. Built on a copy (shared entries), swapped
        // in whole: a request never sees half an answer.
        let (mut next, runs): (Config, Vec<Run>) = match self.applied {
            Some((whole, n)) if whole == m.whole && n <= m.deltas.len() => {
                ((*self.current).clone(), m.deltas[n..].to_vec())
            }
            _ => (
                (*self.base).clone(),
                std::iter::once(m.whole)
                    .chain(m.deltas.iter().copied())
                    .collect(),
            ),
        };
        for key in runs.iter().flat_map(|r| r.page_keys()) {
            let body = match hostcalls::get_shared_data(&key) {
                Ok((Some(b), _)) if !b.is_empty() => b,
                // Replaced meanwhile: the next request reads the new manifest.
                _ => return,
            };
            match FeedSnapshot::parse(&body) {
                Ok(page) => apply_page(&self.base, &mut next, &page),
                Err(e) => {
                    log::warn!("bucketgate: stored feed page {key} does not parse: {e}");
                    return;
                }
            }
        }
        self.current = Rc::new(next);
        self.applied = Some((m.whole, m.deltas.len()));
        self.generation = Some(m.generation);
    }
}

/// Shared between a root context and the HTTP contexts it creates.
pub type SharedView = Rc<RefCell<View>>;

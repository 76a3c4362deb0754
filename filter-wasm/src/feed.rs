//! Live credentials from the broker's feed (`GET /v1/feed`, the wire type
//! `bucketgate_core::feed::FeedSnapshot`).
//!
//! One root context at a time polls (an election through shared data, so a
//! tick costs one request per Envoy, not one per worker) and names the
//! version it holds (`If-None-Match`). The broker answers 304, a delta, or
//! the whole set, in pages. The poller stores each page's body in shared
//! data (`bucketgate.feed.page.<run>.<n>`) and, after the last one, commits
//! a small [`Manifest`] (compare-and-swap): the version, the run of pages
//! holding the whole set, and the runs of deltas since. Then it bumps an
//! 8-byte generation counter.
//!
//! Each worker reads that counter per request and, when it moved, the
//! manifest: it applies only the delta runs it has not seen to a copy of
//! its configuration, or rebuilds from the whole run when that changed,
//! and swaps the copy in. A revocation among 100,000 keys is then one
//! small page per worker, not the whole set. After [`MAX_DELTA_RUNS`]
//! deltas the poller asks for the whole set again, bounding a new
//! worker's rebuild.
//!
//! The merge order, the poll request, paging and what an answer means are
//! shared with the native module (`bucketgate_core::plugin::poll`); this
//! file adds the shared-data layout, and `feed/host.rs` does the hostcalls.

#[cfg(target_arch = "wasm32")]
pub mod host;

pub use bucketgate_core::plugin::poll::{FeedSettings, Paging, PollOutcome, apply_page, classify};

/// Shared-data key of the generation counter (big-endian u64).
pub const SHARED_GEN: &str = "bucketgate.feed.generation";
/// Shared-data key of the [`Manifest`].
pub const SHARED_MANIFEST: &str = "bucketgate.feed.manifest";
/// Shared-data key of the next page-run number (big-endian u64).
pub const SHARED_RUN: &str = "bucketgate.feed.run";
/// Shared-data key holding the last poll start (ms, big-endian u64).
pub const SHARED_POLL: &str = "bucketgate.feed.poll";
/// Delta runs kept on top of the whole set before the poller asks for the
/// whole set again.
pub const MAX_DELTA_RUNS: usize = 256;

/// Consecutive pages stored by one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: u64,
    pub pages: u32,
}

impl Run {
    /// The shared-data keys of its pages, in order.
    pub fn page_keys(self) -> impl Iterator<Item = String> {
        (0..self.pages).map(move |n| page_key(self.id, n))
    }
}

/// The shared-data key of page `n` of run `id`.
pub fn page_key(id: u64, n: u32) -> String {
    format!("bucketgate.feed.page.{id}.{n}")
}

/// What the workers assemble their configuration from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub generation: u64,
    /// The feed version it holds (the next poll's `If-None-Match`).
    pub version: String,
    pub whole: Run,
    pub deltas: Vec<Run>,
}

impl Manifest {
    /// `generation\nversion\nid:pages\nid:pages id:pages …`
    pub fn encode(&self) -> String {
        let run = |r: &Run| format!("{}:{}", r.id, r.pages);
        let deltas: Vec<String> = self.deltas.iter().map(run).collect();
        format!(
            "{}\n{}\n{}\n{}",
            self.generation,
            self.version,
            run(&self.whole),
            deltas.join(" ")
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let run = |s: &str| {
            let (id, pages) = s.split_once(':')?;
            Some(Run {
                id: id.parse().ok()?,
                pages: pages.parse().ok()?,
            })
        };
        let mut lines = text.split('\n');
        let generation = lines.next()?.parse().ok()?;
        let version = lines.next()?.to_owned();
        let whole = run(lines.next()?)?;
        let deltas = lines
            .next()?
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(run)
            .collect::<Option<Vec<_>>>()?;
        if lines.next().is_some() || version.is_empty() {
            return None;
        }
        Some(Self {
            generation,
            version,
            whole,
            deltas,
        })
    }

    /// The version to name in the next poll: none once the deltas are many
    /// (ask for the whole set again).
    pub fn since(&self) -> Option<&str> {
        (self.deltas.len() < MAX_DELTA_RUNS).then_some(self.version.as_str())
    }

    /// The manifest after a poll's pages in `run`: `None` when the answer
    /// no longer fits it (a delta on a version this manifest does not
    /// hold any more: another worker committed meanwhile).
    pub fn after(current: Option<&Self>, paging: &Paging, run: Run) -> Option<Self> {
        let generation = current.map_or(1, |m| m.generation + 1);
        if !paging.delta {
            return Some(Self {
                generation,
                version: paging.version.clone(),
                whole: run,
                deltas: Vec::new(),
            });
        }
        let current = current?;
        if paging.since.as_deref() != Some(current.version.as_str()) {
            return None;
        }
        let mut deltas = current.deltas.clone();
        deltas.push(run);
        Some(Self {
            generation,
            version: paging.version.clone(),
            whole: current.whole,
            deltas,
        })
    }

    /// Runs this manifest holds that `next` does not (to empty).
    pub fn dropped_by(&self, next: &Self) -> Vec<Run> {
        std::iter::once(self.whole)
            .chain(self.deltas.iter().copied())
            .filter(|r| next.whole != *r && !next.deltas.contains(r))
            .collect()
    }
}

/// Whether this root context should start a poll now, given the last poll
/// start any context recorded. A little slack lets the next tick of any
/// worker take its turn.
pub fn due(last_poll_ms: Option<u64>, now_ms: u64, poll_ms: u64) -> bool {
    match last_poll_ms {
        None => true,
        Some(last) => now_ms.saturating_sub(last) >= poll_ms.saturating_sub(poll_ms / 10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucketgate_core::feed::FeedSnapshot;

    #[test]
    fn poll_election() {
        assert!(due(None, 0, 500));
        assert!(!due(Some(1000), 1200, 500));
        assert!(due(Some(1000), 1450, 500), "slack of a tenth");
        assert!(due(Some(1000), 2000, 500));
        assert!(!due(Some(5000), 1000, 500), "a clock going back waits");
        assert_eq!(page_key(7, 2), "bucketgate.feed.page.7.2");
    }

    fn paging(since: Option<&str>, delta: bool, version: &str) -> Paging {
        let page = FeedSnapshot {
            delta,
            ..FeedSnapshot::whole(version.into(), vec![], vec![])
        };
        Paging::first(since.map(str::to_owned), &page).unwrap()
    }

    #[test]
    fn manifests_follow_whole_and_delta_answers() {
        let r = |id, pages| Run { id, pages };
        let first = Manifest::after(None, &paging(None, false, "v1"), r(1, 3)).unwrap();
        assert_eq!(
            (first.generation, first.whole, first.deltas.len()),
            (1, r(1, 3), 0)
        );
        assert_eq!(
            first.whole.page_keys().last().unwrap(),
            "bucketgate.feed.page.1.2"
        );
        let second =
            Manifest::after(Some(&first), &paging(Some("v1"), true, "v2"), r(2, 1)).unwrap();
        assert_eq!(
            (second.generation, second.whole, second.deltas.clone()),
            (2, r(1, 3), vec![r(2, 1)])
        );
        assert_eq!(Manifest::decode(&second.encode()), Some(second.clone()));
        assert_eq!(Manifest::decode(&first.encode()), Some(first.clone()));
        assert_eq!(second.since(), Some("v2"));
        // A delta on a version no longer held does not fit.
        assert!(Manifest::after(Some(&second), &paging(Some("v1"), true, "v3"), r(3, 1)).is_none());
        assert!(Manifest::after(None, &paging(Some("v1"), true, "v3"), r(3, 1)).is_none());
        // A whole answer replaces both runs.
        let third =
            Manifest::after(Some(&second), &paging(Some("v2"), false, "v4"), r(4, 2)).unwrap();
        assert_eq!(second.dropped_by(&third), vec![r(1, 3), r(2, 1)]);
        assert!(first.dropped_by(&second).is_empty());
        for bad in [
            "",
            "1\nv\n1:2",
            "x\nv\n1:2\n",
            "1\n\n1:2\n",
            "1\nv\n1-2\n",
            "1\nv\n1:2\n3\n",
        ] {
            assert_eq!(Manifest::decode(bad), None, "{bad:?}");
        }
        // Many deltas: the next poll asks for the whole set.
        let mut many = second.clone();
        many.deltas = vec![r(9, 1); MAX_DELTA_RUNS];
        assert_eq!(many.since(), None);
    }
}

use super::*;

/// A tiny model of the cluster the plan acts on, with a hand-moved clock.
struct Sim {
    now: UnixSeconds,
    policy: RotationPolicy,
    annotation: Option<String>,
    existing: Vec<Existing>,
    status_key: Option<String>,
    rotated_at: Option<UnixSeconds>,
    minted: u32,
    consumer_generation: u64,
}

impl Sim {
    fn new(policy: RotationPolicy) -> Self {
        Sim {
            now: 1_000_000,
            policy,
            annotation: None,
            existing: Vec::new(),
            status_key: None,
            rotated_at: None,
            minted: 0,
            consumer_generation: 0,
        }
    }

    /// Computes and carries out one plan, as the reconciler does.
    fn step(&mut self) -> Plan {
        let p = plan(&Input {
            now: self.now,
            policy: &self.policy,
            rotate_annotation: self.annotation.as_deref(),
            status_access_key_id: self.status_key.as_deref(),
            rotated_at: self.rotated_at,
            existing: &self.existing,
            last_generation: self.consumer_generation,
        });
        for &(i, t) in &p.expire {
            self.existing[i].expires_at = Some(t);
        }
        let mut idx: Vec<usize> = p.delete.clone();
        idx.sort_unstable_by(|a, b| b.cmp(a));
        let current_key = p.current.map(|i| self.existing[i].access_key_id.clone());
        for i in idx {
            self.existing.remove(i);
        }
        if p.mint.is_some() {
            self.minted += 1;
            let key = format!("AKIA{:016}", self.minted);
            self.existing.push(Existing {
                secret_name: format!("vc-{}", key.to_lowercase()),
                access_key_id: key.clone(),
                generation: p.generation,
                expires_at: None,
                rotate_token: self.annotation.clone(),
            });
            self.status_key = Some(key);
        } else {
            self.status_key = current_key;
        }
        self.rotated_at = Some(p.rotated_at);
        self.consumer_generation = p.generation;
        p
    }

    fn live(&self) -> Vec<&str> {
        self.existing
            .iter()
            .filter(|e| e.expires_at.is_none())
            .map(|e| e.access_key_id.as_str())
            .collect()
    }
}

fn manual(overlap: i64) -> RotationPolicy {
    RotationPolicy {
        mode: RotationMode::Manual,
        interval_days: 90,
        overlap_seconds: overlap,
    }
}

fn time_based(days: i64, overlap: i64) -> RotationPolicy {
    RotationPolicy {
        mode: RotationMode::TimeBased,
        interval_days: days,
        overlap_seconds: overlap,
    }
}

#[test]
fn initial_then_steady() {
    let mut s = Sim::new(manual(300));
    let p = s.step();
    assert_eq!(p.mint, Some(MintReason::Initial));
    assert_eq!(p.generation, 1);
    assert_eq!(p.rotated_at, 1_000_000);
    assert_eq!(p.requeue_after, RESYNC_SECONDS);
    assert_eq!(s.live(), ["AKIA0000000000000001"]);
    s.now += 10_000;
    let p = s.step();
    assert_eq!(p.mint, None);
    assert_eq!(p.current, Some(0));
    assert_eq!(p.generation, 1);
    assert!(p.expire.is_empty() && p.delete.is_empty());
    assert_eq!(p.rotated_at, 1_000_000, "rotatedAt only moves on a mint");
}

#[test]
fn manual_rotation_overlap_then_delete() {
    let mut s = Sim::new(manual(300));
    s.step();
    s.now += 50;
    s.annotation = Some("2024-01-01".into());
    let p = s.step();
    assert_eq!(p.mint, Some(MintReason::Manual));
    assert_eq!(p.generation, 2);
    assert_eq!(p.expire, vec![(0, s.now + 300)]);
    assert_eq!(p.requeue_after, 300);
    assert_eq!(s.live(), ["AKIA0000000000000002"]);
    assert_eq!(s.existing.len(), 2, "old key kept during the overlap");

    // One second before the overlap ends nothing is deleted.
    s.now += 299;
    let p = s.step();
    assert_eq!(p.mint, None);
    assert!(p.delete.is_empty());
    assert_eq!(p.requeue_after, 1);
    // At the instant it passes, the old key goes.
    s.now += 1;
    let p = s.step();
    assert_eq!(p.delete, vec![0]);
    assert_eq!(s.existing.len(), 1);
    assert_eq!(s.existing[0].generation, 2);

    // The same value again does not rotate; removing the annotation does.
    s.now += 1;
    assert_eq!(s.step().mint, None);
    s.annotation = None;
    assert_eq!(s.step().mint, Some(MintReason::Manual));
    assert_eq!(s.existing.last().map(|e| e.generation), Some(3));
}

#[test]
fn zero_overlap_expires_now_and_deletes_next_pass() {
    let mut s = Sim::new(manual(0));
    s.step();
    s.annotation = Some("x".into());
    let p = s.step();
    assert_eq!(p.expire, vec![(0, s.now)]);
    assert_eq!(p.requeue_after, 1);
    let p = s.step();
    assert_eq!(p.delete, vec![0]);
}

#[test]
fn time_based_due_from_rotated_at() {
    let mut s = Sim::new(time_based(7, 60));
    let start = s.now;
    let p = s.step();
    assert_eq!(p.mint, Some(MintReason::Initial));
    assert_eq!(p.requeue_after, RESYNC_SECONDS);
    // Woken early (e.g. a resync) one second before due: nothing.
    s.now = start + 7 * DAY - 1;
    let p = s.step();
    assert_eq!(p.mint, None);
    assert_eq!(p.requeue_after, 1);
    s.now = start + 7 * DAY;
    let p = s.step();
    assert_eq!(p.mint, Some(MintReason::Scheduled));
    assert_eq!(p.rotated_at, start + 7 * DAY);
    assert_eq!(p.expire, vec![(0, start + 7 * DAY + 60)]);
    assert_eq!(p.requeue_after, 60);
    // Next due is a full interval from the new rotatedAt.
    s.now += 60;
    let p = s.step();
    assert_eq!(p.delete, vec![0]);
    s.now = start + 14 * DAY - 1;
    assert_eq!(s.step().mint, None);
    s.now = start + 14 * DAY;
    assert_eq!(s.step().mint, Some(MintReason::Scheduled));
}

#[test]
fn time_based_without_rotated_at_starts_clock_now() {
    let policy = time_based(30, 300);
    let existing = vec![Existing {
        secret_name: "vc-akia1".into(),
        access_key_id: "AKIA1".into(),
        generation: 4,
        expires_at: None,
        rotate_token: None,
    }];
    let p = plan(&Input {
        now: 500,
        policy: &policy,
        rotate_annotation: None,
        status_access_key_id: Some("AKIA1"),
        rotated_at: None,
        existing: &existing,
        last_generation: 0,
    });
    assert_eq!(p.mint, None);
    assert_eq!(p.rotated_at, 500);
    assert_eq!(p.generation, 4);
    // An interval below 7 days (CEL forbids it) is treated as 7.
    let short = time_based(1, 0);
    assert_eq!(due_at(&short, 0), Some(7 * DAY));
    assert_eq!(due_at(&manual(0), 0), None);
}

#[test]
fn revocation_mints_fresh_key() {
    let mut s = Sim::new(manual(300));
    s.step();
    // The internal Secret is deleted (kubectl delete secret ...).
    s.existing.clear();
    s.now += 5;
    let p = s.step();
    assert_eq!(p.mint, Some(MintReason::Revoked));
    assert_eq!(
        p.generation, 2,
        "counts up from the consumer Secret's generation"
    );
    assert_eq!(s.live(), ["AKIA0000000000000002"]);

    // Revoking the new key during an overlap: the old one keeps its expiry.
    s.annotation = Some("r".into());
    s.step();
    let new_key = s.live()[0].to_owned();
    s.existing.retain(|e| e.access_key_id != new_key);
    let p = s.step();
    assert_eq!(p.mint, Some(MintReason::Revoked));
    assert_eq!(p.generation, 4);
    assert!(p.expire.is_empty(), "the expiring key is not extended");
}

#[test]
fn extra_live_keys_are_expired() {
    let policy = manual(120);
    let mk = |id: &str, g| Existing {
        secret_name: format!("vc-{}", id.to_lowercase()),
        access_key_id: id.into(),
        generation: g,
        expires_at: None,
        rotate_token: None,
    };
    let existing = vec![mk("AKIAOLD", 1), mk("AKIANEW", 2)];
    let p = plan(&Input {
        now: 10,
        policy: &policy,
        rotate_annotation: None,
        status_access_key_id: Some("AKIAOLD"),
        rotated_at: Some(5),
        existing: &existing,
        last_generation: 0,
    });
    assert_eq!(p.mint, None);
    assert_eq!(p.current, Some(1), "highest generation wins");
    assert_eq!(p.expire, vec![(0, 130)]);
    assert_eq!(p.requeue_after, 120);
}

#[test]
fn negative_overlap_is_zero() {
    assert_eq!(overlap(&manual(-10)), 0);
    assert_eq!(MintReason::Initial.event_reason(), "CredentialsProvisioned");
    assert_eq!(MintReason::Scheduled.event_reason(), "CredentialRotated");
}

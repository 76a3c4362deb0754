//! The renew deadline kube-lease-manager lacks. Its `watch()` flips to
//! "not leading" only when it sees another holder; while the API server is
//! unreachable its renewals fail and it keeps saying "leading" forever. The
//! lease meanwhile expires, a standby takes it, and two replicas reconcile
//! at once (found with a real API server, tests/kube/test_leader.py after
//! an outage). client-go steps down once it has not renewed within its
//! renew deadline; this does the same: a replica leads only while the lease
//! it last read names it and was renewed less than `duration - grace` ago,
//! so it stops before any standby may take the lease at `renewTime +
//! duration`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use tokio::sync::watch;

/// Whether `lease` (as last read) still makes `identity` the leader at `now`.
pub fn holds(lease: &Lease, identity: &str, now: Timestamp, renew_deadline: Duration) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    let Ok(deadline) = renewed.0.checked_add(renew_deadline) else {
        return false;
    };
    now < deadline
}

/// Turns kube-lease-manager's `leading` into one that also ends at the
/// renew deadline: reads the Lease every `check`, and sends `true` only
/// while the manager says leading and [`holds`] is true for the last
/// successful read.
pub fn guard(
    api: Api<Lease>,
    name: String,
    identity: String,
    mut leading: watch::Receiver<bool>,
    renew_deadline: Duration,
    check: Duration,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut last: Option<Lease> = None;
        let mut tick = tokio::time::interval(check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = leading.changed() => if r.is_err() { let _ = tx.send(false); return; },
                _ = tx.closed() => return,
            }
            let manager_says = *leading.borrow_and_update();
            if manager_says {
                match api.get_opt(&name).await {
                    Ok(l) => last = l,
                    Err(e) => tracing::warn!(error = %e, "reading the leader lease failed"),
                }
            }
            let now_leading = manager_says
                && last
                    .as_ref()
                    .is_some_and(|l| holds(l, &identity, Timestamp::now(), renew_deadline));
            if *tx.borrow() != now_leading {
                if !now_leading && manager_says {
                    tracing::warn!(
                        "the leader lease was not renewed within the renew deadline: stepping down"
                    );
                }
                let _ = tx.send(now_leading);
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn lease(holder: Option<&str>, renewed: Option<i64>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn leads_only_while_named_and_renewed_within_the_deadline() {
        let at = |s| Timestamp::from_second(s).unwrap();
        let d = Duration::from_secs(10);
        let l = lease(Some("a"), Some(1_000));
        assert!(holds(&l, "a", at(1_000), d));
        assert!(holds(&l, "a", at(1_009), d));
        // Past the renew deadline (still before a standby could take it at 1015).
        assert!(!holds(&l, "a", at(1_010), d));
        assert!(!holds(&l, "b", at(1_001), d));
        assert!(!holds(&lease(None, Some(1_000)), "a", at(1_001), d));
        assert!(!holds(&lease(Some("a"), None), "a", at(1_001), d));
        assert!(!holds(&Lease::default(), "a", at(1_001), d));
    }
}

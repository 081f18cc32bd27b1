//! The blue-green rollout decision, as Argo Rollouts makes it: a pure function from what is observed
//! (revisions with their replica counts, the active Service, what status remembers, the spec, commands,
//! the clock) to what should be (replicas per revision, the Services' revisions, status). No client and no
//! clock of its own, so every rule is a unit test and the invariants are property tests.
//!
//! Times are seconds since the epoch.

use crate::api::v1alpha1::model_deployment::ModelDeploymentSpec;
use std::collections::BTreeMap;

/// One revision's Deployment, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    pub name: String,
    /// `spec.replicas` of its Deployment.
    pub replicas: i32,
    /// Pods ready for minReadySeconds.
    pub available: i32,
    /// When an old revision kept warm after a switch is scaled down (its annotation).
    pub scale_down_at: Option<i64>,
}

/// The smoke test of the desired revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Smoke {
    /// None configured.
    NotConfigured,
    /// Configured, not yet run against this revision.
    Pending,
    Passed,
    Failed,
}

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct World<'a> {
    pub spec: &'a ModelDeploymentSpec,
    /// The revision the spec asks for now.
    pub desired: String,
    pub revisions: Vec<Revision>,
    /// The revision the active Service selects, if it exists.
    pub active: Option<String>,
    /// Remembered in status.
    pub stable: Option<String>,
    /// The preview revision status last recorded: the clocks below belong to it.
    pub previous_preview: Option<String>,
    pub progress_started_at: Option<i64>,
    pub preview_available_at: Option<i64>,
    /// `mizzen.dev/promote` and `mizzen.dev/abort`: the revision the command is for.
    pub promote: Option<String>,
    pub abort: Option<String>,
    /// When status says the previous preview was aborted.
    pub aborted_at: Option<i64>,
    /// `mizzen.dev/retry`: a retry asked for at this time.
    pub retry_at: Option<i64>,
    pub smoke: Smoke,
    pub now: i64,
}

/// Where the rollout stands, with the reason conditions and events carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Active is the desired revision at full size.
    Healthy,
    /// A revision is being created, scaled or switched to.
    Progressing(&'static str),
    /// Waiting: for a promotion, or because `spec.paused`.
    Paused(&'static str),
    /// Aborted, or past the progress deadline.
    Degraded(&'static str),
}

/// What should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Replicas of every revision to keep (missing: scale to zero).
    pub replicas: BTreeMap<String, i32>,
    /// Scale-down deadlines of revisions kept warm.
    pub scale_down_at: BTreeMap<String, i64>,
    pub active: String,
    pub preview: String,
    pub stable: Option<String>,
    pub progress_started_at: Option<i64>,
    pub preview_available_at: Option<i64>,
    /// When the desired revision's rollout was aborted; it stays aborted while this is set.
    pub aborted_at: Option<i64>,
    pub state: State,
    /// Run again at this time even if nothing changes (a delay or deadline ends).
    pub wake_at: Option<i64>,
}

impl World<'_> {
    fn revision(&self, name: &str) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.name == name)
    }

    /// Whether `name` has at least `n` replicas asked for and available.
    fn available(&self, name: &str, n: i32) -> bool {
        self.revision(name).is_some_and(|r| r.replicas >= n && r.available >= n)
    }

    /// Commands name a revision, so one left on the object never acts on a later revision.
    fn commanded(&self, command: &Option<String>) -> bool {
        command.as_deref() == Some(self.desired.as_str())
    }
}

/// The decision.
pub fn plan(w: &World<'_>) -> Plan {
    let bg = &w.spec.strategy.blue_green;
    let full = w.spec.replicas.max(0);
    let desired = w.desired.clone();
    // The clocks in status belong to the previous preview; a new desired revision starts them afresh.
    let same_rollout = w.previous_preview.as_deref() == Some(desired.as_str());
    let (progress_started_at, preview_available_at) =
        if same_rollout { (w.progress_started_at, w.preview_available_at) } else { (None, None) };
    // An abort lasts (it is not retried on every pass) until the spec changes or a later retry is asked for.
    // (A retry dated in the future is not one yet.)
    let retry_at = w.retry_at.filter(|&r| r <= w.now);
    let aborted_at = w.aborted_at.filter(|&at| same_rollout && retry_at.is_none_or(|r| r <= at));
    let deadline = bg.progress_deadline_seconds as i64;
    let mut p = Plan {
        replicas: BTreeMap::new(),
        scale_down_at: BTreeMap::new(),
        active: desired.clone(),
        preview: desired.clone(),
        stable: w.stable.clone(),
        progress_started_at,
        preview_available_at,
        aborted_at: None,
        state: State::Healthy,
        wake_at: None,
    };

    // The first deploy goes straight to active. A missing or dangling active Service is not a first
    // deploy while a stable revision exists: traffic goes back to stable.
    let active = w.active.clone().or_else(|| w.stable.clone().filter(|s| w.revision(s).is_some()));
    let Some(active) = active else {
        p.replicas.insert(desired.clone(), full);
        if w.available(&desired, full) {
            p.stable = Some(desired);
            p.progress_started_at = None;
        } else {
            let started = *p.progress_started_at.get_or_insert(w.now);
            progressing_until(&mut p, "NewRevisionCreated", started, deadline, w.now);
        }
        return p;
    };
    let stable = w.stable.clone().unwrap_or_else(|| active.clone());
    p.stable = Some(stable.clone());

    if desired == active {
        p.active = active.clone();
        p.replicas.insert(active.clone(), full);
        p.preview_available_at = None;
        if w.available(&active, full) {
            p.stable = Some(active.clone());
            p.progress_started_at = None;
        } else {
            let started = *p.progress_started_at.get_or_insert(w.now);
            progressing_until(&mut p, "ScalingActive", started, deadline, w.now);
        }
        keep_warm(w, &mut p, &[&active]);
        return p;
    }

    // A revision other than the active one is wanted.
    p.active = active.clone();
    p.replicas.insert(active.clone(), full);

    // Abort (or an abort on deadline): traffic stays on stable, the new revision goes away.
    // Paused time does not count: while paused the clock is stopped (not recorded), and it starts again
    // from the moment the rollout is resumed.
    let started = if w.spec.paused { w.now } else { p.progress_started_at.unwrap_or(w.now) };
    let past_deadline = w.now - started > deadline;
    let abort_now =
        w.commanded(&w.abort) || (past_deadline && bg.progress_deadline_abort && !w.available(&desired, 1));
    if abort_now || aborted_at.is_some() {
        p.active = stable.clone();
        p.replicas.insert(stable.clone(), full);
        p.replicas.insert(desired.clone(), 0);
        p.state = State::Degraded("RolloutAborted");
        p.progress_started_at = None;
        p.preview_available_at = None;
        // A retry newer than the last abort that is aborted again (the command is still there) is a new abort.
        p.aborted_at = Some(aborted_at.unwrap_or(w.now));
        keep_warm(w, &mut p, &[&stable, &active]);
        return p;
    }

    // Re-applying a revision that is still warm at full size switches back at once (fast rollback).
    if w.available(&desired, full) && w.revision(&desired).is_some_and(|r| r.scale_down_at.is_some()) {
        return switch(w, p, &active, full);
    }

    let preview_size = bg.preview_replicas.map_or(full, |n| n.min(full));
    p.replicas.insert(desired.clone(), preview_size);
    p.progress_started_at = (!w.spec.paused).then_some(started);
    if !w.available(&desired, preview_size) {
        p.preview_available_at = None;
        if past_deadline {
            p.state = State::Degraded("ProgressDeadlineExceeded");
        } else {
            p.state = State::Progressing("PreviewScalingUp");
            p.wake_at = Some(started + deadline + 1);
        }
        keep_warm(w, &mut p, &[&active, &stable]);
        return p;
    }

    // The preview is fully available: first the smoke test, if any, blocks promotion until it passes.
    match w.smoke {
        Smoke::Pending => {
            p.state = State::Progressing("SmokeTestPending");
            keep_warm(w, &mut p, &[&active, &stable]);
            return p;
        }
        Smoke::Failed => {
            p.state = State::Degraded("SmokeTestFailed");
            keep_warm(w, &mut p, &[&active, &stable]);
            return p;
        }
        Smoke::Passed | Smoke::NotConfigured => {}
    }
    // Then promote when asked, or on its own after autoPromotionSeconds.
    let ready_since = *p.preview_available_at.get_or_insert(w.now);
    let auto_at = ready_since + bg.auto_promotion_seconds as i64;
    let promote = !w.spec.paused && (w.commanded(&w.promote) || (bg.auto_promotion && w.now >= auto_at));
    if !promote {
        p.state = State::Paused(if w.spec.paused { "Paused" } else { "AwaitingPromotion" });
        if bg.auto_promotion && !w.spec.paused {
            p.wake_at = Some(auto_at);
        }
        keep_warm(w, &mut p, &[&active, &stable]);
        return p;
    }
    // Promotion scales the new revision to full size first; the switch waits for that.
    p.replicas.insert(desired.clone(), full);
    if w.available(&desired, full) {
        return switch(w, p, &active, full);
    }
    p.state = State::Progressing("ScalingForPromotion");
    keep_warm(w, &mut p, &[&active, &stable]);
    p
}

/// Progressing for `reason` until the progress deadline from `started`, then Degraded with
/// `ProgressDeadlineExceeded` (there is no stable revision to abort to).
fn progressing_until(p: &mut Plan, reason: &'static str, started: i64, deadline: i64, now: i64) {
    if now - started > deadline {
        p.state = State::Degraded("ProgressDeadlineExceeded");
    } else {
        p.state = State::Progressing(reason);
        p.wake_at = Some(started + deadline + 1);
    }
}

/// Moves active to the desired revision, which is available at full size; the old active stays warm for
/// `scaleDownDelaySeconds`.
fn switch(w: &World<'_>, mut p: Plan, old: &str, full: i32) -> Plan {
    let bg = &w.spec.strategy.blue_green;
    p.active = w.desired.clone();
    p.stable = Some(w.desired.clone());
    p.replicas.insert(w.desired.clone(), full);
    p.progress_started_at = None;
    p.preview_available_at = None;
    p.state = State::Healthy;
    let deadline = w.now + bg.scale_down_delay_seconds as i64;
    if old != w.desired && bg.scale_down_delay_seconds > 0 {
        p.replicas.insert(old.to_string(), full);
        p.scale_down_at.insert(old.to_string(), deadline);
    }
    let desired = w.desired.clone();
    keep_warm(w, &mut p, &[&desired, old]);
    p
}

/// Old revisions (not in `referenced`) keep their size until their scale-down deadline, newest deadlines
/// first and at most `scaleDownRevisionLimit` of them; the rest go to zero.
fn keep_warm(w: &World<'_>, p: &mut Plan, referenced: &[&str]) {
    let limit = w.spec.strategy.blue_green.scale_down_revision_limit.max(0) as usize;
    let mut warm: Vec<&Revision> = w
        .revisions
        .iter()
        .filter(|r| !referenced.contains(&r.name.as_str()) && !p.replicas.contains_key(&r.name))
        .filter(|r| r.scale_down_at.is_some_and(|t| t > w.now) && r.replicas > 0)
        .collect();
    warm.sort_by_key(|r| std::cmp::Reverse(r.scale_down_at));
    let kept_already = p.scale_down_at.len();
    for r in warm.into_iter().take(limit.saturating_sub(kept_already)) {
        p.replicas.insert(r.name.clone(), r.replicas);
        if let Some(t) = r.scale_down_at {
            p.scale_down_at.insert(r.name.clone(), t);
            p.wake_at = Some(p.wake_at.map_or(t, |x| x.min(t)));
        }
    }
    // Deadlines already set for referenced revisions (a rollback target) are kept as observed.
    for name in referenced {
        if let Some(t) = w.revision(name).and_then(|r| r.scale_down_at).filter(|&t| t > w.now)
            && *name != p.active
            && Some(*name) != p.stable.as_deref()
            && *name != p.preview
        {
            p.scale_down_at.entry(name.to_string()).or_insert(t);
        }
    }
}

#[cfg(test)]
mod tests;

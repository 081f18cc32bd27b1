//! Argo-style scenarios (each seeds a world and checks the exact plan) and property tests of the
//! blue-green invariants over random event sequences.

use super::*;
use crate::api::v1alpha1::model_deployment::ModelDeploymentSpec;
use proptest::prelude::*;

fn spec(yaml: &str) -> ModelDeploymentSpec {
    let base = "model: {uri: \"s3://m/a.onnx\"}\nreplicas: 3\n";
    serde_saphyr::from_str(&format!("{base}{yaml}")).unwrap()
}

fn rev(name: &str, replicas: i32, available: i32) -> Revision {
    Revision { name: name.into(), replicas, available, scale_down_at: None }
}

/// A scenario's world, built the way the scenario reads: `given(&spec).serving("a").with(revisions)
/// .rolling_out("b")`; the active revision is also the stable one, and the clock reads 1000.
struct Given<'a> {
    spec: &'a ModelDeploymentSpec,
    active: Option<String>,
    revisions: Vec<Revision>,
}

fn given(spec: &ModelDeploymentSpec) -> Given<'_> {
    Given { spec, active: None, revisions: Vec::new() }
}

impl<'a> Given<'a> {
    /// The active (and stable) revision.
    fn serving(mut self, revision: &str) -> Self {
        self.active = Some(revision.into());
        self
    }

    /// The revisions that exist, with their replicas and available pods.
    fn with(mut self, revisions: Vec<Revision>) -> Self {
        self.revisions = revisions;
        self
    }

    /// The revision the spec asks for now.
    fn rolling_out(self, desired: &str) -> World<'a> {
        World {
            spec: self.spec,
            desired: desired.into(),
            revisions: self.revisions,
            stable: self.active.clone(),
            active: self.active,
            previous_preview: Some(desired.into()),
            progress_started_at: None,
            preview_available_at: None,
            promote: None,
            abort: None,
            aborted_at: None,
            retry_at: None,
            smoke: Smoke::NotConfigured,
            now: 1000,
        }
    }
}

#[test]
fn a_smoke_test_gates_promotion() {
    let s = spec("");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b");
    w.smoke = Smoke::Pending;
    assert_eq!(plan(&w).state, State::Progressing("SmokeTestPending"));
    assert_eq!(plan(&w).active, "a");
    w.smoke = Smoke::Failed;
    let p = plan(&w);
    assert_eq!((p.state, p.active.as_str()), (State::Degraded("SmokeTestFailed"), "a"));
    w.smoke = Smoke::Passed;
    assert_eq!(plan(&w).active, "b");
    // Not run before the preview is available.
    w.smoke = Smoke::Pending;
    w.revisions[1].available = 1;
    assert_eq!(plan(&w).state, State::Progressing("PreviewScalingUp"));
}

#[test]
fn first_deploy_goes_straight_to_active() {
    let s = spec("");
    let p = plan(&given(&s).with(vec![]).rolling_out("a"));
    assert_eq!((p.active.as_str(), p.preview.as_str()), ("a", "a"));
    assert_eq!(p.replicas["a"], 3);
    assert_eq!(p.state, State::Progressing("NewRevisionCreated"));
    let p = plan(&given(&s).with(vec![rev("a", 3, 3)]).rolling_out("a"));
    assert_eq!(p.state, State::Healthy);
    assert_eq!(p.stable.as_deref(), Some("a"));
}

#[test]
fn no_promotion_while_the_new_revision_is_unhealthy() {
    let s = spec("");
    let p = plan(&given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 2)]).rolling_out("b"));
    assert_eq!(p.active, "a");
    assert_eq!(p.preview, "b");
    assert_eq!((p.replicas["a"], p.replicas["b"]), (3, 3));
    assert_eq!(p.state, State::Progressing("PreviewScalingUp"));
}

#[test]
fn auto_promotion_switches_once_fully_available_and_keeps_the_old_revision_warm() {
    let s = spec("strategy: {blueGreen: {scaleDownDelaySeconds: 30}}");
    let p = plan(&given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b"));
    assert_eq!(p.active, "b");
    assert_eq!(p.stable.as_deref(), Some("b"));
    assert_eq!(p.state, State::Healthy);
    assert_eq!(p.replicas["a"], 3, "the old revision stays at full size");
    assert_eq!(p.scale_down_at["a"], 1030);
}

#[test]
fn auto_promotion_seconds_wait_then_promote() {
    let s = spec("strategy: {blueGreen: {autoPromotionSeconds: 60}}");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b");
    let p = plan(&w);
    assert_eq!(p.state, State::Paused("AwaitingPromotion"));
    assert_eq!(p.preview_available_at, Some(1000));
    assert_eq!(p.wake_at, Some(1060));
    w.preview_available_at = p.preview_available_at;
    w.now = 1061;
    assert_eq!(plan(&w).active, "b");
}

#[test]
fn manual_promotion_waits_for_the_annotation_naming_the_revision() {
    let s = spec("strategy: {blueGreen: {autoPromotion: false}}");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b");
    assert_eq!(plan(&w).state, State::Paused("AwaitingPromotion"));
    w.promote = Some("a-stale-revision".into());
    assert_eq!(plan(&w).active, "a", "a stale promote never acts on a later revision");
    w.promote = Some("b".into());
    assert_eq!(plan(&w).active, "b");
}

#[test]
fn preview_replicas_scale_to_full_before_the_switch() {
    let s = spec("strategy: {blueGreen: {previewReplicas: 1}}");
    let w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 1, 1)]).rolling_out("b");
    let p = plan(&w);
    assert_eq!(p.active, "a");
    assert_eq!(p.replicas["b"], 3, "promotion scales the preview to full first");
    assert_eq!(p.state, State::Progressing("ScalingForPromotion"));
    let w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b");
    assert_eq!(plan(&w).active, "b");
}

#[test]
fn pause_holds_and_does_not_count_toward_the_deadline() {
    let s = spec("paused: true\nstrategy: {blueGreen: {progressDeadlineSeconds: 10}}");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b");
    assert_eq!(plan(&w).state, State::Paused("Paused"));
    w.revisions[1].available = 0;
    w.progress_started_at = Some(0);
    let p = plan(&w);
    assert_eq!(p.state, State::Progressing("PreviewScalingUp"), "paused time is not progress time");
    assert_eq!(p.progress_started_at, None, "the clock is stopped while paused");
    // Resumed much later: the clock starts again at the resume.
    let mut resumed = s.clone();
    resumed.paused = false;
    let mut w2 = w.clone();
    w2.spec = &resumed;
    w2.progress_started_at = p.progress_started_at;
    w2.now = 5000;
    let p = plan(&w2);
    assert_eq!(p.state, State::Progressing("PreviewScalingUp"));
    assert_eq!(p.progress_started_at, Some(5000));
}

#[test]
fn progress_deadline_degrades_and_optionally_aborts() {
    let s = spec("strategy: {blueGreen: {progressDeadlineSeconds: 60}}");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 0)]).rolling_out("b");
    w.progress_started_at = Some(900);
    let p = plan(&w);
    assert_eq!(p.state, State::Degraded("ProgressDeadlineExceeded"));
    assert_eq!(p.active, "a");
    let s = spec("strategy: {blueGreen: {progressDeadlineSeconds: 60, progressDeadlineAbort: true}}");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 0)]).rolling_out("b");
    w.progress_started_at = Some(900);
    let p = plan(&w);
    assert_eq!(p.state, State::Degraded("RolloutAborted"));
    assert_eq!(p.replicas["b"], 0);
}

#[test]
fn abort_sends_traffic_back_to_stable() {
    let s = spec("strategy: {blueGreen: {autoPromotion: false}}");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b");
    w.abort = Some("b".into());
    let p = plan(&w);
    assert_eq!((p.active.as_str(), p.replicas["a"], p.replicas["b"]), ("a", 3, 0));
    assert_eq!(p.state, State::Degraded("RolloutAborted"));
}

#[test]
fn reapplying_a_warm_revision_switches_back_at_once() {
    let s = spec("strategy: {blueGreen: {autoPromotion: false}}");
    let mut old = rev("a", 3, 3);
    old.scale_down_at = Some(1020);
    let w = given(&s).serving("b").with(vec![old, rev("b", 3, 3)]).rolling_out("a");
    let p = plan(&w);
    assert_eq!(p.active, "a", "fast rollback needs no promotion");
    assert_eq!(p.scale_down_at["b"], 1030);
}

#[test]
fn old_revisions_go_after_their_delay_and_beyond_the_limit() {
    let s = spec("strategy: {blueGreen: {scaleDownRevisionLimit: 1}}");
    let mut x = rev("x", 3, 3);
    x.scale_down_at = Some(1500);
    let mut y = rev("y", 3, 3);
    y.scale_down_at = Some(1400);
    let mut z = rev("z", 3, 3);
    z.scale_down_at = Some(900);
    let p = plan(&given(&s).serving("a").with(vec![rev("a", 3, 3), x, y, z]).rolling_out("a"));
    assert_eq!(p.replicas.get("x"), Some(&3), "the newest warm revision stays");
    assert_eq!(p.replicas.get("y"), None, "past the revision limit");
    assert_eq!(p.replicas.get("z"), None, "past its deadline");
    assert_eq!(p.wake_at, Some(1500));
}

#[test]
fn a_replicas_change_mid_rollout_resizes_both_stacks() {
    let mut s = spec("strategy: {blueGreen: {autoPromotion: false}}");
    s.replicas = 5;
    let p = plan(&given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b"));
    assert_eq!((p.replicas["a"], p.replicas["b"]), (5, 5));
    assert_eq!(p.active, "a");
    assert_eq!(p.state, State::Progressing("PreviewScalingUp"));
}

// ---- properties over random event sequences ---------------------------------------------------------

#[derive(Clone, Debug)]
enum Event {
    /// The spec asks for revision `0..3`.
    Spec(u8),
    /// Pods of a revision become available or unavailable.
    Pods {
        revision: u8,
        available: i32,
    },
    Promote,
    Abort,
    Retry,
    Scale(i32),
    Pause(bool),
    Time(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u8..3).prop_map(Event::Spec),
        (0u8..3, 0i32..6).prop_map(|(revision, available)| Event::Pods { revision, available }),
        Just(Event::Promote),
        Just(Event::Abort),
        Just(Event::Retry),
        (0i32..5).prop_map(Event::Scale),
        any::<bool>().prop_map(Event::Pause),
        (1i64..120).prop_map(Event::Time),
    ]
}

/// A small simulated cluster: Deployments follow the plan's replicas, pods become available only through
/// events (never beyond the replicas asked for), Services follow the plan.
struct Sim {
    revisions: BTreeMap<String, Revision>,
    active: Option<String>,
    stable: Option<String>,
    previous_preview: Option<String>,
    progress_started_at: Option<i64>,
    preview_available_at: Option<i64>,
    aborted_at: Option<i64>,
    now: i64,
}

fn name(i: u8) -> String {
    format!("r{i}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn blue_green_invariants_hold(
        events in proptest::collection::vec(event(), 1..40),
        auto in any::<bool>(),
        delay in 0i32..60,
        preview in proptest::option::of(1i32..4),
    ) {
        let mut spec = spec(&format!("strategy: {{blueGreen: {{autoPromotion: {auto}, scaleDownDelaySeconds: {delay}, progressDeadlineSeconds: 300}}}}"));
        spec.strategy.blue_green.preview_replicas = preview;
        let mut desired = name(0);
        let mut promote = None;
        let mut abort = None;
        let mut retry = None;
        let mut sim = Sim { revisions: BTreeMap::new(), active: None, stable: None, previous_preview: None, progress_started_at: None, preview_available_at: None, aborted_at: None, now: 0 };
        for e in events {
            match e {
                Event::Spec(i) => { desired = name(i); promote = None; abort = None; }
                Event::Pods { revision, available } => {
                    if let Some(r) = sim.revisions.get_mut(&name(revision)) { r.available = available.min(r.replicas); }
                }
                Event::Promote => promote = Some(desired.clone()),
                Event::Abort => abort = Some(desired.clone()),
                Event::Retry => { abort = None; retry = Some(sim.now); }
                Event::Scale(n) => spec.replicas = n,
                Event::Pause(b) => spec.paused = b,
                Event::Time(s) => sim.now += s,
            }
            let w = World {
                spec: &spec,
                desired: desired.clone(),
                revisions: sim.revisions.values().cloned().collect(),
                active: sim.active.clone(),
                stable: sim.stable.clone(),
                previous_preview: sim.previous_preview.clone(),
                progress_started_at: sim.progress_started_at,
                preview_available_at: sim.preview_available_at,
                promote: promote.clone(),
                abort: abort.clone(),
                aborted_at: sim.aborted_at,
                retry_at: retry,
                smoke: Smoke::NotConfigured,
                now: sim.now,
            };
            let p = plan(&w);
            let full = spec.replicas.max(0);

            // 1. Active is the old active/stable, or a revision fully available at full size (first deploy aside).
            if let Some(old) = &sim.active {
                let ok = &p.active == old
                    || Some(&p.active) == sim.stable.as_ref()
                    || sim.revisions.get(&p.active).is_some_and(|r| r.replicas >= full && r.available >= full);
                prop_assert!(ok, "active moved to {} which is not available at {full}: {:?}", p.active, sim.revisions);
            }
            // 2. Preview is always the newest revision.
            prop_assert_eq!(&p.preview, &desired);
            // 3. Revisions referenced by active and stable are never scaled down; nor is preview unless aborted.
            for referenced in [Some(&p.active), p.stable.as_ref()].into_iter().flatten() {
                prop_assert_eq!(p.replicas.get(referenced).copied(), Some(full), "{} not at full size", referenced);
            }
            if p.state != State::Degraded("RolloutAborted") {
                prop_assert!(p.replicas.contains_key(&p.preview));
            }
            // 4. The previous active stays at full size until its scale-down deadline when it is switched away.
            if let Some(old) = &sim.active && old != &p.active && delay > 0 {
                prop_assert_eq!(p.replicas.get(old).copied(), Some(full));
                prop_assert_eq!(p.scale_down_at.get(old).copied(), Some(sim.now + delay as i64));
            }
            // 5. Abort sends active back to stable.
            if p.state == State::Degraded("RolloutAborted") {
                prop_assert_eq!(Some(&p.active), sim.stable.as_ref().or(sim.active.as_ref()));
            }
            // 6. An abort lasts until the spec changes or a later retry: never aborted, restarted, aborted again.
            let retried = retry.is_some_and(|r| sim.aborted_at.is_some_and(|a| r > a));
            if sim.aborted_at.is_some() && sim.previous_preview.as_ref() == Some(&desired) && !retried {
                prop_assert_eq!(&p.state, &State::Degraded("RolloutAborted"));
                prop_assert_eq!(p.aborted_at, sim.aborted_at, "the abort keeps its time");
            }

            // Apply the plan to the simulated cluster.
            for (r, n) in &p.replicas {
                let entry = sim.revisions.entry(r.clone()).or_insert_with(|| Revision { name: r.clone(), replicas: 0, available: 0, scale_down_at: None });
                entry.replicas = *n;
                entry.available = entry.available.min(*n);
                entry.scale_down_at = p.scale_down_at.get(r).copied();
            }
            for r in sim.revisions.values_mut() {
                if !p.replicas.contains_key(&r.name) {
                    r.replicas = 0;
                    r.available = 0;
                    r.scale_down_at = None;
                }
            }
            sim.active = Some(p.active.clone());
            sim.stable = p.stable.clone();
            sim.previous_preview = Some(p.preview.clone());
            sim.progress_started_at = p.progress_started_at;
            sim.preview_available_at = p.preview_available_at;
            sim.aborted_at = p.aborted_at;
        }
    }

    /// A settled world is a fixed point: apply a plan, let every pod become available, and planning again
    /// (twice) asks for nothing new, so an idle ModelDeployment causes no writes.
    #[test]
    fn a_settled_world_is_a_fixed_point(available in 0i32..4, auto in any::<bool>()) {
        let s = spec(&format!("strategy: {{blueGreen: {{autoPromotion: {auto}, scaleDownDelaySeconds: 0}}}}"));
        let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, available)]).rolling_out("b");
        let mut plans = Vec::new();
        for _ in 0..4 {
            let p = plan(&w);
            w.revisions = p.replicas.iter().map(|(n, &r)| Revision { name: n.clone(), replicas: r, available: r, scale_down_at: p.scale_down_at.get(n).copied() }).collect();
            w.active = Some(p.active.clone());
            w.stable = p.stable.clone();
            w.previous_preview = Some(p.preview.clone());
            w.progress_started_at = p.progress_started_at;
            w.preview_available_at = p.preview_available_at;
            // Time passes: a clock restarted on every pass would show up as a changing plan.
            w.now += 1;
            plans.push(p);
        }
        prop_assert_eq!(&plans[2], &plans[3]);
        let settled = &plans[3];
        prop_assert!(matches!(settled.state, State::Healthy | State::Paused("AwaitingPromotion")), "{:?}", settled.state);
    }
}

#[test]
fn a_new_revision_gets_its_own_deadline() {
    let s = spec("strategy: {blueGreen: {progressDeadlineSeconds: 60}}");
    // The clock in status belongs to the previous preview (b); c has just been asked for.
    let mut w =
        given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 0), rev("c", 3, 0)]).rolling_out("c");
    w.previous_preview = Some("b".into());
    w.progress_started_at = Some(900);
    let p = plan(&w);
    assert_eq!(p.state, State::Progressing("PreviewScalingUp"));
    assert_eq!(p.progress_started_at, Some(1000));
}

#[test]
fn a_missing_active_service_sends_traffic_back_to_stable() {
    let s = spec("");
    let mut w = given(&s).with(vec![rev("a", 3, 3), rev("b", 3, 1)]).rolling_out("b");
    w.stable = Some("a".into());
    let p = plan(&w);
    assert_eq!(p.active, "a");
    assert_eq!(p.replicas["a"], 3, "stable is not scaled down");
}

#[test]
fn zero_replicas_still_roll_out() {
    let mut s = spec("");
    s.replicas = 0;
    let p = plan(&given(&s).serving("a").with(vec![rev("a", 0, 0), rev("b", 0, 0)]).rolling_out("b"));
    assert_eq!(p.active, "b");
}

#[test]
fn a_promote_command_names_its_revision() {
    let s = spec("strategy: {blueGreen: {autoPromotion: false}}");
    let mut w = given(&s).serving("a").with(vec![rev("a", 3, 3), rev("b", 3, 3)]).rolling_out("b");
    w.promote = Some("true".into());
    assert_eq!(plan(&w).active, "a", "only a revision name promotes");
}

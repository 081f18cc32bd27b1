//! The controllers: one kube-runtime Controller per kind, sharing one [`Context`].
//!
//! Each kind plugs into the same driver through [`Kind`]: the children it owns, and its reconcile.
//!
//! Every reconcile has the same shape, four calls:
//! - `observe` reads the world once (concurrently where it can) into a plain struct;
//! - `decide` is a pure function of the object, what was observed and the clock, returning a [`Decision`]:
//!   the status to hold, the typed actions to take, and when to look again. Every rule lives here and is
//!   tested as a scenario (seed a world, assert the exact actions and status);
//! - `apply` takes the actions in order, one small function per kind of action: the only code that writes;
//! - [`update_status`] stores the status, only when it changed (shared by every kind).
//!
//! Each kind has its own (`model_deployment`, `training_job`, `feature_set`).

pub mod feature_set;
pub mod model_deployment;
pub mod pods;
pub mod registry;
pub mod training_job;

use crate::api::v1alpha1::common::Condition;
use crate::api::v1alpha1::{FeatureSet, ModelDeployment, TrainingJob};
use crate::conditions::{self, Desired};
use crate::metrics::Metrics;
use crate::server::State;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, reflector as reflect, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use mizzen_common::registry::Client as RegistryClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "mizzen-operator";

/// Parameters for the operator's merge patches: its writes are attributed to [`FIELD_MANAGER`] in
/// `managedFields`, like its server-side applies, so they can be told from other controllers' writes.
pub fn merge_params() -> kube::api::PatchParams {
    kube::api::PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }
}
/// The label every child carries, which also scopes the operator's child watches.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "mizzen-operator");

/// Settings of the operator that shape children: the images when an object names none.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// mizzen-serve, for ModelDeployments without `spec.server.image`.
    pub serve_image: String,
    /// mizzen-train, for TrainingJobs without `spec.trainer.image`.
    pub train_image: String,
    /// mizzen-features, for FeatureSets without `spec.online.image`.
    pub features_image: String,
    /// The model registry's URL as pods reach it (`MIZZEN_REGISTRY_URL` of servers and trainers).
    pub registry_url: Option<String>,
    /// The Secret (name, key), looked up in each trainer pod's own namespace, whose value trainer pods
    /// writing to the registry send as their bearer token (`MIZZEN_REGISTRY_TOKEN`).
    pub registry_token_secret: Option<(String, String)>,
}

/// What every reconcile gets: the client, one shared event recorder and the metrics.
pub struct Context {
    pub client: Client,
    /// The operator's Services' EndpointSlices, kept by a watch (read from here, not listed per reconcile).
    pub endpoint_slices: Store<EndpointSlice>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub defaults: Defaults,
    /// For smoke tests against preview Services.
    pub http: reqwest::Client,
    /// The statuses this operator wrote last, so a reconcile never decides from an older one.
    pub written: Written,
    /// Registry URIs resolved, and the registry client.
    pub registry: registry::Resolver,
}

/// The status each object got from this operator's last write, with the resourceVersion the write
/// returned. A reconcile can start from a cached object older than that write (a child's watch event can
/// arrive before the object's own), and deciding from the status before it would repeat what was just
/// decided: a second abort, a second event, a Service "corrected" back. [`Written::fresh`] gives such an
/// object the status it has by now.
///
/// An entry goes once a reconcile sees the cache hold the write; one whose object was deleted before that
/// goes after [`Written::KEEP`], so creating and deleting objects does not grow the map.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, (u64, serde_json::Value, std::time::Instant)>>);

impl Written {
    /// Far longer than a watch event takes to arrive.
    const KEEP: Duration = Duration::from_secs(600);

    fn version(meta: &kube::api::ObjectMeta) -> Option<(String, u64)> {
        Some((meta.uid.clone()?, meta.resource_version.as_deref()?.parse().ok()?))
    }

    /// Remembers the status of an object as a status write returned it.
    fn record<K: Resource + Serialize>(&self, written: &K) {
        let (Some((uid, version)), Ok(mut value)) =
            (Self::version(written.meta()), serde_json::to_value(written))
        else {
            return;
        };
        let status = value.get_mut("status").map(serde_json::Value::take).unwrap_or_default();
        let mut written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        written.retain(|_, (_, _, at)| at.elapsed() < Self::KEEP);
        written.insert(uid, (version, status, std::time::Instant::now()));
    }

    /// `obj`, with the status this operator last wrote if the cached object is older than that write.
    pub fn fresh<K: Resource + Serialize + DeserializeOwned>(&self, obj: Arc<K>) -> Arc<K> {
        let Some((uid, version)) = Self::version(obj.meta()) else { return obj };
        let mut written = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some((wrote, status, _)) = written.get(&uid) else { return obj };
        if version >= *wrote {
            // The cache has caught up: it holds the write or something newer.
            written.remove(&uid);
            return obj;
        }
        let Ok(mut value) = serde_json::to_value(&*obj) else { return obj };
        value["status"] = status.clone();
        serde_json::from_value(value).map(Arc::new).unwrap_or(obj)
    }
}

#[cfg(test)]
impl Defaults {
    /// Images named like their component, no registry.
    pub fn for_tests() -> Self {
        Self {
            serve_image: "serve".into(),
            train_image: "train".into(),
            features_image: "features".into(),
            registry_url: None,
            registry_token_secret: None,
        }
    }
}

impl Context {
    /// Publishes an event about `obj`; a failure is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, notice: &Notice) {
        self.publish_to(&obj.object_ref(&()), notice).await;
    }

    /// Publishes an event about the object `reference` names; a failure is logged, never fatal.
    pub async fn publish_to(&self, reference: &k8s_openapi::api::core::v1::ObjectReference, notice: &Notice) {
        let event = Event {
            type_: notice.type_,
            reason: notice.reason.clone(),
            note: Some(notice.note.clone()),
            action: notice.reason.clone(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%e, "cannot publish an event");
        }
    }
}

/// An event a controller decides to publish about its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

impl Notice {
    pub fn normal(reason: impl Into<String>, note: impl Into<String>) -> Self {
        Notice { type_: EventType::Normal, reason: reason.into(), note: note.into() }
    }

    pub fn warning(reason: impl Into<String>, note: impl Into<String>) -> Self {
        Notice { type_: EventType::Warning, reason: reason.into(), note: note.into() }
    }
}

/// What a controller's pure `decide` returns: the status to hold, the writes that get the world there (in
/// order), and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<S, A> {
    /// The status to store; its conditions are merged from `conditions` by [`update_status`].
    pub status: S,
    pub conditions: Vec<Desired>,
    pub actions: Vec<A>,
    /// Look again after this long even if nothing changes; `None` waits for a change of the object or a
    /// child.
    pub requeue: Option<Duration>,
}

impl<S, A> Decision<S, A> {
    /// Asks to look again within `after` (the earlier of this and any wake already asked for).
    pub fn wake_within(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    /// The controller's next step once applied.
    pub fn next(&self) -> Action {
        match self.requeue {
            Some(after) => Action::requeue(after.max(Duration::from_secs(1))),
            None => Action::await_change(),
        }
    }
}

/// Errors of a reconcile. Each has a static label for the failure metric: the API call that failed
/// (`apply_service`, `read_pods`, ...) or `invalid_object`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error ({call}): {source}")]
    Kube {
        call: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("invalid object: {0}")]
    InvalidObject(&'static str),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { call, .. } => call,
            Error::InvalidObject(_) => "invalid_object",
        }
    }
}

/// The namespace of a namespaced object (the API server always sets one).
pub fn namespace<K: ResourceExt>(obj: &K) -> Result<String, Error> {
    obj.namespace().ok_or(Error::InvalidObject("a namespaced object without a namespace"))
}

/// A short, stable digest of `value`: nine base-36 digits of its canonical JSON's FNV-1a hash (64 bits),
/// for names and change detection. Stable across Rust releases, unlike std's hasher; serde_json writes object
/// keys in sorted order (no `preserve_order`), so the text is canonical.
pub fn digest(value: &serde_json::Value) -> String {
    let hash = value
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    let mut digits = String::new();
    let mut n = hash;
    for _ in 0..9 {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
    }
    digits
}

/// Names a failed API call for the error and its metric: `.map_err(call("apply_service"))`.
pub fn call(call: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { call, source }
}

/// Writes `status` with the conditions merged from `desired`, unless the stored status (`stored`, of the
/// same type, compared without conditions) and conditions already say the same: an idle object causes no
/// writes. The one status writer of every kind.
pub async fn update_status<K: Kind, S: Serialize>(
    ctx: &Context,
    obj: &K,
    stored: &S,
    status: &S,
    desired: &[Desired],
) -> Result<(), Error> {
    let generation = obj.meta().generation;
    let without_conditions = |s: &S| {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("conditions");
        }
        v
    };
    let unchanged = without_conditions(stored) == without_conditions(status);
    if unchanged && conditions::up_to_date(obj.conditions(), desired, generation) {
        return Ok(());
    }
    let namespace = namespace(obj)?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut status = serde_json::to_value(status).unwrap_or_default();
    status["conditions"] =
        serde_json::to_value(conditions::merge(obj.conditions(), desired, generation, now))
            .unwrap_or_default();
    let patch =
        serde_json::json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = api
        .patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(call("write_status"))?;
    ctx.written.record(&written);
    tracing::info!(kind = kind_name::<K>(), namespace, name = %obj.name_any(), "status written");
    Ok(())
}

/// A Mizzen kind, as the shared driver sees it.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The conditions in the object's status.
    fn conditions(&self) -> &[Condition];
    /// The conditions the default, status-only reconcile records (kinds without a reconciler yet).
    fn desired_conditions(&self) -> Vec<Desired> {
        Vec::new()
    }
    /// The status the default reconcile applies (its conditions are added to it).
    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "observedGeneration": self.meta().generation })
    }
    /// Adds watches on the children this kind owns.
    fn owns(controller: Controller<Self>, children: &Children) -> Controller<Self>;
    /// One reconcile. By default: record the desired conditions (kinds without a reconciler yet).
    fn reconcile(obj: Arc<Self>, ctx: Arc<Context>) -> impl Future<Output = Result<Action, Error>> + Send {
        write_conditions(obj, ctx)
    }
}

async fn reconcile<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(kind_name::<K>());
    let obj = ctx.written.fresh(obj);
    K::reconcile(obj, ctx).await
}

/// Writes the desired conditions if the object does not already carry them for its generation.
async fn write_conditions<K: Kind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Only the conditions decide: the rest of this status is the generation, which they carry too.
    let status = obj.status();
    update_status(&ctx, &*obj, &status, &status, &obj.desired_conditions()).await?;
    Ok(Action::await_change())
}

fn error_policy<K: Kind>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let kind = kind_name::<K>();
    tracing::warn!(kind, name = %obj.name_any(), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(kind, error.metric_label());
    match error {
        // A bad object waits for a change; anything else is retried.
        Error::InvalidObject(_) => Action::await_change(),
        Error::Kube { .. } => Action::requeue(Duration::from_secs(5)),
    }
}

fn kind_name<K: Kind>() -> &'static str {
    // `Resource::kind` borrows from a static for derived kinds; match keeps the metric label static.
    match K::kind(&()).as_ref() {
        "ModelDeployment" => "ModelDeployment",
        "TrainingJob" => "TrainingJob",
        "FeatureSet" => "FeatureSet",
        _ => "Unknown",
    }
}

/// Where the controllers look: every namespace, or one.
#[derive(Clone, Debug)]
pub struct Scope {
    pub namespace: Option<String>,
}

impl Scope {
    fn api<K: Resource<DynamicType = (), Scope = NamespaceResourceScope>>(&self, client: &Client) -> Api<K> {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// Polls until all three kinds are served. `/ready` stays 503 meanwhile, so a missing CRD is visible in
/// the pod's readiness instead of a crash loop.
pub async fn wait_for_crds(
    client: &Client,
    scope: &Scope,
    poll: Duration,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        let missing = missing_kinds(client, scope).await;
        if missing.is_empty() {
            return true;
        }
        tracing::warn!(?missing, "waiting for CRDs; install them with `kubectl apply -f crds/`");
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

async fn missing_kinds(client: &Client, scope: &Scope) -> Vec<String> {
    let lp = ListParams::default().limit(1);
    let why = |kind: &str, e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 404 => format!("{kind} (CRD not installed)"),
        other => format!("{kind} ({other})"),
    };
    let mut missing = Vec::new();
    if let Err(e) = scope.api::<ModelDeployment>(client).list_metadata(&lp).await {
        missing.push(why("ModelDeployment", e));
    }
    if let Err(e) = scope.api::<TrainingJob>(client).list_metadata(&lp).await {
        missing.push(why("TrainingJob", e));
    }
    if let Err(e) = scope.api::<FeatureSet>(client).list_metadata(&lp).await {
        missing.push(why("FeatureSet", e));
    }
    missing
}

/// Settings of [`run`].
#[derive(Clone, Debug)]
pub struct Settings {
    pub scope: Scope,
    pub defaults: Defaults,
    /// Reconciles running at once per kind (0: unbounded).
    pub concurrency: u16,
    pub crd_poll_interval: Duration,
    /// The bearer token for the operator's own registry writes (registering a search's best trial).
    pub registry_token: Option<String>,
    /// How often registry aliases are looked up again.
    pub registry_poll: Duration,
}

/// Waits for the CRDs, starts the three controllers, marks the operator ready once their caches have
/// synced, and returns when `shutdown` fires and in-flight reconciles have finished.
pub async fn run(
    client: Client,
    state: State,
    metrics: Metrics,
    settings: Settings,
    shutdown: CancellationToken,
) {
    if !wait_for_crds(&client, &settings.scope, settings.crd_poll_interval, &shutdown).await {
        return;
    }
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
    // One watch of the EndpointSlices of the operator's active Services (they copy its labels): it fills the cache
    // reconciles read, and its events wake the ModelDeployment they belong to.
    let (slices, writer) = reflector::store::<EndpointSlice>();
    // Only what readiness needs is kept: managedFields and annotations go before the cache.
    let active_only = children_config().labels(&format!(
        "{}={},{}=active",
        MANAGED_BY.0,
        MANAGED_BY.1,
        model_deployment::build::SERVICE_LABEL
    ));
    let slices_watch =
        watcher::watcher(settings.scope.api(&client), active_only).modify(|slice: &mut EndpointSlice| {
            slice.metadata.managed_fields = None;
            slice.metadata.annotations = None;
        });
    let slice_events = resilient(reflect(writer, slices_watch).touched_objects()).boxed();
    let slices_synced = {
        let slices = slices.clone();
        async move { slices.wait_until_ready().await }
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        endpoint_slices: slices,
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        defaults: settings.defaults.clone(),
        http: reqwest::Client::new(),
        written: Written::default(),
        registry: registry::Resolver::new(
            settings
                .defaults
                .registry_url
                .as_deref()
                .map(|url| RegistryClient::new(url, settings.registry_token.clone())),
            settings.registry_poll,
        ),
    });
    let slice_events = Arc::new(Mutex::new(Some(slice_events)));
    let (md, md_store) =
        controller::<ModelDeployment>(&client, &settings, &ctx, &state, &slice_events, &shutdown);
    let (tj, tj_store) =
        controller::<TrainingJob>(&client, &settings, &ctx, &state, &slice_events, &shutdown);
    let (fs, fs_store) = controller::<FeatureSet>(&client, &settings, &ctx, &state, &slice_events, &shutdown);
    let ready = async {
        let synced = tokio::try_join!(md_store, tj_store, fs_store, slices_synced);
        if synced.is_ok() {
            tracing::info!("caches synced; ready");
            state.set_ready(true);
        }
    };
    let recovery = watch_recovery(&client, &settings.scope, &state, &shutdown);
    tokio::join!(md, tj, fs, ready, recovery);
    state.set_ready(false);
}

/// While the watches fail, asks the API server every two seconds whether it answers again: once it does
/// the watches (which retry on their own, with backoff) are taken as healthy and `/ready` recovers, also
/// when no object changes to show it.
async fn watch_recovery(client: &Client, scope: &Scope, state: &State, shutdown: &CancellationToken) {
    let lp = ListParams::default().limit(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if state.watch_error().is_some()
            && scope.api::<ModelDeployment>(client).list_metadata(&lp).await.is_ok()
        {
            tracing::info!("the API server answers again");
            state.watches_ok();
        }
    }
}

type Synced = std::pin::Pin<
    Box<dyn Future<Output = Result<(), kube::runtime::reflector::store::WriterDropped>> + Send>,
>;

/// The watch configuration of children: only objects with the operator's label.
fn children_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)).any_semantic()
}

fn controller<K: Kind>(
    client: &Client,
    settings: &Settings,
    ctx: &Arc<Context>,
    state: &State,
    slice_events: &SliceEvents,
    shutdown: &CancellationToken,
) -> (impl Future<Output = ()> + use<K>, Synced) {
    let children = Children {
        client: client.clone(),
        scope: settings.scope.clone(),
        config: children_config(),
        slice_events: slice_events.clone(),
    };
    // The object's own watch, with its own backoff like every watch (see `resilient`).
    let (reader, writer) = reflector::store::<K>();
    let objects = decoded::<K>(client, &settings.scope, ctx.clone());
    let controller = Controller::for_stream(resilient(reflect(writer, objects).applied_objects()), reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .trigger_backoff(NoBackoff);
    let controller = K::owns(controller, &children).graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let store = controller.store();
    let synced: Synced = Box::pin(async move { store.wait_until_ready().await });
    let ctx = ctx.clone();
    let metrics = ctx.metrics.clone();
    let state = state.clone();
    let run = controller.run(reconcile::<K>, error_policy::<K>, ctx).for_each(move |result| {
        match result {
            // A watch failed: not ready until the API server answers again.
            Err(kube::runtime::controller::Error::QueueError(error)) => {
                tracing::warn!(kind = kind_name::<K>(), %error, "watch failed");
                metrics.watch_failed(kind_name::<K>());
                state.watch_failed(error.to_string());
            }
            Err(error) => tracing::debug!(%error, "controller event"),
            Ok(_) => {}
        }
        async {}
    });
    (run, synced)
}

/// The objects of kind `K`, watched untyped and decoded one at a time. An object the types cannot read
/// (stored under an older, looser schema, say: the API server keeps what it once accepted) is reported on
/// itself, once per generation (a Warning event `InvalidObject` naming what is wrong, the
/// `invalid_object` failure metric), and left out. A typed watch would fail on the whole list
/// instead, and no object of the kind would be reconciled until someone found and fixed that one.
fn decoded<K: Kind>(
    client: &Client,
    scope: &Scope,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K> {
    let resource = kube::api::ApiResource::erase::<K>(&());
    let api: Api<kube::api::DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    // Reported once per object and generation (a relist or a label change says nothing new).
    let reported = Mutex::new(std::collections::HashSet::<(String, i64)>::new());
    let decode = move |obj: kube::api::DynamicObject, deleted: bool| -> Option<K> {
        let key = (obj.uid().unwrap_or_default(), obj.metadata.generation.unwrap_or_default());
        let mut value = serde_json::to_value(&obj).ok()?;
        value["apiVersion"] = K::api_version(&()).into();
        value["kind"] = K::kind(&()).into();
        let mut reported = reported.lock().unwrap_or_else(|e| e.into_inner());
        if deleted {
            reported.retain(|(uid, _)| *uid != key.0);
        }
        // serde_path_to_error names where it failed (`spec.strategy.blueGreen: invalid type: ...`).
        match serde_path_to_error::deserialize::<_, K>(value) {
            Ok(k) => Some(k),
            // A deleted object that could not be read was never in the store: nothing to say.
            Err(_) if deleted => None,
            Err(error) => {
                if reported.insert(key) {
                    tokio::spawn(report_invalid::<K>(obj, error.to_string(), ctx.clone()));
                }
                None
            }
        }
    };
    watcher::watcher(api, watcher::Config::default().any_semantic()).filter_map(move |event| {
        use watcher::Event::*;
        let event = match event {
            Ok(Apply(obj)) => decode(obj, false).map(|k| Ok(Apply(k))),
            Ok(InitApply(obj)) => decode(obj, false).map(|k| Ok(InitApply(k))),
            Ok(Delete(obj)) => decode(obj, true).map(|k| Ok(Delete(k))),
            Ok(Init) => Some(Ok(Init)),
            Ok(InitDone) => Some(Ok(InitDone)),
            Err(e) => Some(Err(e)),
        };
        std::future::ready(event)
    })
}

/// Says on an object that cannot be read what is wrong with it: a Warning event and the failure metric.
/// (Not its status: the API server evaluates the schema's CEL rules on the stored spec for every write,
/// status included, and refuses it.)
async fn report_invalid<K: Kind>(obj: kube::api::DynamicObject, error: String, ctx: Arc<Context>) {
    let kind = kind_name::<K>();
    let message = mizzen_common::shortened(
        &format!(
            "the operator cannot read this {kind} (stored under an older schema?): {error}; fix or recreate it"
        ),
        1000,
    );
    tracing::warn!(kind, name = %obj.name_any(), namespace = ?obj.namespace(), %message, "invalid object");
    ctx.metrics.reconcile_failed(kind, "invalid_object");
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).into()),
        kind: Some(kind.into()),
        name: obj.metadata.name.clone(),
        namespace: obj.namespace(),
        uid: obj.uid(),
        resource_version: obj.resource_version(),
        ..Default::default()
    };
    ctx.publish_to(&reference, &Notice::warning("InvalidObject", message)).await;
}

/// A watch stream that waits after each error before it is polled again, on its own: 250 ms doubling to
/// 5 s, and back to 250 ms after any event that is not an error. A `410 Gone` (the API server no longer
/// has the resourceVersion the watch resumes from, as after its restart) waits the shortest time: the
/// watcher relists next, which is the cure, not a retry of what failed.
///
/// Why not kube-runtime's backoff: it keeps one for all the watches of a controller (its objects, each
/// child kind, the EndpointSlices), so an error from any of them pauses them all, and its default
/// (client-go's 0.8 s doubling to 30 s with jitter, reset only after two quiet minutes) grew through an API
/// server outage and then again for each watch's `410 Gone` after the restart, one after the other: a
/// controller with five watches stayed deaf for minutes after the API server was back. Errors still reach
/// the controller (and `/ready`), which pauses nothing ([`NoBackoff`]).
fn resilient<T: Send + 'static>(
    stream: impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static {
    let mut backoff = WatchBackoff::default();
    stream.then(move |item| {
        let wait = match &item {
            Ok(_) => {
                backoff = WatchBackoff::default();
                None
            }
            Err(error) if gone(error) => {
                backoff = WatchBackoff::default();
                backoff.next()
            }
            Err(_) => backoff.next(),
        };
        async move {
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            item
        }
    })
}

/// Whether a watch failed because the API server no longer has the resourceVersion it asked for.
fn gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// The wait after a watch error: doubles from 250 ms to at most 5 s.
#[derive(Clone, Debug, PartialEq)]
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (wait * 2).min(Self::MAX);
        Some(wait)
    }
}

/// The controller-wide backoff, turned off: each watch waits on its own ([`resilient`]).
struct NoBackoff;

impl Iterator for NoBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoBackoff {
    fn reset(&mut self) {}
}

/// The events of the EndpointSlice cache, for the one kind that follows them (taken once).
type SliceEvents = Arc<Mutex<Option<BoxStream<'static, Result<EndpointSlice, watcher::Error>>>>>;

/// A kind of child the operator watches.
pub trait Child:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<C> Child for C where
    C: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// How a controller watches its children: in its scope, only objects with the operator's label.
pub struct Children {
    client: Client,
    scope: Scope,
    config: watcher::Config,
    slice_events: SliceEvents,
}

impl Children {
    /// The changes of the operator's children of kind `C` (metadata only).
    fn changes<C: Child>(
        &self,
    ) -> impl futures::Stream<Item = Result<PartialObjectMeta<C>, watcher::Error>> + Send + 'static {
        let children =
            watcher::watcher(self.scope.api::<PartialObjectMeta<C>>(&self.client), self.config.clone());
        resilient(children.touched_objects())
    }

    /// Adds an owned-child watch for the child kind `C`.
    pub fn watch<K: Kind, C: Child>(&self, controller: Controller<K>) -> Controller<K> {
        controller.owns_stream(self.changes::<C>())
    }

    /// Adds a watch of the child kind `C` that wakes the object named by each child's `label` (in the
    /// child's namespace), whoever owns the child.
    pub fn watch_labelled<K: Kind, C: Child>(
        &self,
        controller: Controller<K>,
        label: &'static str,
    ) -> Controller<K> {
        controller.watches_stream(self.changes::<C>(), move |child: PartialObjectMeta<C>| {
            let name = child.labels().get(label)?.clone();
            Some(reflector::ObjectRef::new(&name).within(&child.namespace()?))
        })
    }

    /// Wakes `K` on changes of the EndpointSlices of its Services, which carry its name in `label` (they copy
    /// the Service's labels); the slices themselves are read from [`Context::endpoint_slices`].
    pub fn watch_endpoint_slices<K: Kind>(
        &self,
        controller: Controller<K>,
        label: &'static str,
    ) -> Controller<K> {
        let Some(events) = self.slice_events.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return controller;
        };
        controller.watches_stream(events, move |slice: EndpointSlice| {
            let name = slice.labels().get(label)?.clone();
            Some(reflector::ObjectRef::new(&name).within(&slice.namespace()?))
        })
    }
}

#[cfg(test)]
mod written_tests {
    use super::*;

    fn status(code: u16) -> watcher::Error {
        watcher::Error::WatchError(Box::new(
            kube::core::Status::failure("expired", "Expired").with_code(code),
        ))
    }

    /// Each watch waits on its own: errors double its wait up to 5 s, an event starts it over, and a
    /// `410 Gone` waits the shortest time (what follows it is a relist).
    #[tokio::test(start_paused = true)]
    async fn a_watch_waits_after_errors_and_starts_over_on_an_event_or_gone() {
        let items = vec![
            Err(status(503)),
            Err(status(503)),
            Err(status(503)),
            Err(status(503)),
            Err(status(503)),
            Err(status(503)),
            Err(status(503)),
            Err(status(410)),
            Err(status(503)),
            Ok(1),
            Err(status(503)),
        ];
        let start = tokio::time::Instant::now();
        let mut stream = std::pin::pin!(resilient(futures::stream::iter(items)));
        let mut waits = vec![];
        let mut last = start;
        while let Some(_item) = stream.next().await {
            let now = tokio::time::Instant::now();
            waits.push((now - last).as_millis() as u64);
            last = now;
        }
        // An error is passed on after its wait, and the watch is not polled meanwhile.
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000, 250, 500, 0, 250]);
        assert!(gone(&status(410)) && !gone(&status(503)));
    }

    fn md(version: &str, active: &str) -> ModelDeployment {
        let mut md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "mizzen.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u1", "resourceVersion": version},
            "spec": {"model": {"uri": "s3://m/a.onnx"}},
            "status": {"activeRevision": active},
        }))
        .unwrap();
        md.metadata.generation = Some(1);
        md
    }

    fn active(md: &ModelDeployment) -> Option<&str> {
        md.status.as_ref()?.active_revision.as_deref()
    }

    #[test]
    fn a_cached_object_older_than_the_last_status_write_gets_that_status() {
        let written = Written::default();
        written.record(&md("12", "b"));
        // A child's event brought the object as it was before the write.
        assert_eq!(active(&written.fresh(Arc::new(md("10", "a")))), Some("b"));
        // Once the cache has the write (or anything newer), the cached object is used as it is.
        assert_eq!(active(&written.fresh(Arc::new(md("12", "b")))), Some("b"));
        assert_eq!(active(&written.fresh(Arc::new(md("10", "a")))), Some("a"), "forgotten once caught up");
        written.record(&md("20", "c"));
        assert_eq!(active(&written.fresh(Arc::new(md("25", "d")))), Some("d"), "newer than the write");
    }
}

//! The HTTP surface: `POST /enforce` (the volume policy), `POST /inject` (env injection) and
//! `POST /mutate` (both), AdmissionReview v1, always answered with 200 and a review.

use crate::metrics::{Metrics, ReviewLabels, kind_label};
use crate::registry::{Entrypoints, Registry};
use crate::review::{Policy, Response, Verdict, review};
use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, post};
use kube::Api;
use ssi_core::SecretsStoreImport;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The apiserver caps admission requests well below this; anything larger is not a review.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The apiserver sends a review's body at once; one that takes longer is not the apiserver.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Time a review may take from its arrival, whatever it waits for (a turn, its body, the
/// registry, the SSI lookups): below the apiserver's default webhook timeout of 10 s, so that
/// the answer is ours (a denial naming what was slow) rather than the apiserver's time-out.
pub const REVIEW_BUDGET: Duration = Duration::from_secs(9);

/// SSI existence answers kept at most: names come from reviewed objects, so anyone who may create
/// a workload decides how many there are.
pub const SSI_CACHE_ENTRIES: usize = 4096;

/// SSI names looked up per review, at most.
pub const SSI_LOOKUPS_PER_REVIEW: usize = 32;

/// Warns about SSIs that do not exist in the object's namespace. Looked up with a short
/// deadline and cached; a failed lookup is a warning too, never an error: admission must not
/// depend on a lookup that only produces advice.
pub struct SsiChecker {
    client: Option<kube::Client>,
    deadline: Duration,
    ttl: Duration,
    // Read on every review by every worker, written once per name and TTL: readers do not
    // wait for each other.
    cache: RwLock<HashMap<(String, String), (Instant, bool)>>,
}

impl std::fmt::Debug for SsiChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsiChecker")
            .field("enabled", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl SsiChecker {
    /// Looks SSIs up through `client`, all of one review's lookups bounded by `deadline`;
    /// answers are kept for `ttl`.
    pub fn new(client: kube::Client, deadline: Duration, ttl: Duration) -> SsiChecker {
        SsiChecker {
            client: Some(client),
            deadline,
            ttl,
            cache: RwLock::default(),
        }
    }

    /// No lookups at all (for tests of the pure path, and for operators who switch it off).
    pub fn disabled() -> SsiChecker {
        SsiChecker {
            client: None,
            deadline: Duration::ZERO,
            ttl: Duration::ZERO,
            cache: RwLock::default(),
        }
    }

    /// One warning per named SSI that does not exist or could not be checked. All lookups run
    /// at once, under one deadline for the whole review.
    pub async fn warnings(
        &self,
        namespace: &str,
        names: &[String],
        review_deadline: tokio::time::Instant,
    ) -> Vec<String> {
        let Some(client) = &self.client else {
            return Vec::new();
        };
        // The namespace comes from the review's body; whoever reaches the webhook writes it.
        if !ssi_core::names::is_namespace_name(namespace) {
            return vec![
                "could not check that the named SecretsStoreImports exist: the review's namespace is not a namespace name"
                    .to_owned(),
            ];
        }
        // An object names as many SSIs as its author likes; the apiserver gets a bounded number.
        let (checked, unchecked) = names.split_at(names.len().min(SSI_LOOKUPS_PER_REVIEW));
        let mut warnings = Vec::new();
        let mut to_look_up = Vec::new();
        for name in checked {
            if !ssi_core::is_object_name(name) {
                // The pod's own text, bounded; never sent to the API.
                let shown = ssi_core::names::shown(name, 64);
                warnings.push(format!(
                    "{shown:?} is not a SecretsStoreImport name (lowercase letters, digits, '-' and '.')"
                ));
                continue;
            }
            // Answered from the cache without a task or a timer: the common case, on every review.
            let key = (namespace.to_owned(), name.clone());
            match self.cached(&key) {
                Some(true) => {}
                Some(false) => warnings.push(missing(namespace, name)),
                None => to_look_up.push(key),
            }
        }
        if !to_look_up.is_empty() {
            warnings.extend(
                self.look_up(client, namespace, to_look_up, review_deadline)
                    .await,
            );
        }
        if !unchecked.is_empty() {
            warnings.push(format!(
                "{} more SecretsStoreImport names were not checked (at most {SSI_LOOKUPS_PER_REVIEW} per object)",
                unchecked.len()
            ));
        }
        warnings
    }

    /// Asks the apiserver about names the cache does not know, all at once, under one deadline.
    async fn look_up(
        &self,
        client: &kube::Client,
        namespace: &str,
        keys: Vec<(String, String)>,
        review_deadline: tokio::time::Instant,
    ) -> Vec<String> {
        let count = keys.len();
        let started = tokio::time::Instant::now();
        let deadline = review_deadline.min(started + self.deadline);
        let no_answer = |deadline: tokio::time::Instant| {
            vec![format!(
                "could not check that the {count} SecretsStoreImport(s) named exist in {namespace}: no answer within {:?}",
                Duration::from_millis(
                    deadline.saturating_duration_since(started).as_millis() as u64
                )
            )]
        };
        // A review whose time is up starts no lookup: the answer could not be waited for, and a
        // request the apiserver answers at once would otherwise race the expired timer.
        if deadline <= started {
            return no_answer(deadline);
        }
        let api: Api<SecretsStoreImport> = Api::namespaced(client.clone(), namespace);
        let lookups = keys.into_iter().map(|key| {
            let api = api.clone();
            async move {
                match api.get_opt(&key.1).await {
                    Ok(found) => {
                        let exists = found.is_some();
                        let warning = (!exists).then(|| missing(namespace, &key.1));
                        self.remember(key, exists);
                        warning
                    }
                    Err(e) => Some(format!(
                        "could not check that SecretsStoreImport {namespace}/{} exists: {e}",
                        key.1
                    )),
                }
            }
        });
        match tokio::time::timeout_at(deadline, futures_util::future::join_all(lookups)).await {
            Ok(results) => results.into_iter().flatten().collect(),
            Err(_) => no_answer(deadline),
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<bool> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, exists)| *exists)
    }

    /// Caches an answer. The cache holds at most [`SSI_CACHE_ENTRIES`]: when full, expired
    /// entries go first, then everything (a refill costs one lookup per name).
    fn remember(&self, key: (String, String), exists: bool) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= SSI_CACHE_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= SSI_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), exists));
    }
}

/// The warning for an SSI that does not exist.
fn missing(namespace: &str, name: &str) -> String {
    format!(
        "SecretsStoreImport {namespace}/{name} does not exist; pods will not start until it is created"
    )
}

/// What every review handler shares.
#[derive(Debug)]
pub struct AppState {
    /// What `/mutate` applies; `/enforce` and `/inject` each use a part of it.
    pub policy: Policy,
    /// Warns about referenced SSIs that do not exist.
    pub ssis: SsiChecker,
    /// Image ENTRYPOINT lookups for env injection; `None` when switched off.
    pub registry: Option<Registry>,
    /// Counters and timings of the reviews, shared with `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Bounds the reviews handled at once.
    pub admission: Admission,
}

/// How many reviews are handled at once, and the memory they may use. A review that waits for
/// a turn longer than `queue_wait` (below the apiserver's 10 s timeout) gets HTTP 429, which the
/// apiserver treats as a failed call (the configuration's failurePolicy decides).
///
/// Memory is bounded by construction: a body reserves memory from [`REVIEW_MEMORY`] as it
/// arrives, then the review the rest of what it may cost ([`review_cost`]) with its turn, so
/// large reviews wait for each other while small ones pass, no mix of them exceeds the budget,
/// and a client that sends slowly holds no turn, only the memory of what it sent.
#[derive(Debug)]
pub struct Admission {
    turns: tokio::sync::Semaphore,
    memory_kib: tokio::sync::Semaphore,
    queue_wait: Duration,
}

/// The memory all reviews in flight may use together, in bytes: the chart's 80 MiB limit less
/// the webhook's baseline and its connections (docs/security.md, "Memory budgets"). At least
/// [`review_cost`] of the largest body, or such a review would never get its share.
pub const REVIEW_MEMORY: usize = 28 * 1024 * 1024;

/// What a review of a `body_len`-byte body may cost at most: the body, three trees of it
/// (the object, its mutated copy, and what injection copies into its init container), each
/// within [`crate::shape::MAX_VALUES`] ([`ssi_core::json::tree_cost`]), and what the endpoint's
/// mutations may add to them ([`SHORTHAND_ALLOWANCE`], [`INJECTION_ALLOWANCE`]).
pub fn review_cost(body_len: usize, policy: &Policy) -> usize {
    let mut cost = body_len + 3 * ssi_core::json::tree_cost(body_len, crate::shape::MAX_VALUES);
    if policy.enforce {
        cost += SHORTHAND_ALLOWANCE;
    }
    if policy.injector.is_some() {
        cost += INJECTION_ALLOWANCE;
    }
    cost
}

/// What the import shorthand may add beyond the trees of the body, with its patch, the patch's
/// base64 and the answer: at most [`crate::mutate::MAX_SHORTHAND_MOUNTS`] mounts, each a small
/// object of three values (about 1.2 KiB as a tree), with at most
/// [`crate::mutate::MAX_SHORTHAND_PATH_BYTES`] of paths in all, and about three times that
/// text again as patch, base64 and answer.
pub const SHORTHAND_ALLOWANCE: usize = 512 * 1024;

/// What injection may add: at most [`crate::inject::MAX_INJECTED_BYTES`] copied into the
/// containers, and about three times that again as patch, base64 and answer.
pub const INJECTION_ALLOWANCE: usize = 4 * crate::inject::MAX_INJECTED_BYTES;

impl Admission {
    /// At most `max_in_flight` reviews at once; others wait up to `queue_wait` for a turn.
    pub fn new(max_in_flight: usize, queue_wait: Duration) -> Admission {
        Admission {
            turns: tokio::sync::Semaphore::new(max_in_flight),
            memory_kib: tokio::sync::Semaphore::new(REVIEW_MEMORY / 1024),
            queue_wait,
        }
    }
}

impl Default for Admission {
    fn default() -> Admission {
        Admission::new(64, Duration::from_secs(5))
    }
}

/// Three endpoints over one policy: `/enforce` (the volume policy only), `/inject` (env
/// injection only) and `/mutate` (both, for configurations from before the split). The shipped
/// configuration calls the first two from separate webhooks, so that an object's own label can
/// opt it out of injection but never out of enforcement.
pub fn router(state: Arc<AppState>) -> Router {
    // Each endpoint's part of the policy, made once rather than on every review.
    let enforce = Policy {
        injector: None,
        ..state.policy.clone()
    };
    let inject = Policy {
        enforce: false,
        ..state.policy.clone()
    };
    let mutate = state.policy.clone();
    Router::new()
        .route("/mutate", endpoint(state.clone(), mutate))
        .route("/enforce", endpoint(state.clone(), enforce))
        .route("/inject", endpoint(state, inject))
}

/// `POST` applying `policy`.
fn endpoint(state: Arc<AppState>, policy: Policy) -> MethodRouter {
    let policy = Arc::new(policy);
    post(move |body: Body| {
        let (state, policy) = (state.clone(), policy.clone());
        async move { handle(&state, &policy, body).await }
    })
}

async fn handle(state: &Arc<AppState>, policy: &Policy, body: Body) -> axum::response::Response {
    let arrived = tokio::time::Instant::now();
    let deadline = arrived + REVIEW_BUDGET;
    let admission = &state.admission;
    // The body first, holding no turn: a client that sends slowly holds only the memory of what
    // it sent. Read with our own limit rather than axum's extractor, whose refusal would be a
    // 413: the apiserver must always get a review back.
    let body_deadline = deadline.min(arrived + BODY_READ_TIMEOUT);
    let (body, mut memory) = match read_body(body, &admission.memory_kib, body_deadline).await {
        Ok(read) => read,
        Err(reason) => {
            state.count(kind_label(""), Verdict::Invalid, None);
            return json(Response::invalid(String::new(), reason).to_review_json()).into_response();
        }
    };
    // Then a turn, and the memory its trees may take beyond the body's.
    let more_kib = kib(review_cost(body.len(), policy)).saturating_sub(memory.num_permits() as u32);
    // Both at once when they are free, as they are unless reviews pile up: no timer to set.
    let free = admission.turns.try_acquire().ok().and_then(|turn| {
        let more = admission.memory_kib.try_acquire_many(more_kib).ok()?;
        Some((turn, more))
    });
    let waited = match free {
        Some((turn, more)) => {
            memory.merge(more);
            Ok(Ok(turn))
        }
        None => {
            tokio::time::timeout_at(deadline.min(arrived + admission.queue_wait), async {
                let turn = admission.turns.acquire().await?;
                memory.merge(admission.memory_kib.acquire_many(more_kib).await?);
                Ok::<_, tokio::sync::AcquireError>(turn)
            })
            .await
        }
    };
    let Ok(Ok(_turn)) = waited else {
        tracing::warn!(wait = ?admission.queue_wait, "too many admission reviews in flight; answering 429");
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, "1")],
            "too many admission reviews in flight",
        )
            .into_response();
    };
    let started = Instant::now();
    let mut reviewed = review(&body, policy, &Entrypoints::new());
    if let Some(request) = reviewed.lookup.take() {
        // None of the review's trees lives while registries answer (which may take seconds):
        // their memory goes back to other reviews meanwhile, and is taken again for the
        // second pass. The body's stays.
        drop(memory.split(more_kib as usize));
        let answers = match &state.registry {
            Some(registry) => registry.entrypoints(&request, deadline).await,
            None => request
                .images
                .iter()
                .map(|image| {
                    (
                        image.clone(),
                        Err("registry lookups are not configured".to_owned()),
                    )
                })
                .collect(),
        };
        let again = tokio::time::timeout_at(deadline, admission.memory_kib.acquire_many(more_kib));
        match again.await {
            Ok(Ok(more)) => memory.merge(more),
            _ => {
                state.count(reviewed.kind, Verdict::Invalid, Some(started));
                let reason =
                    "no memory came free for the review after its registry lookups; try again";
                let uid = std::mem::take(&mut reviewed.response.uid);
                return json(Response::invalid(uid, reason.to_owned()).to_review_json())
                    .into_response();
            }
        }
        reviewed = review(&body, policy, &answers);
    }
    if let Some((namespace, names)) = &reviewed.imports {
        let extra = state.ssis.warnings(namespace, names, deadline).await;
        reviewed.response.warnings.extend(extra);
    }
    state.count(reviewed.kind, reviewed.verdict, Some(started));
    let answer = reviewed.response.to_review_json();
    drop(reviewed);
    json(held_answer(state, memory, answer)).into_response()
}

/// The answer's bytes, holding their share of the review memory (`memory`, whose rest goes back
/// now) until hyper has written them out or dropped them: the answer outlives the review, and a
/// client that never reads its answers must hold memory of the budget, never beyond it.
fn held_answer(
    state: &Arc<AppState>,
    mut memory: tokio::sync::SemaphorePermit<'_>,
    json: Vec<u8>,
) -> axum::body::Bytes {
    // Its capacity, not its length: what the buffer holds, escapes' growth included.
    let share = memory
        .split(kib(json.capacity()) as usize)
        .unwrap_or(memory);
    let kib = share.num_permits();
    // Given back by the answer's drop, which no permit's lifetime can reach.
    share.forget();
    axum::body::Bytes::from_owner(HeldAnswer {
        json,
        state: Arc::clone(state),
        kib,
    })
}

/// An answer that gives its memory back to the review budget when hyper drops it.
struct HeldAnswer {
    json: Vec<u8>,
    state: Arc<AppState>,
    kib: usize,
}

impl AsRef<[u8]> for HeldAnswer {
    fn as_ref(&self) -> &[u8] {
        &self.json
    }
}

impl Drop for HeldAnswer {
    fn drop(&mut self) {
        self.state.admission.memory_kib.add_permits(self.kib);
    }
}

/// KiB, rounded up, as the memory semaphore counts.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Reads a body of at most [`BODY_LIMIT`] bytes before `deadline`, reserving memory from
/// `memory_kib` for each chunk as it arrives (twice its size: the buffer grows by doubling).
/// A body declared larger than the limit is refused before anything is read.
async fn read_body<'m>(
    body: Body,
    memory_kib: &'m tokio::sync::Semaphore,
    deadline: tokio::time::Instant,
) -> Result<(Vec<u8>, tokio::sync::SemaphorePermit<'m>), String> {
    use futures_util::StreamExt;
    let too_large = || format!("the request body is larger than {BODY_LIMIT} bytes");
    let declared = body.size_hint().exact();
    if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let mut reserved = memory_kib
        .acquire_many(0)
        .await
        .map_err(|_| "the webhook is stopping".to_owned())?;
    // Grown as it comes (the old buffers, freed, are within twice the body): one of the declared
    // size at once would be allocated for a client that then sends a byte at a time.
    let mut bytes = Vec::new();
    let mut chunks = body.into_data_stream();
    let reading = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|_| "the request body could not be read".to_owned())?;
            if bytes.len() + chunk.len() > BODY_LIMIT {
                return Err(too_large());
            }
            let needed = kib(2 * (bytes.len() + chunk.len()));
            let more = needed.saturating_sub(reserved.num_permits() as u32);
            if more > 0 {
                // Never wait while holding part: when the budget is short, give it back and
                // wait for the most this body may need, at once.
                match memory_kib.try_acquire_many(more) {
                    Ok(permit) => reserved.merge(permit),
                    Err(_) => {
                        let most = kib(2 * declared.map_or(BODY_LIMIT, |len| len as usize));
                        drop(std::mem::replace(
                            &mut reserved,
                            memory_kib
                                .acquire_many(0)
                                .await
                                .map_err(|_| "the webhook is stopping".to_owned())?,
                        ));
                        reserved = memory_kib
                            .acquire_many(most.max(needed))
                            .await
                            .map_err(|_| "the webhook is stopping".to_owned())?;
                    }
                }
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, reading).await {
        Ok(Ok(())) => Ok((bytes, reserved)),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err(format!(
            "the request body did not arrive within {BODY_READ_TIMEOUT:?} (or found no memory free for it)"
        )),
    }
}

fn json(body: impl Into<Body>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
}

impl AppState {
    /// Counts a review; `kind` is a [`kind_label`].
    fn count(&self, kind: &'static str, verdict: Verdict, started: Option<Instant>) {
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels { kind, verdict })
            .inc();
        if let Some(started) = started {
            self.metrics
                .review_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::SubpathPolicy;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    /// The volume policy with subPath denied, no lookups, and `admission`'s bounds.
    fn deny_state(admission: Admission) -> Arc<AppState> {
        Arc::new(AppState {
            policy: SubpathPolicy::Deny.into(),
            ssis: SsiChecker::disabled(),
            registry: None,
            metrics: Arc::default(),
            admission,
        })
    }

    #[test]
    fn the_largest_review_fits_the_memory_budget() {
        let both = crate::review::tests::injecting_policy();
        assert!(
            review_cost(BODY_LIMIT, &both) <= REVIEW_MEMORY,
            "{}",
            review_cost(BODY_LIMIT, &both)
        );
        // A tree of tiny values costs its bound, not eighty times its text.
        let allowances = SHORTHAND_ALLOWANCE + INJECTION_ALLOWANCE;
        assert!(review_cost(4096, &both) < 4096 * 300 + allowances);
    }

    #[test]
    fn the_ssi_cache_stays_bounded() {
        let checker = SsiChecker {
            ttl: Duration::from_secs(60),
            ..SsiChecker::disabled()
        };
        for i in 0..SSI_CACHE_ENTRIES * 3 {
            checker.remember(("ns".into(), format!("ssi-{i}")), true);
            let len = checker.cache.read().unwrap().len();
            assert!(len <= SSI_CACHE_ENTRIES, "{len} entries");
        }
        assert_eq!(
            checker.cached(&("ns".into(), format!("ssi-{}", SSI_CACHE_ENTRIES * 3 - 1))),
            Some(true),
            "the newest answer is kept"
        );
    }

    #[tokio::test]
    async fn a_body_that_never_comes_gives_its_turn_back() {
        let state = deny_state(Admission::new(1, Duration::from_secs(60)));
        let stalled = Body::from_stream(futures_util::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >());
        let response = router(state.clone())
            .oneshot(Request::post("/mutate").body(stalled).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let review: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(review["response"]["allowed"], false, "{review}");
        assert_eq!(
            state.admission.turns.available_permits(),
            1,
            "the turn is back"
        );
    }

    #[tokio::test]
    async fn an_answer_holds_its_memory_until_it_is_dropped() {
        let state = deny_state(Admission::default());
        let all = REVIEW_MEMORY / 1024;
        // The guide's Deployment, whose answer carries a patch; its client does not read it.
        let guide = include_str!("../tests/fixtures/deployment-create.json");
        let response = router(state.clone())
            .oneshot(Request::post("/enforce").body(Body::from(guide)).unwrap())
            .await
            .unwrap();
        let held = all - state.admission.memory_kib.available_permits();
        let answer = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(answer.len() > 300, "a patched answer");
        let (least, most) = (kib(answer.len()) as usize, kib(2 * answer.len()) as usize);
        assert!(
            (least..=most).contains(&held),
            "the answer's buffer, no more: {held} KiB for {} bytes",
            answer.len()
        );
        drop(answer);
        assert_eq!(
            state.admission.memory_kib.available_permits(),
            all,
            "given back when the answer is dropped"
        );
    }

    #[tokio::test]
    async fn past_the_turns_a_review_waits_then_gets_429() {
        let state = deny_state(Admission::new(1, Duration::from_millis(200)));
        let held = state.admission.turns.acquire().await.unwrap();
        let request = || {
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap()
        };
        let busy = router(state.clone()).oneshot(request()).await.unwrap();
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(held);
        let served = router(state).oneshot(request()).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK, "a turn is free again");
    }

    async fn call(body: impl Into<Body>) -> (StatusCode, serde_json::Value) {
        let state = deny_state(Admission::default());
        let response = router(state)
            .oneshot(
                Request::post("/mutate")
                    .header("content-type", "application/json")
                    .body(body.into())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn a_real_review_gets_a_review_back() {
        let (status, review) = call(include_str!("../tests/fixtures/deployment-create.json")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(
            review["response"]["uid"],
            "0c9f5a3e-7d1b-4e55-9a43-6f2c8e1d0a01"
        );
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
    }

    #[tokio::test]
    async fn garbage_is_answered_200_with_an_invalid_review() {
        let (status, review) = call("{\"request\": 42}").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["allowed"], false);
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_with_an_invalid_review() {
        let (status, review) = call(vec![b' '; BODY_LIMIT + 1]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["response"]["allowed"], false);
        assert!(
            review["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("larger than")
        );
    }
}

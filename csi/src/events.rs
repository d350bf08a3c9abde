//! Kubernetes Events on the pod, where its owner looks first (`kubectl describe pod`).

use crate::state::PodInfo;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;
use std::collections::HashMap;

/// The Events' source and reporting component: the driver's name.
pub const COMPONENT: &str = ssi_core::DRIVER_NAME;

/// The type of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Routine news, such as files updated by a rotation.
    Normal,
    /// Something the pod's owner should look at, such as a failed rotation.
    Warning,
}

/// Writes Events on pods, reported by this node's instance of the driver.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    /// The client the SSIs' status is written with (see [`Events::with_status_client`]).
    status_client: kube::Client,
    node: String,
    /// The Events recorded lately, by pod, reason and message: a repeat within
    /// [`AGGREGATION_WINDOW`] counts up on the same Event instead of creating one.
    recent: std::sync::Arc<std::sync::Mutex<HashMap<EventKey, Recorded>>>,
}

/// An Event's pod uid, reason and message.
type EventKey = (String, String, String);

/// How long a repeated Event counts up on the first one, as kubelet's recorder does.
pub const AGGREGATION_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// At most this many Events are remembered for aggregation; past it the oldest go.
const RECENT_EVENTS: usize = 4096;

/// An Event recorded: its name, its count, and when it was first recorded here.
#[derive(Debug, Clone)]
struct Recorded {
    name: String,
    count: i32,
    first: std::time::Instant,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Events reported from `node`, the reporting instance.
    pub fn new(client: kube::Client, node: String) -> Events {
        Events {
            status_client: client.clone(),
            client,
            node,
            recent: Default::default(),
        }
    }

    /// Writes the SSIs' status with `client` (one that leaves retries to the status writer).
    pub fn with_status_client(self, client: kube::Client) -> Events {
        Events {
            status_client: client,
            ..self
        }
    }

    /// The API client events are written with.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The API client the SSIs' status is written with.
    pub fn status_client(&self) -> &kube::Client {
        &self.status_client
    }

    /// The node they are written from.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records an event on `pod`. Failing to record is logged, never fatal: the event reports on
    /// the work, it is not the work.
    pub async fn emit(&self, pod: &PodInfo, kind: Kind, reason: &str, message: &str) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", pod.name)),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(match kind {
                Kind::Normal => "Normal".into(),
                Kind::Warning => "Warning".into(),
            }),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let key = (pod.uid.clone(), reason.to_owned(), message.to_owned());
        let repeated = self
            .recent()
            .get(&key)
            .cloned()
            .filter(|recorded| recorded.first.elapsed() < AGGREGATION_WINDOW);
        if let Some(recorded) = repeated {
            let count = recorded.count.saturating_add(1);
            let patch = serde_json::json!({"count": count, "lastTimestamp": event.last_timestamp});
            match api
                .patch(
                    &recorded.name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.recent().insert(key, Recorded { count, ..recorded });
                    return;
                }
                // Gone (expired, deleted): a new one below.
                Err(e) => {
                    tracing::debug!(k8s.namespace = %pod.namespace, k8s.pod = %pod.name, reason, error = %e, "could not count up an event; recording a new one");
                }
            }
        }
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => {
                let mut recent = self.recent();
                if recent.len() >= RECENT_EVENTS {
                    recent.retain(|_, recorded| recorded.first.elapsed() < AGGREGATION_WINDOW);
                    if recent.len() >= RECENT_EVENTS {
                        recent.clear();
                    }
                }
                if let Some(name) = created.metadata.name {
                    recent.insert(
                        key,
                        Recorded {
                            name,
                            count: 1,
                            first: std::time::Instant::now(),
                        },
                    );
                }
            }
            Err(e) => {
                tracing::warn!(k8s.namespace = %pod.namespace, k8s.pod = %pod.name, reason, error = %e, "failed to record event");
            }
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String, String), Recorded>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

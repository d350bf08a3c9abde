//! Env injection (DESIGN.md 3.3): a Pod annotated with `secrets-store.deckhouse.io/role` gets
//! the injector copied into an in-memory volume by an init container, and every app container
//! that references the store starts through it.
//!
//! Only Pods are injected (on CREATE): a workload's template is left as written, so that what
//! `kubectl get deployment` shows is what the user wrote.

mod request;

pub use request::{InjectionRequest, check_ca_pem};

use crate::annotations::PREFIX as ANNOTATION_PREFIX;
use crate::refusal::Refusal;
use crate::registry::{Entrypoints, ImageCommand};
use serde_json::{Map, Value, json};
use ssi_core::injector as contract;
use ssi_core::names::shown;

/// Distinct images looked up for one pod, at most: the pod's author picks how many, each costs
/// registry requests within one review's deadline.
pub const IMAGE_LOOKUPS_PER_POD: usize = 8;
/// What injection may copy into a pod's containers in all: each injected container gets its
/// own copy of the settings (the annotations' values, the CA bundle) and of the command read
/// from its image, and [`PER_CONTAINER_BYTES`] more. `router::review_cost` reserves for it.
pub const MAX_INJECTED_BYTES: usize = 256 * 1024;
/// What injecting one container adds besides those, counted against [`MAX_INJECTED_BYTES`]:
/// its mounts, the settings' names, `command`, and the patch operations of all of it.
pub const PER_CONTAINER_BYTES: usize = 4 * 1024;
/// Containers warned about one by one as never injected; the rest are counted in one warning.
const MAX_NEVER_INJECTED_WARNINGS: usize = 8;

/// The volume the init container fills and its mount path in every container.
pub const VOLUME: &str = "secrets-store-injector";
/// Where [`VOLUME`] is mounted in the init container and the app containers.
pub const DIR: &str = "/secrets-store-injector";
/// The injector as the app containers run it: their new first argument.
pub const BINARY: &str = "/secrets-store-injector/ssi-injector";
const _: () = assert!(
    // The copy lands in DIR under the contract's name.
    BINARY.len() == DIR.len() + 1 + contract::BINARY_NAME.len()
);
const INIT_CONTAINER: &str = "secrets-store-injector-copy";
/// The pod's lists whose containers are injected, in the order they start.
const INJECTED_LISTS: [&str; 2] = ["initContainers", "containers"];
/// Containers never injected, whatever the annotations say: the service mesh's and the
/// platform's own, which the Deckhouse webhook skips too.
pub const ALWAYS_SKIPPED: [&str; 4] = [
    "check-linux-kernel",
    "istio-validation",
    "istio-proxy",
    "istio-init",
];
const TOKEN_VOLUME: &str = "secrets-store-injector-token";
const TOKEN_DIR: &str = "/var/run/secrets/secrets-store";
const TLS_VOLUME: &str = "secrets-store-injector-tls";
const TLS_DIR: &str = "/secrets-store-injector-tls";

/// The webhook's side of env injection, from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorSettings {
    /// Image holding `/ssi-injector`, for the init container.
    pub image: String,
    /// Store address for pods without the `addr` annotation.
    pub default_address: Option<String>,
    /// Auth method and mount for pods without the `auth-method` and `auth-path` annotations.
    pub default_login: ssi_core::LoginDefaults,
    /// Store namespace for pods without the `namespace` annotation.
    pub default_namespace: Option<String>,
    /// CA bundle (PEM) passed to pods that name neither a `tls-secret` nor `cacert_bytes`.
    pub default_ca_pem: Option<String>,
    /// Audience of the projected token the injector logs in with; empty for the Kubernetes
    /// API's own.
    pub token_audience: String,
    /// Whether a container without `command` may be injected after its image's ENTRYPOINT/CMD
    /// is looked up; otherwise it is denied.
    pub registry_lookup: bool,
}

/// What injection did, or what it needs first.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Injection {
    /// Admission warnings for the user (e.g. an annotation that has no effect).
    pub warnings: Vec<String>,
    /// Images whose ENTRYPOINT/CMD must be looked up before the Pod can be injected. When not
    /// empty the Pod is unchanged: inject again with the answers.
    pub lookups: Vec<String>,
}

/// Whether a container's environment may refer to the store: a `secrets-store:` value of its
/// own, or a value kubelet takes from a ConfigMap or Secret at start. NB: the webhook does not
/// read those (it reads Secrets only for registry credentials, DESIGN.md 4.7); the injector
/// resolves whatever arrives, and without a reference it only execs the app.
fn may_reference_the_store(container: &Value) -> bool {
    let env = container.get("env").and_then(Value::as_array);
    let own = env.is_some_and(|env| {
        env.iter().any(|var| {
            var.get("value")
                .and_then(Value::as_str)
                .is_some_and(|v| v.contains("secrets-store:"))
        })
    });
    let from_objects = env.is_some_and(|env| {
        env.iter().any(|var| {
            var.get("valueFrom").is_some_and(|from| {
                from.get("configMapKeyRef").is_some() || from.get("secretKeyRef").is_some()
            })
        })
    });
    let env_from = container
        .get("envFrom")
        .and_then(Value::as_array)
        .is_some_and(|sources| !sources.is_empty());
    own || from_objects || env_from
}

/// A projected ServiceAccount token source; without an audience the apiserver issues it for its
/// own audiences.
fn projected_token(audience: &str) -> Value {
    let mut source = json!({"expirationSeconds": 3600, "path": "token"});
    if !audience.is_empty() {
        source["audience"] = json!(audience);
    }
    source
}

fn push_unique(list: &mut Vec<Value>, item: Value) {
    let name = item.get("name").cloned();
    if !list
        .iter()
        .any(|existing| existing.get("name") == name.as_ref())
    {
        list.push(item);
    }
}

/// Names, in [`contract::ENV_SETTINGS`], the injector settings of the container's own env list:
/// the injector takes no other, so `envFrom` sources cannot change them.
fn list_settings(env: &mut Vec<Value>) {
    env.retain(|var| var.get("name").and_then(Value::as_str) != Some(contract::ENV_SETTINGS));
    let names: Vec<&str> = env
        .iter()
        .filter_map(|var| var.get("name").and_then(Value::as_str))
        .filter(|name| name.starts_with(contract::ENV_PREFIX))
        .collect();
    let listed = names.join(",");
    env.push(json!({"name": contract::ENV_SETTINGS, "value": listed}));
}

/// The list under `key`, created empty if missing; a malformed object otherwise.
fn array<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
    owner: &str,
) -> Result<&'a mut Vec<Value>, Refusal> {
    map.entry(key)
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| Refusal::Invalid(format!("{owner}: {key} is not a list")))
}

/// Injects the env injector into `pod` if it asks for it. `Ok` carries warnings; `Err` is a
/// refusal a person can act on. Running it on its own output changes nothing.
pub fn inject(
    pod: &mut Value,
    settings: &InjectorSettings,
    entrypoints: &Entrypoints,
) -> Result<Injection, Refusal> {
    let Some(request) = InjectionRequest::parse(pod, settings)? else {
        return Ok(Injection::default());
    };
    let pod_name = request.pod_name.clone();
    let owner = format!("Pod {pod_name}");
    let mut warnings = request.warnings();
    let env = request.injector_env();
    let everyone = request.env_from_path.is_some();
    let skipped = &request.skip_containers;
    // A pod with its files watched only reads nothing from the store: no token for it.
    let own_token = request.token_path.is_none() && request.store.is_some();
    let reacts = request.on_file_change.is_some();

    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Refusal::Invalid(format!("{owner}: spec is not an object")))?;
    let our_volumes: Vec<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|volume| volume["csi"]["driver"].as_str() == Some(ssi_core::DRIVER_NAME))
        .filter_map(|volume| volume["name"].as_str().map(str::to_owned))
        .collect();
    // Where `container` mounts the pod's secrets-store volumes: what its injector watches. A
    // `subPath` mount never sees the volume's `..data` swap, and a path with a comma would not
    // survive the variable's list: neither is watched.
    let watched = |container: &Value| -> Vec<String> {
        container
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|mount| {
                mount["name"]
                    .as_str()
                    .is_some_and(|name| our_volumes.iter().any(|v| v == name))
                    && mount.get("subPath").is_none()
                    && mount.get("subPathExpr").is_none()
            })
            .filter_map(|mount| mount["mountPath"].as_str())
            .filter(|path| !path.contains(','))
            .map(str::to_owned)
            .collect()
    };
    let mut mounts = vec![json!({"name": VOLUME, "mountPath": DIR, "readOnly": true})];
    if own_token {
        mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
    }
    // The store's CA is for a store the injector talks to: none when only files are watched.
    let tls_secret = request
        .tls_secret
        .as_ref()
        .filter(|_| request.store.is_some());
    if tls_secret.is_some() {
        mounts.push(json!({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": true}));
    }

    // env-from-path stands for the app: it injects every app container, while an init
    // container is injected only when it references the store itself.
    // A reaction to rotated files is for processes that run on: app containers and native
    // sidecars, never a plain init container.
    let runs_on = |list: &str, container: &Value| {
        list == "containers"
            || container.get("restartPolicy").and_then(Value::as_str) == Some("Always")
    };
    let needs_injection = |list: &str, container: &Value| {
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let for_the_store = request.store.is_some()
            && ((everyone && list == "containers") || may_reference_the_store(container));
        let for_its_files = reacts && runs_on(list, container) && !watched(container).is_empty();
        name != INIT_CONTAINER
            && !already_injected(container)
            && !skipped.contains(name)
            && !ALWAYS_SKIPPED.contains(&name)
            && (for_the_store || for_its_files)
    };
    let mut never_injected = 0usize;
    for list in INJECTED_LISTS {
        for container in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if ALWAYS_SKIPPED.contains(&name) && may_reference_the_store(container) {
                // A few, then one that counts the rest: a pod may hold thousands.
                if never_injected < MAX_NEVER_INJECTED_WARNINGS {
                    warnings.push(format!(
                        "{owner}: container {name:?} is never injected (it belongs to the service \
                         mesh or the platform); its secrets-store: values reach it as text"
                    ));
                }
                never_injected += 1;
            }
        }
    }
    if never_injected > MAX_NEVER_INJECTED_WARNINGS {
        warnings.push(format!(
            "{owner}: {} more such containers are never injected",
            never_injected - MAX_NEVER_INJECTED_WARNINGS
        ));
    }
    // Init containers too, as Deckhouse does: each starts through the injector, which our copy
    // container (inserted first) has put in place by then.
    for list in INJECTED_LISTS {
        if spec.get(list).is_some_and(|value| !value.is_array()) {
            return Err(Refusal::Invalid(format!("{owner}: {list} is not a list")));
        }
    }
    let listed = |spec: &Map<String, Value>, list: &str| -> Vec<Value> {
        spec.get(list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    // Every injected container gets its own copy of the settings: checked before any image is
    // looked up, and again with the images' commands as they are copied (below).
    let settings_bytes: usize = env.iter().map(|var| var.to_string().len()).sum();
    let to_inject = INJECTED_LISTS
        .iter()
        .flat_map(|list| listed(spec, list).into_iter().map(move |c| (*list, c)))
        .filter(|(list, c)| !already_injected(c) && needs_injection(list, c))
        .count();
    let too_much = |bytes: usize| {
        Refusal::Invalid(format!(
            "{owner}: injecting {to_inject} containers would copy {bytes} bytes or more into them (the injector's \
             settings, {settings_bytes} bytes, most of it the annotations' values, and any command read from an \
             image, into each), more than {MAX_INJECTED_BYTES}; inject fewer containers (annotation \
             {ANNOTATION_PREFIX}skip-mutate-containers), set their command, or pass a large CA bundle as \
             {ANNOTATION_PREFIX}tls-secret"
        ))
    };
    let least = to_inject * (settings_bytes + PER_CONTAINER_BYTES);
    if least > MAX_INJECTED_BYTES {
        return Err(too_much(least));
    }
    let mut lookups: Vec<String> = Vec::new();
    for container in INJECTED_LISTS
        .iter()
        .flat_map(|list| listed(spec, list).into_iter().map(move |c| (*list, c)))
        .filter(|(list, c)| needs_injection(list, c) && command_of(c).is_none())
        .map(|(_, c)| c)
    {
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = shown(name, 64);
        let Some(image) = container.get("image").and_then(Value::as_str) else {
            return Err(Refusal::Invalid(format!(
                "{owner}: container {name:?} has neither command nor image"
            )));
        };
        if entrypoints.contains_key(image) || lookups.iter().any(|i| i == image) {
            continue;
        }
        if !settings.registry_lookup {
            return Err(Refusal::Forbidden(format!(
                "Pod {pod_name}: container {name:?} has no command, and this webhook does not look up the image's ENTRYPOINT \
                 (--registry-lookup=false); set command (and args) explicitly so the injector knows what to start"
            )));
        }
        if lookups.len() == IMAGE_LOOKUPS_PER_POD {
            return Err(Refusal::Forbidden(format!(
                "Pod {pod_name}: more than {IMAGE_LOOKUPS_PER_POD} images of containers without a command would have to be \
                 looked up in registries; set command (and args) explicitly on the containers that use secrets"
            )));
        }
        lookups.push(image.to_owned());
    }
    if !lookups.is_empty() {
        return Ok(Injection {
            warnings: Vec::new(),
            lookups,
        });
    }

    let mut injected = 0;
    let mut copied = 0;
    for list in INJECTED_LISTS {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut() {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if already_injected(container) {
                injected += 1;
                continue;
            }
            if !needs_injection(list, container) {
                continue;
            }
            // A plain init container runs to completion: the watch modes, which restart the
            // process they supervise, are for the app and for native sidecars.
            let mut container_env: Vec<Value> = if !runs_on(list, container) {
                env.iter()
                    .filter(|var| {
                        !matches!(
                            var.get("name").and_then(Value::as_str),
                            Some(
                                contract::ENV_MODE
                                    | contract::ENV_POLL_INTERVAL
                                    | contract::ENV_ON_FILE_CHANGE
                            )
                        )
                    })
                    .cloned()
                    .collect()
            } else {
                env.clone()
            };
            let dirs = watched(container);
            if reacts && runs_on(list, container) {
                // NB: a container that mounts none of the volumes gets no reaction: its
                // injector would have nothing to watch.
                if dirs.is_empty() {
                    container_env.retain(|var| {
                        var.get("name").and_then(Value::as_str)
                            != Some(contract::ENV_ON_FILE_CHANGE)
                    });
                } else {
                    container_env
                        .push(json!({"name": contract::ENV_WATCH_DIRS, "value": dirs.join(",")}));
                }
            }
            let from_image = inject_container(
                container,
                &name,
                &owner,
                &container_env,
                &mounts,
                &request,
                entrypoints,
            )?;
            copied += settings_bytes + PER_CONTAINER_BYTES + from_image;
            if copied > MAX_INJECTED_BYTES {
                return Err(too_much(copied));
            }
            injected += 1;
        }
    }
    if injected == 0 && request.store.is_none() {
        warnings.push(format!(
            "Pod {pod_name}: annotation {ANNOTATION_PREFIX}on-file-change is set, but no container mounts a \
             secrets-store volume; nothing was injected"
        ));
        return Ok(Injection {
            warnings,
            lookups: Vec::new(),
        });
    }
    if injected == 0 {
        warnings.push(format!(
            "Pod {pod_name}: annotation {ANNOTATION_PREFIX}role is set, but no container has a secrets-store: env value \
             (and env-from-path is not set); nothing was injected"
        ));
        return Ok(Injection {
            warnings,
            lookups: Vec::new(),
        });
    }

    let volumes = array(spec, "volumes", &owner)?;
    push_unique(
        volumes,
        json!({"name": VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}),
    );
    if own_token {
        push_unique(
            volumes,
            json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken":
                projected_token(&settings.token_audience)}]}}),
        );
    }
    if let Some(secret) = tls_secret {
        push_unique(
            volumes,
            json!({"name": TLS_VOLUME, "secret": {"secretName": secret}}),
        );
    }
    let init = array(spec, "initContainers", &owner)?;
    let copy_at = init
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(INIT_CONTAINER));
    // The copy runs first, also when another webhook put an init container before it since.
    if let Some(position) = copy_at.filter(|&position| position > 0) {
        let copy = init.remove(position);
        init.insert(0, copy);
    }
    if copy_at.is_none() {
        init.insert(
            0,
            json!({
                "name": INIT_CONTAINER,
                "image": settings.image,
                "command": [contract::IMAGE_BINARY, contract::COPY_COMMAND, DIR],
                "volumeMounts": [{"name": VOLUME, "mountPath": DIR}],
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 65532, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
                },
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}
            }),
        );
    }
    Ok(Injection {
        warnings,
        lookups: Vec::new(),
    })
}

/// Starts one container through the injector: its argv behind the binary, the injector's
/// variables and mounts added. Returns the bytes of argv it copied from the image (0 when the
/// container has its own command).
fn inject_container(
    container: &mut Value,
    name: &str,
    owner: &str,
    env: &[Value],
    mounts: &[Value],
    request: &InjectionRequest,
    entrypoints: &Entrypoints,
) -> Result<usize, Refusal> {
    // For messages only: the pod's author chose its length.
    let name = shown(name, 64);
    let mut from_image = 0;
    let argv = match command_of(container) {
        Some(command) => {
            let mut argv = command;
            if let Some(args) = container.get("args").and_then(Value::as_array) {
                argv.extend(args.iter().cloned());
            }
            argv
        }
        None => {
            let argv = image_argv(container, entrypoints).map_err(|reason| {
                Refusal::Forbidden(format!(
                    "{owner}: container {name:?} has no command, and {reason}; set command (and args) explicitly so the injector knows what to start"
                ))
            })?;
            from_image = argv.iter().map(|arg| arg.to_string().len() + 1).sum();
            argv
        }
    };
    let Some(container) = container.as_object_mut() else {
        return Err(Refusal::Invalid(format!(
            "{owner}: container {name:?} is not an object"
        )));
    };
    container.insert("command".into(), json!([BINARY]));
    container.insert("args".into(), Value::Array(argv));
    let container_owner = format!("{owner}: container {name:?}");
    let container_env = array(container, "env", &container_owner)?;
    for var in env {
        push_unique(container_env, var.clone());
    }
    list_settings(container_env);
    let container_mounts = array(container, "volumeMounts", &container_owner)?;
    for mount in mounts {
        push_unique(container_mounts, mount.clone());
    }
    if request.mutate_probes {
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(command) = container
                .get_mut(probe)
                .and_then(|p| p.get_mut("exec"))
                .and_then(|e| e.get_mut("command"))
                .and_then(Value::as_array_mut)
                .filter(|c| c.first().and_then(Value::as_str) != Some(BINARY))
            {
                command.insert(0, json!(BINARY));
            }
        }
    }
    Ok(from_image)
}

fn already_injected(container: &Value) -> bool {
    container
        .get("command")
        .and_then(|c| c.get(0))
        .and_then(Value::as_str)
        == Some(BINARY)
}

/// The container's own non-empty `command`.
fn command_of(container: &Value) -> Option<Vec<Value>> {
    container
        .get("command")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .cloned()
}

/// What the runtime would start for a container without `command`: the image's ENTRYPOINT
/// followed by the container's `args`, or by the image's CMD when there are none.
fn image_argv(container: &Value, entrypoints: &Entrypoints) -> Result<Vec<Value>, String> {
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let shown_image = shown(image, 200);
    let ImageCommand { entrypoint, cmd } = match entrypoints.get(image) {
        Some(Ok(command)) => command,
        Some(Err(reason)) => {
            return Err(format!(
                "the image's ENTRYPOINT could not be looked up: {reason}"
            ));
        }
        None => {
            return Err(format!(
                "the image {shown_image}'s ENTRYPOINT was not looked up"
            ));
        }
    };
    let args = match container.get("args").and_then(Value::as_array) {
        Some(args) => args.clone(),
        None => cmd.iter().map(|a| json!(a)).collect(),
    };
    let argv: Vec<Value> = entrypoint.iter().map(|a| json!(a)).chain(args).collect();
    if argv.is_empty() {
        return Err(format!(
            "the image {shown_image} has neither ENTRYPOINT nor CMD"
        ));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> InjectorSettings {
        InjectorSettings {
            image: "registry.example.com/ssi-injector:1".into(),
            default_address: Some("https://vault.example.com:8200".into()),
            default_login: Default::default(),
            default_namespace: None,
            default_ca_pem: None,
            token_audience: String::new(),
            registry_lookup: false,
        }
    }

    fn pod(annotations: Value, containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "app", "namespace": "ns", "annotations": annotations},
               "spec": {"containers": containers}})
    }

    fn app(env: Value) -> Value {
        json!({"name": "app", "image": "app:1", "command": ["/app"], "args": ["--serve"], "env": env})
    }

    fn env_of(container: &Value) -> Vec<(String, String)> {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().into(),
                    v["value"].as_str().unwrap_or("").into(),
                )
            })
            .collect()
    }

    /// Injects, checks that the patch reproduces it and that a second pass changes nothing.
    fn injected(mut pod: Value) -> Result<(Value, Vec<String>), Refusal> {
        let original = pod.clone();
        let Injection { warnings, lookups } = inject(&mut pod, &settings(), &Entrypoints::new())?;
        assert!(lookups.is_empty());
        let patch = json_patch::diff(&original, &pod);
        let mut patched = original;
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, pod);
        let mut again = pod.clone();
        inject(&mut again, &settings(), &Entrypoints::new()).unwrap();
        assert_eq!(again, pod, "a second pass must change nothing");
        Ok((pod, warnings))
    }

    #[test]
    fn a_pod_reacting_to_rotations_wires_only_the_containers_that_mount_its_volumes() {
        let mut annotated = pod(
            json!({"secrets-store.deckhouse.io/on-file-change": "signal:SIGHUP",
                   // The store's CA is of no use without a store.
                   "secrets-store.deckhouse.io/tls-secret": "store-ca"}),
            json!([
                {"name": "app", "image": "app:1", "command": ["/app"],
                 "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"},
                                  // Never sees the swap; would break the list.
                                  {"name": "secrets", "mountPath": "/etc/one", "subPath": "db-password"},
                                  {"name": "secrets", "mountPath": "/odd,path"},
                                  {"name": "scratch", "mountPath": "/tmp"}]},
                {"name": "proxy", "image": "proxy:1", "command": ["/proxy"]}
            ]),
        );
        annotated["spec"]["volumes"] = json!([
            {"name": "secrets", "csi": {"driver": "secrets-store.csi.deckhouse.io",
             "volumeAttributes": {"secretsStoreImport": "app"}}},
            {"name": "scratch", "emptyDir": {}}
        ]);
        let (wired, warnings) = injected(annotated).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let first = &wired["spec"]["containers"][0];
        assert_eq!(first["command"], json!([BINARY]));
        assert_eq!(first["args"], json!(["/app"]));
        let env = env_of(first);
        assert!(env.contains(&("SSI_INJECTOR_ON_FILE_CHANGE".into(), "signal:SIGHUP".into())));
        assert!(env.contains(&("SSI_INJECTOR_WATCH_DIRS".into(), "/mnt/secrets".into())));
        // Nothing of the store: no role, no address, no token volume.
        assert!(
            !env.iter()
                .any(|(name, _)| name == "SSI_INJECTOR_ROLE" || name == "SSI_INJECTOR_ADDR"),
            "{env:?}"
        );
        assert!(
            !wired["spec"]["volumes"].to_string().contains("store-ca"),
            "no CA volume without a store"
        );
        assert!(
            !wired["spec"]["volumes"]
                .to_string()
                .contains("serviceAccountToken"),
            "{}",
            wired["spec"]["volumes"]
        );
        let proxy = &wired["spec"]["containers"][1];
        assert_eq!(
            proxy["command"],
            json!(["/proxy"]),
            "it mounts no secrets-store volume"
        );

        // A reaction the injector cannot perform is refused before the pod exists.
        let refusal = injected(pod_with_reaction("signal:SIGKILL")).unwrap_err();
        assert!(
            refusal.to_string().contains("on-file-change")
                && refusal
                    .to_string()
                    .contains("write restart or signal:<name>"),
            "{refusal}"
        );
        // A pod whose containers mount no volume of ours is told so.
        let (_, warnings) = injected(pod(
            json!({"secrets-store.deckhouse.io/on-file-change": "restart"}),
            json!([app(json!([]))]),
        ))
        .unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("no container mounts a secrets-store volume")),
            "{warnings:?}"
        );
    }

    fn pod_with_reaction(reaction: &str) -> Value {
        pod(
            json!({"secrets-store.deckhouse.io/on-file-change": reaction}),
            json!([app(json!([]))]),
        )
    }

    /// A pod's author multiplies what it sends by its containers: names quoted in part,
    /// warnings capped, settings x containers bounded, the skip list bounded.
    #[test]
    fn what_a_pod_multiplies_by_its_containers_is_bounded() {
        let long = "n".repeat(100_000);
        let proxies: Vec<Value> = (0..2000)
            .map(|_| json!({"name": "istio-proxy", "image": "p:1", "envFrom": [{}]}))
            .collect();
        let mut many_proxies = pod(
            json!({"secrets-store.deckhouse.io/role": "r"}),
            json!(proxies),
        );
        many_proxies["metadata"]["name"] = json!(long);
        let Injection { warnings, .. } =
            inject(&mut many_proxies, &settings(), &Entrypoints::new()).unwrap();
        assert!(
            warnings.len() <= MAX_NEVER_INJECTED_WARNINGS + 2,
            "{}",
            warnings.len()
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("1992 more such containers")),
            "{warnings:?}"
        );
        assert!(warnings.iter().all(|w| w.len() < 1024), "a long warning");

        // Settings copied into every app container: a few containers always, many only while
        // the copies stay small.
        let apps = |count: usize| -> Value {
            (0..count)
                .map(|i| json!({"name": format!("c{i}"), "image": "app:1", "command": ["/app"]}))
                .collect()
        };
        let address = format!("https://{}.example.com", "a".repeat(1900));
        let annotations = json!({"secrets-store.deckhouse.io/role": "r",
                                 "secrets-store.deckhouse.io/env-from-path": "secret/data/app",
                                 "secrets-store.deckhouse.io/addr": address});
        injected(pod(annotations.clone(), apps(8))).unwrap();
        let Err(Refusal::Invalid(refused)) = injected(pod(annotations, apps(100))) else {
            panic!("100 copies of 2 KiB of settings were injected");
        };
        assert!(
            refused.contains("injecting 100 containers would copy"),
            "{refused}"
        );
        assert!(refused.len() < 1024, "{refused}");

        // A command read from an image is copied into each container that runs it.
        let image = "registry.example.com/big:1";
        let big = ImageCommand {
            entrypoint: vec!["a".repeat(63); 1024],
            cmd: Vec::new(),
        };
        let entrypoints = Entrypoints::from([(image.to_owned(), Ok(big))]);
        let from_image = |count: usize| {
            let containers: Vec<Value> = (0..count)
                .map(|i| json!({"name": format!("c{i}"), "image": image, "env": [{"name": "X", "value": "secrets-store:s#k"}]}))
                .collect();
            let mut pod = pod(
                json!({"secrets-store.deckhouse.io/role": "r"}),
                json!(containers),
            );
            inject(&mut pod, &settings(), &entrypoints).map(|_| pod)
        };
        from_image(3).unwrap();
        let Err(Refusal::Invalid(refused)) = from_image(10) else {
            panic!("ten copies of a 64 KiB command were injected");
        };
        assert!(
            refused.contains("injecting 10 containers would copy"),
            "{refused}"
        );

        let too_long = json!({"secrets-store.deckhouse.io/role": "r",
                              "secrets-store.deckhouse.io/auth-path": "p".repeat(request::MAX_SETTING_BYTES + 1)});
        let Err(Refusal::Invalid(refused)) = injected(pod(too_long, apps(1))) else {
            panic!("an over-long annotation was taken");
        };
        assert!(refused.contains("longer than 2048 bytes"), "{refused}");

        let names = vec!["x"; request::MAX_SKIPPED_CONTAINERS + 1].join(" ");
        let skips = json!({"secrets-store.deckhouse.io/role": "r",
                           "secrets-store.deckhouse.io/skip-mutate-containers": names});
        let Err(Refusal::Invalid(refused)) = injected(pod(skips, apps(1))) else {
            panic!("an unbounded skip list was taken");
        };
        assert!(refused.contains("more than 64 containers"), "{refused}");
    }

    #[test]
    fn a_container_with_references_starts_through_the_injector() {
        let (pod, warnings) = injected(pod(
            json!({"secrets-store.deckhouse.io/role": "backend", "secrets-store.deckhouse.io/auth-path": "main-kube"}),
            json!([app(json!([{"name": "DB_PASSWORD", "value": "secrets-store:secret/data/db#password"}])),
                   {"name": "sidecar", "image": "proxy:1"}]),
        ))
        .unwrap();
        assert!(warnings.is_empty());
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["command"], json!([BINARY]));
        assert_eq!(container["args"], json!(["/app", "--serve"]));
        let env = env_of(container);
        for expected in [
            ("SSI_INJECTOR_ROLE", "backend"),
            ("SSI_INJECTOR_ADDR", "https://vault.example.com:8200"),
            ("SSI_INJECTOR_AUTH_PATH", "main-kube"),
            (
                "SSI_INJECTOR_TOKEN_PATH",
                "/var/run/secrets/secrets-store/token",
            ),
            ("DB_PASSWORD", "secrets-store:secret/data/db#password"),
        ] {
            assert!(
                env.contains(&(expected.0.into(), expected.1.into())),
                "{expected:?} in {env:?}"
            );
        }
        assert_eq!(
            pod["spec"]["containers"][1],
            json!({"name": "sidecar", "image": "proxy:1"}),
            "no references, untouched"
        );
        let init = &pod["spec"]["initContainers"][0];
        assert_eq!(init["image"], "registry.example.com/ssi-injector:1");
        assert_eq!(init["command"], json!(["/ssi-injector", "copy", DIR]));
        assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true);
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes[0]["emptyDir"]["medium"], "Memory");
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["serviceAccountToken"],
            json!({"expirationSeconds": 3600, "path": "token"}),
            "no audience: the apiserver's own"
        );
    }

    #[test]
    fn a_dedicated_token_audience_is_requested_when_configured() {
        let settings = InjectorSettings {
            token_audience: "vault".into(),
            ..settings()
        };
        assert_eq!(
            projected_token(&settings.token_audience),
            json!({"audience": "vault", "expirationSeconds": 3600, "path": "token"})
        );
    }

    #[test]
    fn env_from_path_reaches_every_container_but_the_skipped_ones() {
        let (pod, _) = injected(pod(
            json!({"secrets-store.deckhouse.io/role": "r", "secrets-store.deckhouse.io/env-from-path": "secret/data/a",
                   "secrets-store.deckhouse.io/skip-mutate-containers": "metrics",
                   "secrets-store.deckhouse.io/service-account-token-path": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                   "secrets-store.deckhouse.io/tls-secret": "vault-ca"}),
            json!([app(json!([])), {"name": "metrics", "image": "m:1", "command": ["/m"]}]),
        ))
        .unwrap();
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["command"], json!([BINARY]));
        let env = env_of(container);
        assert!(env.contains(&("SSI_INJECTOR_ENV_FROM_PATH".into(), "secret/data/a".into())));
        // The injector takes these settings only: none from envFrom.
        let listed = env
            .iter()
            .find(|(name, _)| name == "SSI_INJECTOR_SETTINGS")
            .map(|(_, value)| value.split(',').map(str::to_owned).collect::<Vec<_>>())
            .expect("the settings are listed");
        let settings: Vec<String> = env
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| name.starts_with("SSI_INJECTOR_") && name != "SSI_INJECTOR_SETTINGS")
            .collect();
        assert_eq!(listed, settings);
        assert!(listed.contains(&"SSI_INJECTOR_CA_CERT".to_owned()));
        assert!(!listed.contains(&"SSI_INJECTOR_TLS_SKIP_VERIFY".to_owned()));
        assert!(env.contains(&(
            "SSI_INJECTOR_CA_CERT".into(),
            "/secrets-store-injector-tls/ca.crt".into()
        )));
        assert!(env.contains(&(
            "SSI_INJECTOR_TOKEN_PATH".into(),
            "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
        )));
        assert_eq!(
            pod["spec"]["containers"][1]["command"],
            json!(["/m"]),
            "skipped"
        );
        let volumes: Vec<&str> = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            volumes,
            [VOLUME, TLS_VOLUME],
            "no projected token when the pod names its own"
        );
    }

    #[test]
    fn exec_probes_are_wrapped_only_when_asked() {
        let mut container = app(json!([{"name": "X", "value": "secrets-store:p#k"}]));
        container["livenessProbe"] = json!({"exec": {"command": ["/check"]}});
        container["readinessProbe"] = json!({"httpGet": {"path": "/", "port": 80}});
        let plain = pod(
            json!({"secrets-store.deckhouse.io/role": "r"}),
            json!([container.clone()]),
        );
        let (pod_plain, _) = injected(plain).unwrap();
        assert_eq!(
            pod_plain["spec"]["containers"][0]["livenessProbe"]["exec"]["command"],
            json!(["/check"])
        );
        let probed = pod(
            json!({"secrets-store.deckhouse.io/role": "r", "secrets-store.deckhouse.io/mutate-probes": "true"}),
            json!([container]),
        );
        let (pod_probed, _) = injected(probed).unwrap();
        let container = &pod_probed["spec"]["containers"][0];
        assert_eq!(
            container["livenessProbe"]["exec"]["command"],
            json!([BINARY, "/check"])
        );
        assert_eq!(
            container["readinessProbe"],
            json!({"httpGet": {"path": "/", "port": 80}})
        );
    }

    #[test]
    fn no_role_no_change_and_no_references_a_warning() {
        let untouched = pod(
            json!({}),
            json!([app(json!([{"name": "X", "value": "secrets-store:p#k"}]))]),
        );
        let (result, warnings) = injected(untouched.clone()).unwrap();
        assert_eq!((result, warnings.len()), (untouched, 0));
        let nothing = pod(
            json!({"secrets-store.deckhouse.io/role": "r"}),
            json!([app(json!([{"name": "X", "value": "plain"}]))]),
        );
        let (result, warnings) = injected(nothing.clone()).unwrap();
        assert_eq!(result, nothing);
        assert!(warnings[0].contains("nothing was injected"), "{warnings:?}");
    }

    #[test]
    fn bad_annotations_and_missing_commands_are_denied_with_the_fix() {
        let reference = json!([{"name": "X", "value": "secrets-store:p#k"}]);
        let cases = [
            (
                json!({"secrets-store.deckhouse.io/role": ""}),
                app(reference.clone()),
                "role is empty",
            ),
            (
                json!({"secrets-store.deckhouse.io/role": "r", "secrets-store.deckhouse.io/client-timeout": "10"}),
                app(reference.clone()),
                "client-timeout",
            ),
            (
                json!({"secrets-store.deckhouse.io/role": "r", "secrets-store.deckhouse.io/ignore-missing-secrets": "yes"}),
                app(reference.clone()),
                "write \"true\" or \"false\"",
            ),
            (
                json!({"secrets-store.deckhouse.io/role": "r", "secrets-store.deckhouse.io/addr": "vault:8200"}),
                app(reference.clone()),
                "http(s) URL",
            ),
            (
                json!({"secrets-store.deckhouse.io/role": "r", "secrets-store.deckhouse.io/restart-on-secret-change": "always"}),
                app(reference.clone()),
                "none, watch-for-data or watch-for-lease",
            ),
            (
                json!({"secrets-store.deckhouse.io/role": "r"}),
                json!({"name": "app", "image": "app:1", "env": reference}),
                "has no command",
            ),
        ];
        for (annotations, container, expected) in cases {
            let mut pod = pod(annotations, json!([container]));
            let refusal = inject(&mut pod, &settings(), &Entrypoints::new()).unwrap_err();
            let error = refusal.message();
            assert!(
                error.contains(expected) && error.starts_with("Pod app:"),
                "{expected}: {error}"
            );
            // What cannot be read as written is invalid; the rest is the webhook's policy.
            let policy = expected == "has no command";
            assert_eq!(
                matches!(refusal, Refusal::Forbidden(_)),
                policy,
                "{expected}: {refusal:?}"
            );
        }
    }

    #[test]
    fn references_from_config_maps_and_secrets_get_the_injector() {
        let from_config_map = app(json!([]));
        let mut from_config_map = from_config_map;
        from_config_map["envFrom"] = json!([{"configMapRef": {"name": "app-env"}}]);
        let key_ref =
            app(json!([{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]));
        let field_ref = app(
            json!([{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]),
        );
        for (container, injected_expected) in
            [(from_config_map, true), (key_ref, true), (field_ref, false)]
        {
            let (pod, _) = injected(pod(
                json!({"secrets-store.deckhouse.io/role": "r"}),
                json!([container]),
            ))
            .unwrap();
            let command = &pod["spec"]["containers"][0]["command"];
            assert_eq!(command == &json!([BINARY]), injected_expected, "{command}");
        }
    }

    #[test]
    fn watch_modes_reach_the_injector() {
        let reference = json!([{"name": "X", "value": "secrets-store:p#k"}]);
        let (pod_data, warnings) = injected(pod(
            json!({"secrets-store.deckhouse.io/role": "r",
                   "secrets-store.deckhouse.io/restart-on-secret-change": "watch-for-data",
                   "secrets-store.deckhouse.io/secret-poll-interval": "30s"}),
            json!([app(reference.clone())]),
        ))
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let env = env_of(&pod_data["spec"]["containers"][0]);
        assert!(env.contains(&("SSI_INJECTOR_MODE".into(), "watch-for-data".into())));
        assert!(env.contains(&("SSI_INJECTOR_POLL_INTERVAL".into(), "30s".into())));

        let (pod_lease, warnings) = injected(pod(
            json!({"secrets-store.deckhouse.io/role": "r",
                   "secrets-store.deckhouse.io/restart-on-secret-change": "watch-for-lease",
                   "secrets-store.deckhouse.io/secret-poll-interval": "30s"}),
            json!([app(reference.clone())]),
        ))
        .unwrap();
        assert!(
            warnings[0].contains("secret-poll-interval has no effect"),
            "{warnings:?}"
        );
        let env = env_of(&pod_lease["spec"]["containers"][0]);
        assert!(env.contains(&("SSI_INJECTOR_MODE".into(), "watch-for-lease".into())));
        assert!(
            !env.iter()
                .any(|(name, _)| name == "SSI_INJECTOR_POLL_INTERVAL")
        );

        let mut bad = pod(
            json!({"secrets-store.deckhouse.io/role": "r",
                   "secrets-store.deckhouse.io/restart-on-secret-change": "watch-for-data",
                   "secrets-store.deckhouse.io/secret-poll-interval": "often"}),
            json!([app(reference)]),
        );
        let error = inject(&mut bad, &settings(), &Entrypoints::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("secret-poll-interval"), "{error}");
    }

    #[test]
    fn containers_without_command_start_what_their_image_would() {
        let reference = json!([{"name": "X", "value": "secrets-store:p#k"}]);
        let annotations = json!({"secrets-store.deckhouse.io/role": "r"});
        let lookup_on = InjectorSettings {
            registry_lookup: true,
            ..settings()
        };
        let containers = json!([
            {"name": "plain", "image": "registry.example.com/app:1", "env": reference},
            {"name": "with-args", "image": "registry.example.com/app:1", "args": ["--debug"], "env": reference},
            {"name": "cmd-only", "image": "registry.example.com/tool:2", "env": reference},
        ]);
        // First pass: nothing changes, the two distinct images are asked for.
        let mut first = pod(annotations.clone(), containers.clone());
        let untouched = first.clone();
        let injection = inject(&mut first, &lookup_on, &Entrypoints::new()).unwrap();
        assert_eq!(first, untouched);
        assert_eq!(
            injection.lookups,
            ["registry.example.com/app:1", "registry.example.com/tool:2"]
        );
        // Second pass with the answers: ENTRYPOINT + (args or CMD), as the runtime would run.
        let answers: Entrypoints = [
            (
                "registry.example.com/app:1".to_owned(),
                Ok(ImageCommand {
                    entrypoint: vec!["/bin/app".into()],
                    cmd: vec!["--serve".into()],
                }),
            ),
            (
                "registry.example.com/tool:2".to_owned(),
                Ok(ImageCommand {
                    entrypoint: vec![],
                    cmd: vec!["/bin/tool".into(), "run".into()],
                }),
            ),
        ]
        .into_iter()
        .collect();
        let mut second = pod(annotations.clone(), containers.clone());
        let injection = inject(&mut second, &lookup_on, &answers).unwrap();
        assert!(injection.lookups.is_empty() && injection.warnings.is_empty());
        let args: Vec<&Value> = (0..3)
            .map(|i| &second["spec"]["containers"][i]["args"])
            .collect();
        assert_eq!(args[0], &json!(["/bin/app", "--serve"]));
        assert_eq!(args[1], &json!(["/bin/app", "--debug"]));
        assert_eq!(args[2], &json!(["/bin/tool", "run"]));
        let mut again = second.clone();
        inject(&mut again, &lookup_on, &Entrypoints::new()).unwrap();
        assert_eq!(again, second, "an injected Pod needs no lookup");

        // A failed lookup and an image with nothing to start are denied, naming the fix.
        let failed: Entrypoints = [
            (
                "registry.example.com/app:1".to_owned(),
                Err("image registry.example.com/app:1: the registry registry.example.com refused access (not authorized)".to_owned()),
            ),
            (
                "registry.example.com/tool:2".to_owned(),
                Ok(ImageCommand::default()),
            ),
        ]
        .into_iter()
        .collect();
        let mut denied = pod(annotations.clone(), json!([containers[0]]));
        let error = inject(&mut denied, &lookup_on, &failed)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "could not be looked up: image registry.example.com/app:1: the registry registry.example.com refused access (not authorized)"
            ) && error.contains("set command"),
            "{error}"
        );
        let mut empty = pod(annotations.clone(), json!([containers[2]]));
        let error = inject(&mut empty, &lookup_on, &failed)
            .unwrap_err()
            .to_string();
        assert!(error.contains("neither ENTRYPOINT nor CMD"), "{error}");

        // The pod's author picks how many images there are; one review asks for a few at most.
        let many: Vec<Value> = (0..=IMAGE_LOOKUPS_PER_POD)
            .map(|i| json!({"name": format!("c{i}"), "image": format!("registry.example.com/app-{i}:1"), "env": reference}))
            .collect();
        let mut crowded = pod(annotations.clone(), Value::Array(many.clone()));
        let untouched = crowded.clone();
        let error = inject(&mut crowded, &lookup_on, &Entrypoints::new())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("more than {IMAGE_LOOKUPS_PER_POD} images"))
                && error.contains("set command"),
            "{error}"
        );
        assert_eq!(crowded, untouched);
        let mut enough = pod(
            annotations,
            Value::Array(many[..IMAGE_LOOKUPS_PER_POD].to_vec()),
        );
        let injection = inject(&mut enough, &lookup_on, &Entrypoints::new()).unwrap();
        assert_eq!(injection.lookups.len(), IMAGE_LOOKUPS_PER_POD);
    }

    #[test]
    fn init_containers_are_injected_in_order_after_the_copy() {
        let reference = json!([{"name": "X", "value": "secrets-store:p#k"}]);
        let mut pod = pod(
            json!({"secrets-store.deckhouse.io/role": "r"}),
            json!([app(reference.clone())]),
        );
        pod["spec"]["initContainers"] = json!([
            {"name": "migrate", "image": "m:1", "command": ["/migrate"], "env": reference},
            {"name": "istio-init", "image": "proxyv2", "command": ["/init"], "env": reference},
        ]);
        let (pod, _) = injected(pod).unwrap();
        let init = &pod["spec"]["initContainers"];
        assert_eq!(init[0]["name"], INIT_CONTAINER, "the copy runs first");
        assert_eq!(init[1]["name"], "migrate");
        assert_eq!(init[1]["command"], json!([BINARY]));
        assert_eq!(init[1]["args"], json!(["/migrate"]));
        assert_eq!(
            init[2]["command"],
            json!(["/init"]),
            "the mesh's own stays as is"
        );
    }

    #[test]
    fn init_containers_run_once_and_env_from_path_is_for_the_app() {
        let reference = json!([{"name": "X", "value": "secrets-store:p#k"}]);
        let mut watched = pod(
            json!({"secrets-store.deckhouse.io/role": "r",
                   "secrets-store.deckhouse.io/restart-on-secret-change": "watch-for-data",
                   "secrets-store.deckhouse.io/env-from-path": "secret/data/app"}),
            json!([app(json!([]))]),
        );
        watched["spec"]["initContainers"] = json!([
            {"name": "migrate", "image": "m:1", "command": ["/migrate"], "env": reference},
            {"name": "sidecar", "image": "s:1", "command": ["/proxy"], "env": reference, "restartPolicy": "Always"},
            {"name": "setup", "image": "s:1", "command": ["/setup"]},
        ]);
        let (watched, _) = injected(watched).unwrap();
        let init = &watched["spec"]["initContainers"];
        let mode = |container: &Value| {
            env_of(container)
                .into_iter()
                .any(|(name, _)| name == "SSI_INJECTOR_MODE")
        };
        assert!(!mode(&init[1]), "a plain init container is not supervised");
        assert!(mode(&init[2]), "a native sidecar is");
        assert_eq!(
            init[3]["command"],
            json!(["/setup"]),
            "env-from-path is for the app"
        );
        assert!(mode(&watched["spec"]["containers"][0]));

        // Another webhook put an init container first since: the copy goes back in front.
        let mut reordered = watched.clone();
        let copy = reordered["spec"]["initContainers"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        reordered["spec"]["initContainers"]
            .as_array_mut()
            .unwrap()
            .push(copy);
        inject(&mut reordered, &settings(), &Entrypoints::new()).unwrap();
        assert_eq!(
            reordered["spec"]["initContainers"][0]["name"],
            INIT_CONTAINER
        );
    }

    #[test]
    fn deckhouse_skip_lists_opt_out_label_and_cluster_defaults() {
        let reference = json!([{"name": "X", "value": "secrets-store:p#k"}]);
        let named =
            |name: &str| json!({"name": name, "image": "a:1", "command": ["/a"], "env": reference});
        let containers = json!([
            named("app"),
            named("side-a"),
            named("side-b"),
            named("istio-proxy")
        ]);
        // Deckhouse separates skipped names by spaces; the mesh's proxy is always skipped.
        let (pod_out, _) = injected(pod(
            json!({"secrets-store.deckhouse.io/role": "r",
                   "secrets-store.deckhouse.io/skip-mutate-containers": "side-a side-b"}),
            containers.clone(),
        ))
        .unwrap();
        let commands: Vec<&Value> = (0..4)
            .map(|i| &pod_out["spec"]["containers"][i]["command"])
            .collect();
        assert_eq!(commands[0], &json!([BINARY]));
        for skipped in &commands[1..] {
            assert_eq!(*skipped, &json!(["/a"]));
        }

        // The Deckhouse webhook's opt-out label, and ours: no injection at all.
        for label in [
            json!({"stronghold.deckhouse.io/mutate": "skip"}),
            json!({"secrets-store.deckhouse.io/webhook": "disabled"}),
        ] {
            let mut labelled = pod(
                json!({"secrets-store.deckhouse.io/role": "r"}),
                containers.clone(),
            );
            labelled["metadata"]["labels"] = label;
            let untouched = labelled.clone();
            inject(&mut labelled, &settings(), &Entrypoints::new()).unwrap();
            assert_eq!(labelled, untouched);
        }
        // A mesh container with references is warned about: it gets them as text.
        let mut meshed = pod(json!({"secrets-store.deckhouse.io/role": "r"}), containers);
        let Injection { warnings, .. } =
            inject(&mut meshed, &settings(), &Entrypoints::new()).unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("\"istio-proxy\" is never injected")),
            "{warnings:?}"
        );

        // Cluster-wide defaults fill what the pod leaves out; the pod's annotations win.
        let defaults = InjectorSettings {
            default_login: ssi_core::LoginDefaults {
                method: ssi_core::AuthMethod::Kubernetes,
                mount: Some("main-kube".into()),
            },
            default_namespace: Some("team".into()),
            default_ca_pem: Some(
                "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n".into(),
            ),
            ..settings()
        };
        let env_with = |annotations: Value| {
            let mut pod = pod(annotations, json!([app(reference.clone())]));
            inject(&mut pod, &defaults, &Entrypoints::new()).unwrap();
            env_of(&pod["spec"]["containers"][0])
        };
        let env = env_with(json!({"secrets-store.deckhouse.io/role": "r"}));
        assert!(
            env.contains(&("SSI_INJECTOR_AUTH_PATH".into(), "main-kube".into())),
            "{env:?}"
        );
        assert!(
            env.contains(&("SSI_INJECTOR_NAMESPACE".into(), "team".into())),
            "{env:?}"
        );
        assert!(
            env.iter().any(|(name, value)| name == "SSI_INJECTOR_CA_PEM"
                && value.contains("BEGIN CERTIFICATE"))
        );
        let own_pem = "-----BEGIN CERTIFICATE-----\nMAMCAQI=\n-----END CERTIFICATE-----\n";
        let env = env_with(json!({"secrets-store.deckhouse.io/role": "r",
            "secrets-store.deckhouse.io/auth-path": "other",
            "secrets-store.deckhouse.io/cacert_bytes": own_pem}));
        assert!(
            env.contains(&("SSI_INJECTOR_AUTH_PATH".into(), "other".into())),
            "{env:?}"
        );
        assert!(
            env.contains(&("SSI_INJECTOR_CA_PEM".into(), own_pem.into())),
            "{env:?}"
        );
        // A pod that names jwt logs in at jwt's own mount, not at the Kubernetes method's
        // default mount; one that names no method known is refused, naming the choices.
        let env = env_with(json!({"secrets-store.deckhouse.io/role": "r",
            "secrets-store.deckhouse.io/auth-method": "jwt"}));
        assert!(
            env.contains(&("SSI_INJECTOR_AUTH_METHOD".into(), "jwt".into()))
                && env.contains(&("SSI_INJECTOR_AUTH_PATH".into(), "jwt".into())),
            "{env:?}"
        );
        let mut oidc = pod(
            json!({"secrets-store.deckhouse.io/role": "r",
                   "secrets-store.deckhouse.io/auth-method": "oidc"}),
            json!([app(reference.clone())]),
        );
        let refusal = inject(&mut oidc, &defaults, &Entrypoints::new()).unwrap_err();
        assert!(
            refusal
                .to_string()
                .contains("auth-method is \"oidc\"; write kubernetes or jwt"),
            "{refusal}"
        );
        // A CA that is no PEM, or too large for an environment variable, is refused here rather
        // than in a crash-looping container.
        for bad in ["pod's own PEM".to_owned(), own_pem.repeat(2000)] {
            let mut pod = pod(
                json!({"secrets-store.deckhouse.io/role": "r",
                       "secrets-store.deckhouse.io/cacert_bytes": bad}),
                json!([app(reference.clone())]),
            );
            let refusal = inject(&mut pod, &defaults, &Entrypoints::new()).unwrap_err();
            assert!(matches!(refusal, Refusal::Invalid(_)), "{refusal:?}");
            assert!(refusal.message().contains("cacert_bytes"), "{refusal:?}");
        }
        // A mounted CA file wins over any PEM.
        let env = env_with(json!({"secrets-store.deckhouse.io/role": "r",
            "secrets-store.deckhouse.io/tls-secret": "store-ca"}));
        assert!(env.iter().any(|(name, _)| name == "SSI_INJECTOR_CA_CERT"));
        assert!(
            !env.iter().any(|(name, _)| name == "SSI_INJECTOR_CA_PEM"),
            "{env:?}"
        );
    }
}

//! An in-process fake of the Kubernetes API server, for tests of everything that talks to
//! Kubernetes through kube-rs.
//!
//! [`FakeApi`] is a `tower::Service` that [`kube::Client::new`] takes in place of an HTTP
//! connection, so the code under test runs unchanged: typed and dynamic `Api`s, the
//! `watcher` with its relists and backoff, the event `Recorder`. A test drives the cluster
//! from the other side ([`FakeApi::apply`], [`FakeApi::delete`]) and breaks it the ways a
//! real one breaks: an outage ([`FakeApi::set_down`]), history compacted under a watch
//! ([`FakeApi::compact`]), bookmarks ([`FakeApi::bookmark`]).
//!
//! It is written by hand because nothing else can stand in here: no kube-apiserver (nor
//! etcd) binary can be had on the machines this project builds on, and kube-rs ships a
//! client only, with no in-process server to test against. So the fake keeps to the wire
//! protocol that kube-rs and client-go rely on, and says where it follows the API server's
//! documented behaviour (API concepts, "Efficient detection of changes", "Resource
//! versions", "Retrieving large results sets in chunks"):
//!
//! - One global resource version counter, as etcd's revision: every write bumps it, every
//!   object carries the version of its last write, a list carries the version it was read
//!   at, a delete is a write too (the `DELETED` event carries the new version).
//! - Lists are ordered by namespace then name, paginated with `limit` and an opaque
//!   `continue` token that expires (410 `Expired`) once its version is compacted.
//! - Watches stream newline-delimited events: the backlog after the requested version
//!   from history, then live ones. A version older than the last compaction gets HTTP 200
//!   and a single `ERROR` event with a 410 `Expired` Status, then the end of the stream.
//!   A watch from version "0" or none starts with synthetic `ADDED` events for the current
//!   objects ("the watch begins with synthetic Added events of all resources instances
//!   that exist at the starting resource version"); `sendInitialEvents=true` does the same
//!   and closes the initial state with a bookmark annotated `k8s.io/initial-events-end`.
//! - Label selectors (equality and set forms) and field selectors (`=`, `==`, `!=` on any
//!   dotted path, such as `metadata.name` or `spec.nodeName`) filter lists and watches; an
//!   object that leaves a watch's selector is seen as `DELETED`, one that enters as `ADDED`.
//! - Writes: create (409 `AlreadyExists`), replace with optimistic concurrency (409
//!   `Conflict` when the body's `metadata.resourceVersion` is stale), JSON merge patch
//!   (RFC 7386), delete. The `status` subresource exists for the kinds that have one, and
//!   updates through the main resource keep their stored status.
//! - Errors are `Status` objects with the API server's reasons and messages, so kube-rs
//!   surfaces them as `kube::Error::Api`.
//!
//! Known simplifications, none of which kube-rs's watcher or our controllers depend on:
//! deletion is immediate (no finalizers, no grace period, no cascading), namespaces need
//! not exist before objects are created in them, nothing is validated beyond names, a
//! strategic merge patch is applied as a JSON merge patch (lists are replaced, not merged
//! by key), a server-side apply patch is applied as a merge patch that creates the object
//! when absent (no field managers), and a continued list page shows the current objects
//! rather than a snapshot at the token's version (it reports the token's version, so a
//! watch from there replays whatever changed meanwhile: at least once, never lost).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

/// The response body type of [`FakeApi`]: whole for plain requests, streaming for watches.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A fake Kubernetes API server. Clones share one cluster.
#[derive(Clone, Debug, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// An empty cluster at resource version 0, up.
    pub fn new() -> FakeApi {
        FakeApi::default()
    }

    /// A kube client talking to this server, with "default" as its default namespace.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Creates or replaces an object given as JSON with `apiVersion`, `kind`,
    /// `metadata.name` (and `metadata.namespace` for namespaced kinds), whatever its
    /// `metadata.resourceVersion`. Assigns the next resource version, sets
    /// `metadata.resourceVersion` (and `uid`, `creationTimestamp` and `generation` on
    /// create) and tells the watchers (`ADDED` or `MODIFIED`). Works while down too: the
    /// cluster changes behind the outage. Returns the new resource version.
    ///
    /// # Errors
    ///
    /// A kind this server does not serve, a missing name, a missing namespace for a
    /// namespaced kind or one given for a cluster-scoped kind.
    pub fn apply(&self, object: Value) -> Result<u64, String> {
        let api_version = object["apiVersion"]
            .as_str()
            .ok_or("apiVersion is missing")?;
        let kind = object["kind"].as_str().ok_or("kind is missing")?;
        let resource = resource_by_kind(api_version, kind)
            .ok_or_else(|| format!("this server does not serve {kind} in {api_version}"))?;
        let name = object["metadata"]["name"]
            .as_str()
            .filter(|name| !name.is_empty())
            .ok_or("metadata.name is missing")?;
        let namespace = object["metadata"]["namespace"].as_str();
        let key = match (RESOURCES[resource].namespaced, namespace) {
            (true, Some(namespace)) if !namespace.is_empty() => {
                (namespace.to_string(), name.to_string())
            }
            (true, _) => {
                return Err(format!(
                    "{kind} is namespaced: metadata.namespace is missing"
                ))
            }
            (false, None | Some("")) => (String::new(), name.to_string()),
            (false, Some(_)) => {
                return Err(format!(
                    "{kind} is cluster-scoped: remove metadata.namespace"
                ))
            }
        };
        let mut state = self.lock();
        let object = match state.objects[resource].get(&key) {
            Some(stored) => carry_system_fields(stored, object),
            None => state.stamp_new(object),
        };
        Ok(state.commit(resource, key, Some(object)))
    }

    /// Deletes an object and tells the watchers (`DELETED`, with its last state at a new
    /// resource version). Returns that version, or `None` when there was no such object
    /// (or no such kind).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<u64> {
        let resource = resource_by_kind(api_version, kind)?;
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        let mut state = self.lock();
        state.objects[resource]
            .contains_key(&key)
            .then(|| state.commit(resource, key, None))
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let resource = resource_by_kind(api_version, kind)?;
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        self.lock().objects[resource].get(&key).cloned()
    }

    /// The cluster's current resource version: that of the last write.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Starts or ends an outage. While down every request gets 503 `ServiceUnavailable`,
    /// and going down closes every open watch stream. [`FakeApi::apply`] and
    /// [`FakeApi::delete`] still work, so a client must catch up when it comes back.
    pub fn set_down(&self, down: bool) {
        let mut state = self.lock();
        state.down = down;
        if down {
            state.watches.clear();
        }
    }

    /// Compacts history up to the current resource version, as etcd's compaction: a
    /// watch or a continued list from an older version gets 410 `Expired`. Open watches
    /// whose position (the last version their client saw, from an event or a bookmark, or
    /// the version they started from) is older get that `ERROR` event and are closed,
    /// as their client could not resume from there any more.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.resource_version;
        state.history.clear();
        let compacted = state.compacted;
        state.watches.retain(|watch| {
            if watch.position < compacted {
                let _ = watch.sender.send(watch_line(
                    "ERROR",
                    &expired_status(watch.position, compacted),
                ));
                false
            } else {
                true
            }
        });
    }

    /// Sends a `BOOKMARK` event at the current resource version to every open watch that
    /// asked for bookmarks (`allowWatchBookmarks=true`).
    pub fn bookmark(&self) {
        let mut state = self.lock();
        let resource_version = state.resource_version;
        state.watches.retain_mut(|watch| {
            if !watch.bookmarks {
                return !watch.sender.is_closed();
            }
            watch.position = resource_version;
            let object = bookmark_object(watch.resource, resource_version, false);
            watch.sender.send(watch_line("BOOKMARK", &object)).is_ok()
        });
    }

    /// The stored events, core v1 `events` and `events.k8s.io/v1` alike, as JSON.
    pub fn events(&self) -> Vec<Value> {
        let state = self.lock();
        RESOURCES
            .iter()
            .enumerate()
            .filter(|(_, resource)| resource.plural == "events")
            .flat_map(|(index, _)| state.objects[index].values().cloned())
            .collect()
    }

    /// How many requests (also those refused while down) had a "METHOD path" (path
    /// without query) starting with `method_and_path_prefix`, e.g. "GET /api/v1/pods".
    pub fn request_count(&self, method_and_path_prefix: &str) -> usize {
        let state = self.lock();
        state
            .requests
            .iter()
            .filter(|request| request.method_and_path.starts_with(method_and_path_prefix))
            .count()
    }

    /// How many requests had the API server's `verb` (get, list, watch, create, update,
    /// patch, delete: GET on a collection is a list or a watch) and a path starting with
    /// `path_prefix`, e.g. `verb_count("list", "/api/v1/pods")` to see a relist.
    pub fn verb_count(&self, verb: &str, path_prefix: &str) -> usize {
        let state = self.lock();
        state
            .requests
            .iter()
            .filter(|request| {
                request.verb == verb
                    && request
                        .method_and_path
                        .split_once(' ')
                        .is_some_and(|(_, path)| path.starts_with(path_prefix))
            })
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one request whose body has been read.
    fn serve(
        &self,
        method: &Method,
        uri: &http::Uri,
        content_type: &str,
        body: &[u8],
    ) -> Response<ResponseBody> {
        let path = uri.path();
        let query = Query::parse(uri.query().unwrap_or_default());
        let target = Target::parse(path);
        let verb = match (method, target.as_ref().map(|target| target.name.is_some())) {
            (&Method::GET, Some(false)) if query.flag("watch") => "watch",
            (&Method::GET, Some(false)) => "list",
            (&Method::GET, _) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "",
        };
        let mut state = self.lock();
        state.requests.push(Served {
            method_and_path: format!("{method} {path}"),
            verb,
        });
        if state.down {
            return ApiError::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request".into(),
            )
            .response();
        }
        if path == "/version" && method == Method::GET {
            return json_response(StatusCode::OK, &version_info());
        }
        let Some(target) = target else {
            return ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            )
            .response();
        };
        let result = match (method, target.name.is_some()) {
            (&Method::GET, false) if query.flag("watch") => state.watch(&target, &query),
            (&Method::GET, false) => state.list(&target, &query),
            (&Method::GET, true) => state.read(&target),
            (&Method::POST, false) => state.create(&target, body),
            (&Method::PUT, true) => state.replace(&target, body),
            (&Method::PATCH, true) => state.patch(&target, content_type, body),
            (&Method::DELETE, true) => state.remove(&target, body),
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource: {method} {path}"),
            )),
        };
        result.unwrap_or_else(|error| error.response())
    }
}

impl tower::Service<Request<kube::client::Body>> for FakeApi {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let message = format!("reading the request body: {error}");
                    return Ok(ApiError::new(400, "BadRequest", message).response());
                }
            };
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            Ok(api.serve(&parts.method, &parts.uri, content_type, &body))
        })
    }
}

/// One kind of object the server serves.
#[derive(Debug)]
struct ResourceType {
    /// The API group, "" for core.
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Whether writes to `status` go through the `status` subresource only.
    status_subresource: bool,
}

impl ResourceType {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// As the API server names a resource in messages: `pods`, `networkpolicies.weir.dev`.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn resource(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status_subresource: bool,
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        status_subresource,
    }
}

/// Everything served. Stored objects are keyed by their index here, so that the two
/// `NetworkPolicy` kinds (networking.k8s.io and weir.dev) stay apart.
const RESOURCES: &[ResourceType] = &[
    resource("", "namespaces", "Namespace", false, true),
    resource("", "pods", "Pod", true, true),
    resource("", "nodes", "Node", false, true),
    resource("", "services", "Service", true, true),
    resource("", "serviceaccounts", "ServiceAccount", true, false),
    resource("", "events", "Event", true, false),
    resource(
        "networking.k8s.io",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
    ),
    resource(
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    resource("events.k8s.io", "events", "Event", true, false),
    resource("weir.dev", "networkpolicies", "NetworkPolicy", true, false),
    resource(
        "weir.dev",
        "globalnetworkpolicies",
        "GlobalNetworkPolicy",
        false,
        false,
    ),
    resource("weir.dev", "tiers", "Tier", false, false),
    resource("weir.dev", "networksets", "NetworkSet", true, false),
    resource(
        "weir.dev",
        "globalnetworksets",
        "GlobalNetworkSet",
        false,
        false,
    ),
    resource("weir.dev", "ippools", "IPPool", false, false),
    resource("weir.dev", "hostendpoints", "HostEndpoint", false, false),
    resource("weir.dev", "ipamblocks", "IPAMBlock", false, false),
];

fn resource_by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|resource| resource.api_version() == api_version && resource.kind == kind)
}

fn resource_by_plural(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES.iter().position(|resource| {
        resource.group == group && resource.version == version && resource.plural == plural
    })
}

/// (namespace, "" for cluster-scoped; name): the order of lists.
type Key = (String, String);

#[derive(Debug, Default)]
struct State {
    resource_version: u64,
    /// History up to and including this version is gone.
    compacted: u64,
    down: bool,
    objects: [BTreeMap<Key, Value>; RESOURCES.len()],
    /// Every write after `compacted`, oldest first.
    history: Vec<Change>,
    watches: Vec<Watch>,
    requests: Vec<Served>,
    /// Objects created so far, for `uid` and `generateName`.
    created: u64,
}

/// A request, as [`FakeApi::request_count`] and [`FakeApi::verb_count`] count them.
#[derive(Debug)]
struct Served {
    /// "METHOD path", without the query.
    method_and_path: String,
    /// The API server's verb: get, list, watch, create, update, patch or delete.
    verb: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
struct Change {
    resource_version: u64,
    resource: usize,
    change: ChangeType,
    /// The new state; for a deletion the last state, at the deletion's version.
    object: Value,
    /// The state before, for a modification (selectors need it).
    previous: Option<Value>,
}

/// Which objects of a resource a list or watch is about.
#[derive(Debug)]
struct Filter {
    namespace: Option<String>,
    selector: Selector,
}

impl Filter {
    fn new(target: &Target, query: &Query) -> Result<Filter, ApiError> {
        Ok(Filter {
            namespace: target.namespace.clone(),
            selector: Selector::parse(query)?,
        })
    }

    fn selects(&self, object: &Value) -> bool {
        let namespace_matches = self
            .namespace
            .as_deref()
            .is_none_or(|namespace| object["metadata"]["namespace"].as_str() == Some(namespace));
        namespace_matches && self.selector.selects(object)
    }
}

#[derive(Debug)]
struct Watch {
    resource: usize,
    filter: Filter,
    bookmarks: bool,
    /// The last version the client saw: where it would resume from.
    position: u64,
    sender: mpsc::UnboundedSender<Bytes>,
}

impl Watch {
    /// What this watch is told of a change: `ADDED`, `MODIFIED`, `DELETED` or nothing.
    /// "If the object's labels change so that it no longer matches the selector, the
    /// watch sees a DELETED event" (and an `ADDED` one when it starts to match).
    fn event_for(&self, change: &Change) -> Option<&'static str> {
        if change.resource != self.resource {
            return None;
        }
        let matches = |object: &Value| self.filter.selects(object);
        let (before, after) = match change.change {
            ChangeType::Added => (false, matches(&change.object)),
            ChangeType::Modified => (
                change.previous.as_ref().is_some_and(matches),
                matches(&change.object),
            ),
            ChangeType::Deleted => (matches(&change.object), false),
        };
        match (before, after) {
            (false, true) => Some("ADDED"),
            (true, true) => Some("MODIFIED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        }
    }

    /// Sends one event; false once the client has gone.
    fn send(&mut self, event_type: &str, object: &Value, resource_version: u64) -> bool {
        self.position = self.position.max(resource_version);
        self.sender.send(watch_line(event_type, object)).is_ok()
    }
}

impl State {
    /// Records a write (`Some` object: create or replace; `None`: delete) at the next
    /// resource version, and tells the watches. Returns that version.
    fn commit(&mut self, resource: usize, key: Key, object: Option<Value>) -> u64 {
        self.resource_version += 1;
        let resource_version = self.resource_version;
        let previous = self.objects[resource].remove(&key);
        let (change, object) = match object {
            Some(mut object) => {
                object["metadata"]["resourceVersion"] = resource_version.to_string().into();
                self.objects[resource].insert(key, object.clone());
                let change = if previous.is_some() {
                    ChangeType::Modified
                } else {
                    ChangeType::Added
                };
                (change, object)
            }
            None => {
                let mut object = previous.clone().unwrap_or_default();
                object["metadata"]["resourceVersion"] = resource_version.to_string().into();
                (ChangeType::Deleted, object)
            }
        };
        let change = Change {
            resource_version,
            resource,
            change,
            object,
            previous,
        };
        self.watches
            .retain_mut(|watch| match watch.event_for(&change) {
                Some(event_type) => watch.send(event_type, &change.object, resource_version),
                None => !watch.sender.is_closed(),
            });
        self.history.push(change);
        resource_version
    }

    /// Sets what the server sets on create: `uid`, `creationTimestamp`, `generation`.
    fn stamp_new(&mut self, mut object: Value) -> Value {
        self.created += 1;
        let metadata = &mut object["metadata"];
        metadata["uid"] = format!("00000000-0000-4000-8000-{:012x}", self.created).into();
        metadata["creationTimestamp"] = now_rfc3339().into();
        metadata["generation"] = 1.into();
        object
    }

    fn stored(&self, target: &Target) -> Result<&Value, ApiError> {
        self.objects[target.resource]
            .get(&target.key())
            .ok_or_else(|| ApiError::not_found(target))
    }

    fn read(&self, target: &Target) -> Result<Response<ResponseBody>, ApiError> {
        Ok(json_response(StatusCode::OK, self.stored(target)?))
    }

    /// GET on a collection. "Retrieving large results sets in chunks": `limit` caps the
    /// page, `continue` resumes after the last key of the previous page and expires with
    /// compaction.
    fn list(&self, target: &Target, query: &Query) -> Result<Response<ResponseBody>, ApiError> {
        let filter = Filter::new(target, query)?;
        let resource = &RESOURCES[target.resource];
        let (list_version, after) = match query.get("continue").filter(|token| !token.is_empty()) {
            Some(token) => {
                let (version, key) = decode_continue(token).ok_or_else(|| {
                    ApiError::new(400, "BadRequest", "continue key is not valid".into())
                })?;
                if version < self.compacted {
                    return Err(ApiError::new(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue \
                         parameter, or use the continue parameter in the response."
                            .into(),
                    ));
                }
                (version, Some(key))
            }
            None => (self.resource_version, None),
        };
        let limit = match query.get("limit") {
            Some(limit) => limit.parse::<usize>().map_err(|_| {
                ApiError::new(400, "BadRequest", format!("limit: invalid value {limit:?}"))
            })?,
            None => 0,
        };
        let matching = self.objects[target.resource]
            .iter()
            .filter(|(key, object)| {
                after.as_ref().is_none_or(|after| *key > after) && filter.selects(object)
            });
        let mut items = Vec::new();
        let mut more = false;
        for (_, object) in matching {
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push(object.clone());
        }
        let mut metadata = json!({ "resourceVersion": list_version.to_string() });
        if more {
            let last = items.last().map(key_of).unwrap_or_default();
            metadata["continue"] = encode_continue(list_version, &last).into();
        }
        let list = json!({
            "apiVersion": resource.api_version(),
            "kind": format!("{}List", resource.kind),
            "metadata": metadata,
            "items": items,
        });
        Ok(json_response(StatusCode::OK, &list))
    }

    /// GET with `watch=true`: registers a watch and answers with its event stream.
    fn watch(
        &mut self,
        target: &Target,
        query: &Query,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let filter = Filter::new(target, query)?;
        let bookmarks = query.flag("allowWatchBookmarks");
        let initial_events = query.flag("sendInitialEvents");
        if initial_events && !bookmarks {
            return Err(ApiError::new(
                422,
                "Invalid",
                "allowWatchBookmarks: Forbidden: sendInitialEvents requires \
                 allowWatchBookmarks=true"
                    .into(),
            ));
        }
        let timeout = match query.get("timeoutSeconds") {
            Some(seconds) => seconds.parse::<u64>().map_err(|_| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("timeoutSeconds: invalid value {seconds:?}"),
                )
            })?,
            None => DEFAULT_WATCH_TIMEOUT_SECONDS,
        };
        let from = match query
            .get("resourceVersion")
            .filter(|version| !version.is_empty())
        {
            None | Some("0") => None,
            Some(version) => Some(version.parse::<u64>().map_err(|_| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("resourceVersion: Invalid value: {version:?}: must be an integer"),
                )
            })?),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut watch = Watch {
            resource: target.resource,
            filter,
            bookmarks,
            position: self.resource_version,
            sender,
        };
        match from {
            Some(from) if from < self.compacted && !initial_events => {
                watch.send("ERROR", &expired_status(from, self.compacted), 0);
                return Ok(watch_response(receiver, deadline));
            }
            Some(from) if !initial_events => {
                watch.position = from;
                for change in self
                    .history
                    .iter()
                    .filter(|change| change.resource_version > from)
                {
                    if let Some(event_type) = watch.event_for(change) {
                        watch.send(event_type, &change.object, change.resource_version);
                    }
                }
            }
            _ => {
                for object in self.objects[target.resource].values() {
                    if watch.filter.selects(object) {
                        watch.send("ADDED", object, 0);
                    }
                }
                if initial_events {
                    let object = bookmark_object(target.resource, self.resource_version, true);
                    watch.send("BOOKMARK", &object, self.resource_version);
                }
            }
        }
        self.watches.push(watch);
        Ok(watch_response(receiver, deadline))
    }

    /// POST on a collection.
    fn create(&mut self, target: &Target, body: &[u8]) -> Result<Response<ResponseBody>, ApiError> {
        let object = parse_object(target, body)?;
        self.create_object(target, object)
    }

    /// Stores a new object from a POST (or from a server-side apply of an absent one).
    fn create_object(
        &mut self,
        target: &Target,
        mut object: Value,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let Some(namespace) = target
            .namespace
            .clone()
            .or_else(|| (!RESOURCES[target.resource].namespaced).then(String::new))
        else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "{} is namespaced: POST to a namespace's collection",
                    RESOURCES[target.resource].kind
                ),
            ));
        };
        check_namespace(&mut object, target)?;
        let name = match object["metadata"]["name"]
            .as_str()
            .filter(|name| !name.is_empty())
        {
            Some(name) => name.to_string(),
            None => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{}", generated_suffix(self.created + 1)),
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value: name or generateName is required".into(),
                    ))
                }
            },
        };
        object["metadata"]["name"] = name.clone().into();
        let key = (namespace, name.clone());
        if self.objects[target.resource].contains_key(&key) {
            let message = format!(
                "{} \"{name}\" already exists",
                RESOURCES[target.resource].qualified()
            );
            return Err(ApiError::about(
                target.resource,
                &name,
                409,
                "AlreadyExists",
                message,
            ));
        }
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        let object = self.stamp_new(object);
        self.commit(target.resource, key.clone(), Some(object));
        Ok(json_response(
            StatusCode::CREATED,
            &self.objects[target.resource][&key],
        ))
    }

    /// PUT on an object (or its `status`).
    fn replace(
        &mut self,
        target: &Target,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, ApiError> {
        let object = parse_object(target, body)?;
        self.update(target, object)
    }

    /// PATCH on an object (or its `status`).
    fn patch(
        &mut self,
        target: &Target,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, ApiError> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        let patch: Value = match media_type {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                serde_json::from_slice(body).map_err(ApiError::bad_body)?
            }
            "application/apply-patch+yaml" => {
                serde_yaml::from_slice(body).map_err(|error| ApiError::bad_body(error.to_string()))?
            }
            _ => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"),
                ))
            }
        };
        let stored = match self.objects[target.resource].get(&target.key()) {
            Some(stored) => stored.clone(),
            None if media_type == "application/apply-patch+yaml"
                && target.subresource.is_none() =>
            {
                let mut object = patch;
                check_type(&mut object, target.resource)?;
                object["metadata"]["name"] = target.name.clone().unwrap_or_default().into();
                return self.create_object(target, object);
            }
            None => return Err(ApiError::not_found(target)),
        };
        if let Some(expected) = patch["metadata"]["resourceVersion"].as_str() {
            check_resource_version(target, &stored, expected)?;
        }
        let mut object = stored;
        merge_patch(&mut object, &patch);
        self.update(target, object)
    }

    /// Stores a new state given for an existing object, through the main resource or the
    /// `status` subresource.
    fn update(
        &mut self,
        target: &Target,
        mut object: Value,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let stored = self.stored(target)?.clone();
        check_type(&mut object, target.resource)?;
        check_namespace(&mut object, target)?;
        let name = target.name.as_deref().unwrap_or_default();
        match object["metadata"]["name"].as_str() {
            Some(given) if given == name => {}
            given => {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        given.unwrap_or_default()
                    ),
                ))
            }
        }
        if let Some(expected) = object["metadata"]["resourceVersion"].as_str() {
            check_resource_version(target, &stored, expected)?;
        }
        let resource = &RESOURCES[target.resource];
        let object = if target.subresource.is_some() {
            let mut updated = stored.clone();
            match (object.get("status"), updated.as_object_mut()) {
                (Some(status), _) if !status.is_null() => updated["status"] = status.clone(),
                (_, Some(fields)) => {
                    fields.remove("status");
                }
                (_, None) => {}
            }
            updated
        } else {
            if resource.status_subresource {
                match stored.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        if let Some(fields) = object.as_object_mut() {
                            fields.remove("status");
                        }
                    }
                }
            }
            carry_system_fields(&stored, object)
        };
        let key = target.key();
        self.commit(target.resource, key.clone(), Some(object));
        Ok(json_response(
            StatusCode::OK,
            &self.objects[target.resource][&key],
        ))
    }

    /// DELETE on an object: answered with its last state. The `DeleteOptions` body's
    /// preconditions (`uid`, `resourceVersion`) are checked: 409 `Conflict` when they fail.
    fn remove(&mut self, target: &Target, body: &[u8]) -> Result<Response<ResponseBody>, ApiError> {
        if target.subresource.is_some() {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
            ));
        }
        let mut object = self.stored(target)?.clone();
        let options: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(ApiError::bad_body)?
        };
        let preconditions = &options["preconditions"];
        if let Some(expected) = preconditions["resourceVersion"].as_str() {
            check_resource_version(target, &object, expected)?;
        }
        if let Some(expected) = preconditions["uid"].as_str() {
            if object["metadata"]["uid"].as_str() != Some(expected) {
                let name = target.name.as_deref().unwrap_or_default();
                let message = format!(
                    "Precondition failed: UID in precondition: {expected}, UID in object meta: {}",
                    object["metadata"]["uid"].as_str().unwrap_or_default()
                );
                return Err(ApiError::about(
                    target.resource,
                    name,
                    409,
                    "Conflict",
                    message,
                ));
            }
        }
        let resource_version = self.commit(target.resource, target.key(), None);
        object["metadata"]["resourceVersion"] = resource_version.to_string().into();
        Ok(json_response(StatusCode::OK, &object))
    }
}

/// Used when a watch names no `timeoutSeconds`; kube-rs always names one (290 s too).
const DEFAULT_WATCH_TIMEOUT_SECONDS: u64 = 290;

/// What a request path names.
#[derive(Clone, Debug)]
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
    /// Only "status" is served.
    subresource: Option<String>,
}

impl Target {
    /// Parses `/api/v1/...` and `/apis/{group}/{version}/...`, followed by `{plural}`,
    /// `{plural}/{name}[/status]` (cluster-scoped kinds, or all namespaces for a list),
    /// or `namespaces/{ns}/{plural}[/{name}[/status]]`.
    fn parse(path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return None;
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let namespaced_resource = match rest {
            ["namespaces", _, plural, ..] => resource_by_plural(group, version, plural),
            _ => None,
        };
        let (resource, namespace, rest) = match namespaced_resource {
            Some(resource) => (resource, Some(rest[1].to_string()), &rest[3..]),
            None => {
                let plural = rest.first()?;
                (
                    resource_by_plural(group, version, plural)?,
                    None,
                    &rest[1..],
                )
            }
        };
        let namespaced = RESOURCES[resource].namespaced;
        if namespace.is_some() && !namespaced {
            return None;
        }
        let (name, subresource) = match rest {
            [] => (None, None),
            [name] => (Some(name.to_string()), None),
            [name, "status"] => (Some(name.to_string()), Some("status".to_string())),
            _ => return None,
        };
        if namespaced && namespace.is_none() && name.is_some() {
            return None;
        }
        Some(Target {
            resource,
            namespace,
            name,
            subresource,
        })
    }

    fn key(&self) -> Key {
        (
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
}

/// Query parameters, decoded.
#[derive(Debug)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A boolean parameter: "true" or "1".
    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// A label selector and a field selector, both conjunctions.
#[derive(Debug, Default)]
struct Selector {
    labels: Vec<Requirement>,
    /// (dotted path, wanted value, equal or not).
    fields: Vec<(String, String, bool)>,
}

#[derive(Debug)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    fn parse(query: &Query) -> Result<Selector, ApiError> {
        let mut selector = Selector::default();
        for term in split_top_level(query.get("labelSelector").unwrap_or_default()) {
            selector.labels.push(parse_requirement(term).ok_or_else(|| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("unable to parse requirement: {term:?} in labelSelector"),
                )
            })?);
        }
        for term in split_top_level(query.get("fieldSelector").unwrap_or_default()) {
            let (field, value, equal) = if let Some((field, value)) = term.split_once("!=") {
                (field, value, false)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, value, true)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, value, true)
            } else {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("invalid selector: {term:?}; can't understand it in fieldSelector"),
                ));
            };
            selector
                .fields
                .push((field.trim().into(), value.trim().into(), equal));
        }
        Ok(selector)
    }

    fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|w| w == v))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|v| values.iter().all(|w| w != v))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        });
        labels_match
            && self.fields.iter().all(|(path, wanted, equal)| {
                let value = path
                    .split('.')
                    .try_fold(object, |value, part| value.get(part));
                let value = match value {
                    Some(Value::String(value)) => value.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                (value == *wanted) == *equal
            })
    }
}

/// Splits a selector on the commas that are not inside `( )`.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (index, character) in selector.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .collect()
}

/// One label requirement: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
fn parse_requirement(term: &str) -> Option<Requirement> {
    let set = |values: &str| -> Option<Vec<String>> {
        let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some(
            inner
                .split(',')
                .map(|value| value.trim().to_string())
                .collect(),
        )
    };
    if let Some((key, value)) = term.split_once("!=") {
        return Some(Requirement::NotIn(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some(Requirement::In(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, values)) = term.split_once(" notin ") {
        return Some(Requirement::NotIn(key.trim().into(), set(values)?));
    }
    if let Some((key, values)) = term.split_once(" in ") {
        return Some(Requirement::In(key.trim().into(), set(values)?));
    }
    if let Some(key) = term.strip_prefix('!') {
        return Some(Requirement::DoesNotExist(key.trim().into()));
    }
    (!term.contains(char::is_whitespace)).then(|| Requirement::Exists(term.into()))
}

/// An error answered as a Kubernetes `Status`.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn bad_body(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            400,
            "BadRequest",
            format!("the request body is not valid: {error}"),
        )
    }

    /// An error about one object, with the `details` that name it.
    fn about(
        resource: usize,
        name: &str,
        code: u16,
        reason: &'static str,
        message: String,
    ) -> ApiError {
        let resource = &RESOURCES[resource];
        let details = json!({ "name": name, "group": resource.group, "kind": resource.plural });
        ApiError {
            code,
            reason,
            message,
            details: Some(details),
        }
    }

    /// `pods "a" not found`.
    fn not_found(target: &Target) -> ApiError {
        let name = target.name.as_deref().unwrap_or_default();
        let message = format!(
            "{} \"{name}\" not found",
            RESOURCES[target.resource].qualified()
        );
        ApiError::about(target.resource, name, 404, "NotFound", message)
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    fn response(&self) -> Response<ResponseBody> {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

/// The 410 `Expired` Status of a watch from a compacted version.
fn expired_status(from: u64, compacted: u64) -> Value {
    let message = format!("too old resource version: {from} ({compacted})");
    ApiError::new(410, "Expired", message).status()
}

/// Optimistic concurrency: "if the resourceVersion of the object in the request does
/// not match the stored one, the update is rejected with a 409 Conflict".
fn check_resource_version(target: &Target, stored: &Value, expected: &str) -> Result<(), ApiError> {
    if stored["metadata"]["resourceVersion"].as_str() == Some(expected) {
        return Ok(());
    }
    let name = target.name.as_deref().unwrap_or_default();
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please \
         apply your changes to the latest version and try again",
        RESOURCES[target.resource].qualified()
    );
    Err(ApiError::about(
        target.resource,
        name,
        409,
        "Conflict",
        message,
    ))
}

/// Parses a request body as an object of the target's kind, filling in `apiVersion`
/// and `kind` when absent.
fn parse_object(target: &Target, body: &[u8]) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(body).map_err(ApiError::bad_body)?;
    if !object.is_object() {
        return Err(ApiError::bad_body("not a JSON object"));
    }
    check_type(&mut object, target.resource)?;
    Ok(object)
}

/// An object sent for a resource names that resource's `apiVersion` and `kind`, or
/// none (they are filled in), and has a `metadata` object.
fn check_type(object: &mut Value, resource: usize) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_body("not a JSON object"));
    }
    let resource = &RESOURCES[resource];
    let wanted = [
        ("apiVersion", resource.api_version()),
        ("kind", resource.kind.to_string()),
    ];
    for (field, wanted) in wanted {
        match object[field].as_str() {
            None => object[field] = wanted.into(),
            Some(given) if given == wanted => {}
            Some(given) => {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!("{field} {given:?} does not match the resource's {wanted:?}"),
                ))
            }
        }
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    Ok(())
}

/// Sets the object's namespace from the path: an object in a namespace's collection may
/// omit it, not contradict it; a cluster-scoped object has none.
fn check_namespace(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let Some(namespace) = &target.namespace else {
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("namespace");
        }
        return Ok(());
    };
    match object["metadata"]["namespace"].as_str() {
        Some(given) if !given.is_empty() && given != namespace => Err(ApiError::new(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => {
            object["metadata"]["namespace"] = namespace.clone().into();
            Ok(())
        }
    }
}

/// A replacement keeps what the server owns: `uid`, `creationTimestamp`, and
/// `generation`, which grows when anything but metadata and status changed.
fn carry_system_fields(stored: &Value, mut object: Value) -> Value {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    for field in ["uid", "creationTimestamp"] {
        object["metadata"][field] = stored["metadata"][field].clone();
    }
    let spec_of = |value: &Value| -> Map<String, Value> {
        let mut fields = value.as_object().cloned().unwrap_or_default();
        fields.remove("metadata");
        fields.remove("status");
        fields
    };
    let generation = stored["metadata"]["generation"].as_u64().unwrap_or(1);
    let changed = spec_of(stored) != spec_of(&object);
    object["metadata"]["generation"] = (generation + u64::from(changed)).into();
    object
}

/// RFC 7386 section 2: "If the patch is anything other than an object, the result will
/// always be to replace the entire target with the entire patch. ... null values in the
/// merge patch are given special meaning to indicate the removal of existing values."
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        return;
    };
    for (name, value) in patch {
        if value.is_null() {
            fields.remove(name);
        } else {
            merge_patch(fields.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A bookmark's object: of the watched kind, with only a resource version (and, closing
/// the initial events of `sendInitialEvents`, the `k8s.io/initial-events-end` annotation).
fn bookmark_object(resource: usize, resource_version: u64, initial_events_end: bool) -> Value {
    let resource = &RESOURCES[resource];
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "apiVersion": resource.api_version(), "kind": resource.kind, "metadata": metadata })
}

fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": event_type, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// A watch's streaming body: every line sent, until the server drops the sender (going
/// down, compaction) or the watch's timeout passes.
fn watch_response(
    receiver: mpsc::UnboundedReceiver<Bytes>,
    deadline: tokio::time::Instant,
) -> Response<ResponseBody> {
    let lines = futures::stream::unfold(receiver, move |mut receiver| async move {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(line)) => Some((Ok(Frame::data(line)), receiver)),
            Ok(None) | Err(_) => None,
        }
    });
    let mut response = Response::new(StreamBody::new(lines).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn json_response(code: StatusCode, body: &Value) -> Response<ResponseBody> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-weir-fake",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    })
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn key_of(object: &Value) -> Key {
    let metadata = &object["metadata"];
    (
        metadata["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        metadata["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// Five characters, as the API server appends to `generateName`.
fn generated_suffix(mut seed: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..5)
        .map(|_| {
            let character = ALPHABET[(seed % ALPHABET.len() as u64) as usize];
            seed /= ALPHABET.len() as u64;
            char::from(character)
        })
        .collect()
}

/// The continue token: the list's version and the last key served, hex-encoded so that
/// clients treat it as opaque.
fn encode_continue(resource_version: u64, (namespace, name): &Key) -> String {
    format!("{resource_version}\0{namespace}\0{name}")
        .bytes()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, Key)> {
    if token.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(token.get(index..index + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '\0');
    let resource_version = parts.next()?.parse().ok()?;
    Some((
        resource_version,
        (parts.next()?.to_string(), parts.next()?.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        let target = Target::parse("/api/v1/namespaces/a/pods/p/status").unwrap();
        assert_eq!(RESOURCES[target.resource].plural, "pods");
        assert_eq!(target.namespace.as_deref(), Some("a"));
        assert_eq!(target.name.as_deref(), Some("p"));
        assert_eq!(target.subresource.as_deref(), Some("status"));
        let target = Target::parse("/api/v1/namespaces/a").unwrap();
        assert_eq!(RESOURCES[target.resource].kind, "Namespace");
        assert_eq!(target.name.as_deref(), Some("a"));
        let target = Target::parse("/apis/weir.dev/v1/networkpolicies").unwrap();
        assert_eq!(RESOURCES[target.resource].group, "weir.dev");
        assert!(target.namespace.is_none() && target.name.is_none());
        assert!(
            Target::parse("/api/v1/pods/p").is_none(),
            "a namespaced object needs its namespace"
        );
        assert!(Target::parse("/api/v1/namespaces/a/nodes").is_none());
        assert!(Target::parse("/apis/weir.dev/v2/tiers").is_none());
    }

    #[test]
    fn selectors_follow_the_label_and_field_forms() {
        let object = json!({ "metadata": { "name": "p", "labels": { "app": "web", "tier": "1" } },
                             "spec": { "nodeName": "n1" } });
        let selects = |labels: &str, fields: &str| {
            let query = Query(vec![
                ("labelSelector".into(), labels.into()),
                ("fieldSelector".into(), fields.into()),
            ]);
            Selector::parse(&query).unwrap().selects(&object)
        };
        assert!(selects("app=web,tier==1", "metadata.name=p"));
        assert!(selects("app in (db, web),!gone", "spec.nodeName!=n2"));
        assert!(!selects("app notin (web)", ""));
        assert!(!selects("app", "spec.nodeName=n2"));
        assert!(!selects("app!=web", ""));
    }

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        let mut target = json!({ "a": "b", "c": { "d": "e", "f": "g" } });
        merge_patch(&mut target, &json!({ "a": "z", "c": { "f": null } }));
        assert_eq!(target, json!({ "a": "z", "c": { "d": "e" } }));
        let mut target = json!({ "a": ["b"] });
        merge_patch(&mut target, &json!({ "a": "c" }));
        assert_eq!(target, json!({ "a": "c" }));
    }

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("ns".to_string(), "name".to_string());
        assert_eq!(decode_continue(&encode_continue(42, &key)), Some((42, key)));
        assert_eq!(decode_continue("zz"), None);
    }
}

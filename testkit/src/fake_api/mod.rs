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

mod request;
mod resources;
mod service;
mod store;
#[cfg(test)]
mod tests;
mod watch;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use serde_json::Value;

use resources::{resource_by_kind, RESOURCES};
use store::{carry_system_fields, State};
use watch::{bookmark_object, expired_status, watch_line};

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
}

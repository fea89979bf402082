//! Watches: their event streams, what each is told of a change, bookmarks and expiry.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::request::{Filter, Query, Target};
use super::resources::RESOURCES;
use super::service::ApiError;
use super::store::{Change, ChangeType, State};
use super::ResponseBody;

#[derive(Debug)]
pub(super) struct Watch {
    pub(super) resource: usize,
    filter: Filter,
    pub(super) bookmarks: bool,
    /// The last version the client saw: where it would resume from.
    pub(super) position: u64,
    pub(super) sender: mpsc::UnboundedSender<Bytes>,
}

impl Watch {
    /// What this watch is told of a change: `ADDED`, `MODIFIED`, `DELETED` or nothing.
    /// "If the object's labels change so that it no longer matches the selector, the
    /// watch sees a DELETED event" (and an `ADDED` one when it starts to match).
    pub(super) fn event_for(&self, change: &Change) -> Option<&'static str> {
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
    pub(super) fn send(&mut self, event_type: &str, object: &Value, resource_version: u64) -> bool {
        self.position = self.position.max(resource_version);
        self.sender.send(watch_line(event_type, object)).is_ok()
    }
}

impl State {
    /// GET with `watch=true`: registers a watch and answers with its event stream.
    pub(super) fn watch(
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
}

/// Used when a watch names no `timeoutSeconds`; kube-rs always names one (290 s too).
const DEFAULT_WATCH_TIMEOUT_SECONDS: u64 = 290;

/// The 410 `Expired` Status of a watch from a compacted version.
pub(super) fn expired_status(from: u64, compacted: u64) -> Value {
    let message = format!("too old resource version: {from} ({compacted})");
    ApiError::new(410, "Expired", message).status()
}

/// A bookmark's object: of the watched kind, with only a resource version (and, closing
/// the initial events of `sendInitialEvents`, the `k8s.io/initial-events-end` annotation).
pub(super) fn bookmark_object(
    resource: usize,
    resource_version: u64,
    initial_events_end: bool,
) -> Value {
    let resource = &RESOURCES[resource];
    let mut metadata = json!({ "resourceVersion": resource_version.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    json!({ "apiVersion": resource.api_version(), "kind": resource.kind, "metadata": metadata })
}

pub(super) fn watch_line(event_type: &str, object: &Value) -> Bytes {
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

//! The cluster's state: stored objects, the history of writes, and the reads and writes
//! that requests make.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use super::request::{Filter, Query, Target};
use super::resources::{key_of, Key, RESOURCES};
use super::service::{json_response, ApiError};
use super::watch::Watch;
use super::ResponseBody;

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) resource_version: u64,
    /// History up to and including this version is gone.
    pub(super) compacted: u64,
    pub(super) down: bool,
    pub(super) objects: [BTreeMap<Key, Value>; RESOURCES.len()],
    /// Every write after `compacted`, oldest first.
    pub(super) history: Vec<Change>,
    pub(super) watches: Vec<Watch>,
    pub(super) requests: Vec<Served>,
    /// Objects created so far, for `uid` and `generateName`.
    pub(super) created: u64,
}

/// A request, as [`FakeApi::request_count`] and [`FakeApi::verb_count`] count them.
#[derive(Debug)]
pub(super) struct Served {
    /// "METHOD path", without the query.
    pub(super) method_and_path: String,
    /// The API server's verb: get, list, watch, create, update, patch or delete.
    pub(super) verb: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
pub(super) struct Change {
    pub(super) resource_version: u64,
    pub(super) resource: usize,
    pub(super) change: ChangeType,
    /// The new state; for a deletion the last state, at the deletion's version.
    pub(super) object: Value,
    /// The state before, for a modification (selectors need it).
    pub(super) previous: Option<Value>,
}

impl State {
    /// Records a write (`Some` object: create or replace; `None`: delete) at the next
    /// resource version, and tells the watches. Returns that version.
    pub(super) fn commit(&mut self, resource: usize, key: Key, object: Option<Value>) -> u64 {
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
    pub(super) fn stamp_new(&mut self, mut object: Value) -> Value {
        self.created += 1;
        let metadata = &mut object["metadata"];
        metadata["uid"] = format!("00000000-0000-4000-8000-{:012x}", self.created).into();
        metadata["creationTimestamp"] = now_rfc3339().into();
        metadata["generation"] = 1.into();
        object
    }

    pub(super) fn stored(&self, target: &Target) -> Result<&Value, ApiError> {
        self.objects[target.resource]
            .get(&target.key())
            .ok_or_else(|| ApiError::not_found(target))
    }

    pub(super) fn read(&self, target: &Target) -> Result<Response<ResponseBody>, ApiError> {
        Ok(json_response(StatusCode::OK, self.stored(target)?))
    }

    /// GET on a collection. "Retrieving large results sets in chunks": `limit` caps the
    /// page, `continue` resumes after the last key of the previous page and expires with
    /// compaction.
    pub(super) fn list(
        &self,
        target: &Target,
        query: &Query,
    ) -> Result<Response<ResponseBody>, ApiError> {
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

    /// POST on a collection.
    pub(super) fn create(
        &mut self,
        target: &Target,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, ApiError> {
        let object = parse_object(target, body)?;
        self.create_object(target, object)
    }

    /// Stores a new object from a POST (or from a server-side apply of an absent one).
    pub(super) fn create_object(
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
    pub(super) fn replace(
        &mut self,
        target: &Target,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, ApiError> {
        let object = parse_object(target, body)?;
        self.update(target, object)
    }

    /// PATCH on an object (or its `status`).
    pub(super) fn patch(
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
    pub(super) fn update(
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
    pub(super) fn remove(
        &mut self,
        target: &Target,
        body: &[u8],
    ) -> Result<Response<ResponseBody>, ApiError> {
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
pub(super) fn carry_system_fields(stored: &Value, mut object: Value) -> Value {
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
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
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

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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
pub(super) fn encode_continue(resource_version: u64, (namespace, name): &Key) -> String {
    format!("{resource_version}\0{namespace}\0{name}")
        .bytes()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub(super) fn decode_continue(token: &str) -> Option<(u64, Key)> {
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

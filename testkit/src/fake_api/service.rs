//! The HTTP side: [`FakeApi`] as the `tower::Service` kube-rs sends its requests to, the
//! dispatch of a request to a read, write or watch, and errors answered as `Status` objects.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::request::{Query, Target};
use super::resources::RESOURCES;
use super::store::Served;
use super::{FakeApi, ResponseBody};

impl FakeApi {
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

/// An error answered as a Kubernetes `Status`.
#[derive(Debug)]
pub(super) struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }

    pub(super) fn bad_body(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            400,
            "BadRequest",
            format!("the request body is not valid: {error}"),
        )
    }

    /// An error about one object, with the `details` that name it.
    pub(super) fn about(
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
    pub(super) fn not_found(target: &Target) -> ApiError {
        let name = target.name.as_deref().unwrap_or_default();
        let message = format!(
            "{} \"{name}\" not found",
            RESOURCES[target.resource].qualified()
        );
        ApiError::about(target.resource, name, 404, "NotFound", message)
    }

    pub(super) fn status(&self) -> Value {
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

    pub(super) fn response(&self) -> Response<ResponseBody> {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

pub(super) fn json_response(code: StatusCode, body: &Value) -> Response<ResponseBody> {
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

//! Toxiproxy's HTTP API (its api.go): the routes, on one thread, one
//! request at a time; each answer is given after the relay has carried
//! out the change.

use std::net::TcpListener;
use std::sync::Arc;

use serde_json::json;

use super::collection::{Collection, ProxyInput};
use super::error::ApiError;
use super::http::{IO_TIMEOUT, Request, Response, read_request, write_response};
use super::metrics::Metrics;
use super::toxic::parse_object;

/// The version `GET /version` reports.
pub fn version() -> String {
    format!("holdfast-{}", env!("CARGO_PKG_VERSION"))
}

pub struct Api {
    pub collection: Collection,
    pub metrics: Arc<Metrics>,
}

impl Api {
    /// Serves `listener` until the process ends.
    pub fn serve(&mut self, listener: TcpListener) {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else {
                // Out of fds, most likely: let a connection close first.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            };
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            let response = match read_request(&mut stream) {
                Ok(request) => self.handle(&request),
                Err(response) => response,
            };
            let _ = write_response(&mut stream, &response);
        }
    }

    pub fn handle(&mut self, request: &Request) -> Response {
        if request.user_agent.starts_with("Mozilla/") {
            return error(&ApiError::new("User agent not allowed", 403));
        }
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let method = request.method.as_str();
        let body = request.body.as_slice();
        let result = match (method, segments.as_slice()) {
            ("GET", ["version"]) => Ok(Response {
                status: 200,
                content_type: "application/json;charset=utf-8",
                body: format!("{}\n", json!({"version": version()})),
            }),
            ("GET", ["metrics"]) => Ok(Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: self.metrics.render(),
            }),
            ("POST", ["reset"]) => self.collection.reset().map(|()| no_content()),
            ("GET", ["proxies"]) => Ok(ok(200, self.collection.list())),
            ("POST", ["proxies"]) => self.create(body),
            ("POST", ["populate"]) => Ok(self.populate(body)),
            ("GET", ["proxies", name]) => self.collection.get(name).map(|p| ok(200, p.to_json())),
            ("POST" | "PATCH", ["proxies", name]) => {
                let proxy = self.collection.update(name, body);
                proxy.map(|p| ok(200, p.to_json()))
            }
            ("DELETE", ["proxies", name]) => self.collection.delete(name).map(|()| no_content()),
            ("GET", ["proxies", name, "toxics"]) => {
                self.collection.toxics(name).map(|t| ok(200, t))
            }
            ("POST", ["proxies", name, "toxics"]) => {
                self.collection.add_toxic(name, body).map(|t| ok(200, t))
            }
            ("GET", ["proxies", name, "toxics", toxic]) => {
                let found = self.collection.toxic(name, toxic);
                found.map(|t| ok(200, t.to_json()))
            }
            ("POST" | "PATCH", ["proxies", name, "toxics", toxic]) => {
                let updated = self.collection.update_toxic(name, toxic, body);
                updated.map(|t| ok(200, t))
            }
            ("DELETE", ["proxies", name, "toxics", toxic]) => {
                let removed = self.collection.remove_toxic(name, toxic);
                removed.map(|()| no_content())
            }
            (_, path) if known(path) => Err(ApiError::new("method not allowed", 405)),
            _ => Err(ApiError::new("not found", 404)),
        };
        result.unwrap_or_else(|e| error(&e))
    }

    fn create(&mut self, body: &[u8]) -> Result<Response, ApiError> {
        let input = ProxyInput::from_object(&parse_object(body)?)?;
        let proxy = self.collection.create(input)?;
        Ok(ok(201, proxy.to_json()))
    }

    /// `POST /populate`: 201 with `{"proxies": [...]}`, or the error's
    /// status with the error and the proxies made before it.
    fn populate(&mut self, body: &[u8]) -> Response {
        let (proxies, failed) = self.collection.populate(body);
        match failed {
            None => ok(201, json!({"proxies": proxies})),
            Some(e) => ok(
                e.status,
                json!({"error": e.message, "status": e.status, "proxies": proxies}),
            ),
        }
    }
}

/// A path one of the routes serves with another method.
fn known(path: &[&str]) -> bool {
    matches!(
        path,
        ["version" | "metrics" | "reset" | "proxies" | "populate"]
            | ["proxies", _]
            | ["proxies", _, "toxics"]
            | ["proxies", _, "toxics", _]
    )
}

fn ok(status: u16, value: serde_json::Value) -> Response {
    Response::json(status, value.to_string())
}

fn no_content() -> Response {
    Response::json(204, String::new())
}

fn error(error: &ApiError) -> Response {
    Response::json(error.status, format!("{}\n", error.body()))
}

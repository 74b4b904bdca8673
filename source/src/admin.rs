//! Admin routes of `mongo-source` beyond the shared ones.
//!
//! - `POST /streams/{name}/restart` (bearer token): restart a stream now.
//! - The Kafka Connect REST paths the team's runbooks use, with the same
//!   JSON shapes (a stream is a connector with one task, id 0):
//!   `GET /connectors`, `GET /connectors/{name}/status`,
//!   `GET /connectors/{name}/tasks/{id}/status`, and
//!   `POST /connectors/{name}/restart` (bearer token; 204 like Connect).

use crate::status::{StatusBoard, StreamStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shared::state::StreamState;
use std::sync::Arc;

/// Read-only routes (Connect status paths).
pub fn public_routes(board: Arc<StatusBoard>, worker_id: String) -> Router {
    Router::new()
        .route("/connectors", get(list))
        .route("/connectors/{name}/status", get(connector_status))
        .route("/connectors/{name}/tasks/{id}/status", get(task_status))
        .with_state((board, Arc::new(worker_id)))
}

/// Mutating routes, to be wrapped by [`shared::admin::protected`].
pub fn routes(board: Arc<StatusBoard>) -> Router {
    Router::new()
        .route("/streams/{name}/restart", post(restart))
        .route("/connectors/{name}/restart", post(connect_restart))
        .with_state(board)
}

type Shared = (Arc<StatusBoard>, Arc<String>);

/// The Connect state name of a stream state.
pub fn connect_state(state: StreamState) -> &'static str {
    match state {
        StreamState::Starting | StreamState::Snapshotting | StreamState::Running => "RUNNING",
        StreamState::Retrying => "RESTARTING",
        StreamState::Failed => "FAILED",
        StreamState::Paused => "PAUSED",
        StreamState::Stopped | StreamState::Standby => "UNASSIGNED",
    }
}

fn not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error_code": 404, "message": format!("Connector {name} not found")})),
    )
        .into_response()
}

fn task_json(s: &StreamStatus, worker_id: &str) -> Value {
    let state = s.state();
    let mut task = json!({"id": 0, "state": connect_state(state), "worker_id": worker_id});
    if state == StreamState::Failed {
        task["trace"] = json!(s.last_error().unwrap_or_default());
    }
    task
}

async fn list(State((board, _)): State<Shared>) -> Json<Vec<String>> {
    Json(board.streams.iter().map(|s| s.name.clone()).collect())
}

async fn connector_status(
    State((board, worker)): State<Shared>,
    Path(name): Path<String>,
) -> Response {
    let Some(s) = board.get(&name) else {
        return not_found(&name);
    };
    Json(json!({
        "name": name,
        "connector": {"state": connect_state(s.state()), "worker_id": worker.as_str()},
        "tasks": [task_json(s, &worker)],
        "type": "source",
    }))
    .into_response()
}

async fn task_status(
    State((board, worker)): State<Shared>,
    Path((name, id)): Path<(String, u32)>,
) -> Response {
    let Some(s) = board.get(&name) else {
        return not_found(&name);
    };
    if id != 0 {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error_code": 404, "message": format!("Task {name}-{id} not found")})),
        )
            .into_response();
    }
    Json(task_json(s, &worker)).into_response()
}

async fn restart(
    State(board): State<Arc<StatusBoard>>,
    Path(name): Path<String>,
) -> (StatusCode, String) {
    match board.get(&name) {
        Some(s) => {
            s.restart.notify_one();
            (
                StatusCode::ACCEPTED,
                format!("restart of {name} requested\n"),
            )
        }
        None => (StatusCode::NOT_FOUND, format!("no stream named {name}\n")),
    }
}

async fn connect_restart(
    State(board): State<Arc<StatusBoard>>,
    Path(name): Path<String>,
) -> Response {
    match board.get(&name) {
        Some(s) => {
            s.restart.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(&name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_connect_names() {
        assert_eq!(connect_state(StreamState::Running), "RUNNING");
        assert_eq!(connect_state(StreamState::Snapshotting), "RUNNING");
        assert_eq!(connect_state(StreamState::Failed), "FAILED");
        assert_eq!(connect_state(StreamState::Retrying), "RESTARTING");
    }
}

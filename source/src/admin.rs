//! Mutating admin routes of `mongo-source` (behind the bearer token):
//! `POST /streams/{name}/restart` restarts a failed or fenced stream now.

use crate::status::StatusBoard;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::sync::Arc;

/// The routes.
pub fn routes(board: Arc<StatusBoard>) -> Router {
    Router::new()
        .route("/streams/{name}/restart", post(restart))
        .with_state(board)
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

//! The life-cycle state of a stream (source) or a partition consumer
//! (sync), as shown on `/status` and as the `*_stream_state` gauge.

use serde::Serialize;

/// State of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamState {
    /// Connecting, reading its position.
    Starting,
    /// Copying existing documents.
    Snapshotting,
    /// Streaming changes.
    Running,
    /// A retryable error occurred; waiting to try again.
    Retrying,
    /// A fatal error stopped it; it restarts itself with backoff or on request.
    Failed,
    /// Paused by an operator.
    Paused,
    /// Owned by another instance of the cluster; this one stands by.
    Standby,
    /// Stopped (shutdown).
    Stopped,
}

impl StreamState {
    /// All states, for the state gauge (one series per state, 1 for the current one).
    pub const ALL: [StreamState; 8] = [
        Self::Starting,
        Self::Snapshotting,
        Self::Running,
        Self::Retrying,
        Self::Failed,
        Self::Paused,
        Self::Standby,
        Self::Stopped,
    ];

    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "STARTING",
            Self::Snapshotting => "SNAPSHOTTING",
            Self::Running => "RUNNING",
            Self::Retrying => "RETRYING",
            Self::Failed => "FAILED",
            Self::Paused => "PAUSED",
            Self::Standby => "STANDBY",
            Self::Stopped => "STOPPED",
        }
    }

    /// Whether the stream counts as healthy for `/readyz`.
    pub fn is_ready(self) -> bool {
        matches!(
            self,
            Self::Running | Self::Snapshotting | Self::Paused | Self::Standby
        )
    }
}

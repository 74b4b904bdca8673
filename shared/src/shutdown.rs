//! Graceful shutdown: one [`CancellationToken`] broadcast to every task, a
//! [`TaskTracker`] to wait for all of them, and the OS signals that trigger
//! it (SIGTERM, SIGINT).
//!
//! The first signal asks for a graceful stop (work in flight is finished or
//! committed, within each binary's grace period). A second signal while that
//! runs means "now": the process exits at once with the shell's code for the
//! signal (130 for SIGINT, 143 for SIGTERM). Nothing is lost by that: both
//! binaries only ever acknowledge work that is committed (Kafka transaction,
//! consumer offset), so the next start repeats whatever was in flight.

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// A termination signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM (`kill`, `docker stop`, Kubernetes).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

impl Signal {
    /// Its name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }

    /// The exit code a shell reports for a process ended by it (128 + number).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Terminate => 143,
            Self::Interrupt => 130,
        }
    }
}

/// The termination signals, as one stream. Listening starts when it is
/// created, so no signal between two [`Signals::recv`] calls is missed.
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening for SIGTERM and SIGINT.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, signal = name, "cannot listen for the signal");
                    None
                }
            };
            Self {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => Signal::Terminate,
                () = next(&mut self.int) => Signal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// A token cancelled on the first signal; a second signal exits the
/// process at once (see the module docs).
pub fn on_signal() -> CancellationToken {
    on_signal_with(|code| std::process::exit(code))
}

/// [`on_signal`] with the forced exit given: `exit` is called with the
/// exit code on the second signal.
pub fn on_signal_with(exit: impl FnOnce(i32) + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    let mut signals = Signals::new();
    tokio::spawn(async move {
        let first = signals.recv().await;
        tracing::info!(
            signal = first.name(),
            "shutdown requested (a second signal exits at once)"
        );
        t.cancel();
        let second = signals.recv().await;
        tracing::warn!(
            signal = second.name(),
            code = second.exit_code(),
            "second signal: exiting at once, without waiting for work in flight"
        );
        eprintln!(
            "{}: exiting at once",
            second.name() // stderr is unbuffered: this line is never lost
        );
        exit(second.exit_code());
    });
    token
}

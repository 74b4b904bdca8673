//! The `es-sync` binary's command line: help, and configuration errors
//! that exit non-zero with a message naming the key (no I/O, no backtrace).

use std::process::Command;

fn es_sync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_es-sync"))
}

fn shipped() -> String {
    format!("{}/../config/es-sync.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn help_lists_every_option_and_command() {
    let out = es_sync().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--config", "replay", "reindex", "run"] {
        assert!(text.contains(word), "{word} missing in:\n{text}");
    }
    let out = es_sync().args(["replay", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--group",
        "--topic",
        "--to-timestamp",
        "--to-earliest",
        "--to-offsets",
        "--dry-run",
    ] {
        assert!(text.contains(word), "{word} missing in:\n{text}");
    }
    let out = es_sync().args(["reindex", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--topic") && text.contains("--into"),
        "{text}"
    );
}

#[test]
fn missing_config_file_fails_with_its_name() {
    let out = es_sync()
        .args(["--config", "/nonexistent/es-sync.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/es-sync.toml"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn invalid_value_fails_naming_the_key() {
    let out = es_sync()
        .args(["--config", &shipped()])
        .env("ES_SYNC__BULK__MAX_ACTIONS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bulk.max_actions"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn replay_needs_a_target() {
    let out = es_sync()
        .args(["--config", &shipped(), "replay", "--group", "g"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--to-earliest") || err.contains("required"),
        "{err}"
    );
}

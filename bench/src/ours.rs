//! Our two binaries as processes of a trial: their config rendered into the
//! work directory, spawned pinned with their log beside it.

use crate::ctx::Ctx;
use crate::process::Child;
use crate::templates::{Names, SourceConfig, SyncConfig};
use anyhow::Result;

/// Spawns `mongo-source` reading `uri` into the topics of `names`; files
/// are named after `tag`.
pub fn spawn_source(
    cx: &Ctx,
    uri: &str,
    names: &Names,
    start: String,
    delivery: &str,
    tag: &str,
) -> Result<Child> {
    let admin = cx.ports.addr()?;
    let cfg = cx.work(&format!("mongo-source-{tag}.toml"));
    let text = SourceConfig {
        uri,
        kafka: &cx.o.kafka,
        names,
        admin: &admin,
        start,
        delivery,
        partitions: cx.o.partitions,
    }
    .render(&cx.batching);
    std::fs::write(&cfg, text)?;
    let mut cmd = cx.pin.command(cx.o.bin_dir.join("mongo-source"));
    cmd.arg("--config").arg(&cfg);
    Child::spawn(cmd, admin, &cx.work(&format!("mongo-source-{tag}.log")))
}

/// Spawns `es-sync` in `group` over the topics of `names`, into the
/// aliases `{alias_prefix}-*`; files are named after `tag`.
pub fn spawn_sync(
    cx: &Ctx,
    names: &Names,
    group: &str,
    alias_prefix: &str,
    tag: &str,
    linger_ms: Option<u64>,
) -> Result<Child> {
    spawn_sync_with(cx, names, group, alias_prefix, tag, linger_ms, false)
}

/// [`spawn_sync`], with the shipped `[rollup]` when `rollup` is set.
pub fn spawn_sync_with(
    cx: &Ctx,
    names: &Names,
    group: &str,
    alias_prefix: &str,
    tag: &str,
    linger_ms: Option<u64>,
    rollup: bool,
) -> Result<Child> {
    let admin = cx.ports.addr()?;
    let cfg = cx.work(&format!("es-sync-{tag}.toml"));
    let text = SyncConfig {
        kafka: &cx.o.kafka,
        es: &cx.o.es,
        names,
        group,
        alias_prefix,
        admin: &admin,
        index_dir: cx.index_dir(),
        linger_ms,
        rollup,
    }
    .render(&cx.batching);
    std::fs::write(&cfg, text)?;
    let mut cmd = cx.pin.command(cx.o.bin_dir.join("es-sync"));
    cmd.arg("--config").arg(&cfg);
    Child::spawn(cmd, admin, &cx.work(&format!("es-sync-{tag}.log")))
}

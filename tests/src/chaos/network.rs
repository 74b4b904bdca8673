//! A bad network between the binaries and their servers, through the
//! suite's own proxies ([`crate::proxy`], see [`super::stack`]):
//!
//! - slow broker: every byte between both binaries and Kafka delayed
//!   (50-400 ms each way), then the connections reset three times;
//! - partitioned broker: nothing passes (and new connections hang) for
//!   5-25 s, past es-sync's group session (10 s) and mongo-source's lease
//!   (6 s) in the longer runs, then every connection is reset;
//! - slow Elasticsearch: es-sync's requests delayed (0.2-1.5 s each way),
//!   then a stall of 3-10 s, a reset of every connection and 1-2 s of
//!   refused connections.

use super::run::{Run, Setup};
use super::Fault;
use crate::proxy::Mode;
use rand::Rng;
use std::time::Duration;

/// Puts the proxy of the fault in the binaries' way.
pub fn setup(fault: Fault, s: &mut Setup) {
    if fault == Fault::SlowElasticsearch {
        let url = s.stack.es_via_proxy();
        s.sync("ES_SYNC__ELASTICSEARCH__URL", url);
    } else {
        let kafka = s.stack.kafka_via_proxy();
        s.sync("ES_SYNC__KAFKA__BOOTSTRAP_SERVERS", &kafka);
        s.source("MONGO_SOURCE__KAFKA__BOOTSTRAP_SERVERS", &kafka);
    }
}

/// Injects one of the network faults.
pub async fn inject(fault: Fault, run: &mut Run) {
    let stack = run.stack.clone();
    match fault {
        Fault::SlowBroker => {
            let p = &stack.kafka_proxy;
            let delay = Duration::from_millis(run.rng.random_range(50..400));
            let d = run.pick_ms(5_000..8_000, 5_000..20_000);
            p.set(Mode::Delay(delay));
            tokio::time::sleep(d).await;
            for _ in 0..3 {
                p.reset_all();
                tokio::time::sleep(run.pick_ms(1_000..2_000, 1_000..3_000)).await;
            }
            p.set(Mode::Pass);
            run.note = format!(
                "{} ms each way for {:.0} s, then 3 resets",
                delay.as_millis(),
                d.as_secs_f64()
            );
        }
        Fault::PartitionedBroker => {
            let p = &stack.kafka_proxy;
            let d = run.pick_ms(5_000..12_000, 5_000..25_000);
            p.set(Mode::Stall);
            tokio::time::sleep(d).await;
            p.reset_all();
            p.set(Mode::Pass);
            run.note = format!("cut off {:.0} s, then reset", d.as_secs_f64());
        }
        Fault::SlowElasticsearch => {
            let p = &stack.es_proxy;
            let delay = Duration::from_millis(run.rng.random_range(200..1_500));
            let d = run.pick_ms(5_000..8_000, 5_000..20_000);
            p.set(Mode::Delay(delay));
            tokio::time::sleep(d).await;
            let stall = run.pick_ms(3_000..5_000, 3_000..10_000);
            p.set(Mode::Stall);
            tokio::time::sleep(stall).await;
            p.reset_all();
            p.set(Mode::Refuse);
            let refused = run.pick_ms(1_000..2_000, 1_000..2_000);
            tokio::time::sleep(refused).await;
            p.set(Mode::Pass);
            run.note = format!(
                "{} ms each way for {:.0} s, stalled {:.0} s, reset, refused {:.1} s",
                delay.as_millis(),
                d.as_secs_f64(),
                stall.as_secs_f64(),
                refused.as_secs_f64()
            );
        }
        other => unreachable!("{other:?} is not a network fault"),
    }
    let st = (stack.kafka_proxy.stats(), stack.es_proxy.stats());
    eprintln!(
        "chaos: proxies after {fault:?}: kafka {:?}, elasticsearch {:?}",
        st.0, st.1
    );
}

//! Prometheus families fed from the kernel's counters at scrape time.
//!
//! The kernel keeps per-CPU counters; a scrape sums them, so the families
//! below are counters whose values only grow while the agent runs.

use std::sync::Arc;

use nodemesh_common::flow::{DIR_INBOUND, DIR_OUTBOUND};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

use crate::datapath::Datapath;

/// The name of a flow direction, as used in the `direction` label.
pub fn direction(d: u8) -> &'static str {
    match d {
        DIR_OUTBOUND => "outbound",
        DIR_INBOUND => "inbound",
        _ => "unknown",
    }
}

const FLOW_LABELS: [&str; 4] = ["src_identity", "dst_identity", "dst_port", "direction"];

/// Reads the datapath's counters on every scrape.
pub struct DatapathCollector {
    datapath: Arc<Datapath>,
    descs: Vec<Desc>,
}

impl DatapathCollector {
    /// A collector over `datapath`.
    pub fn new(datapath: Arc<Datapath>) -> Self {
        let descs = Self::families()
            .iter()
            .flat_map(|f| f.desc().into_iter().cloned().collect::<Vec<_>>())
            .collect();
        Self { datapath, descs }
    }

    fn families() -> Vec<IntCounterVec> {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        vec![
            vec(
                "nodemesh_datapath_events_total",
                "Datapath events counted in the kernel.",
                &["event"],
            ),
            vec(
                "nodemesh_tcp_connections_opened_total",
                "TCP connections established.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_connections_closed_total",
                "Established TCP connections closed.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_connections_refused_total",
                "TCP connections never established.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_connections_denied_total",
                "Connects denied by the in-kernel L4 policy.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_sent_bytes_total",
                "Payload bytes sent.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_received_bytes_total",
                "Payload bytes received.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_sent_packets_total",
                "Data segments sent through TCP.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_received_packets_total",
                "Data segments received through TCP.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_retransmits_total",
                "TCP retransmissions.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_srtt_microseconds_sum",
                "Sum of the smoothed RTT of closed connections.",
                &FLOW_LABELS,
            ),
            vec(
                "nodemesh_tcp_srtt_samples_total",
                "Closed connections with an RTT sample.",
                &FLOW_LABELS,
            ),
        ]
    }
}

impl Collector for DatapathCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let fams = Self::families();
        if let Ok(stats) = self.datapath.stats() {
            for (name, value) in stats {
                fams[0].with_label_values(&[name]).inc_by(value);
            }
        }
        if let Ok(flows) = self.datapath.flows() {
            for (k, s) in flows {
                let src = k.src_identity.to_string();
                let dst = k.dst_identity.to_string();
                let port = k.dst_port.to_string();
                let labels = [
                    src.as_str(),
                    dst.as_str(),
                    port.as_str(),
                    direction(k.direction),
                ];
                let values = [
                    s.opened,
                    s.closed,
                    s.refused,
                    s.denied,
                    s.bytes_sent,
                    s.bytes_received,
                    s.packets_sent,
                    s.packets_received,
                    s.retransmits,
                    s.srtt_us_sum,
                    s.srtt_samples,
                ];
                for (fam, v) in fams[1..].iter().zip(values) {
                    fam.with_label_values(&labels).inc_by(v);
                }
            }
        }
        fams.iter().flat_map(|f| f.collect()).collect()
    }
}

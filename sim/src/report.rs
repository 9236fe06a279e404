//! The summary of a run: what the CLI prints (as text or one JSON object) and what tests
//! assert on. Everything except `wall_time_s`, `events_per_sec` and `process_peak_rss_bytes`
//! is a function of the seed and the scenario.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::sim::{Actor, FaultCounts, HostStatus, Sim, Totals, Violation};
use crate::sybil::is_fake;

/// Percentiles of a sample, in the unit the field name says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Percentiles of `v` (sorted in place), nearest-rank.
    pub fn of(v: &mut [f64]) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| v[(((v.len() as f64) * q).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            count: v.len(),
            min: v[0],
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// How fast nodes reached their outbound target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetDegree {
    /// The outbound target (of node 0's configuration).
    pub target: usize,
    /// Initial honest nodes.
    pub nodes: usize,
    /// How many of them reached the target at least once.
    pub reached: usize,
    /// Seconds from each node's start to reaching the target.
    pub seconds: Percentiles,
    /// Simulated time (seconds since the start) at which every initial node had reached
    /// the target at least once, if they all did.
    pub all_reached_at_s: Option<f64>,
}

/// Connection degrees of live honest nodes at the end of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Degrees {
    /// Total degree (established peers).
    pub total: Percentiles,
    /// Outbound degree.
    pub outbound: Percentiles,
    /// Nodes per total degree.
    pub histogram: BTreeMap<usize, usize>,
}

/// Broadcast coverage and propagation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Broadcasts {
    /// Broadcasts sent by the workload and the schedule.
    pub sent: u64,
    /// Broadcasts the origin node refused (not counted in `sent`): see
    /// [`Report::first_refusal`].
    pub refused: u64,
    /// Broadcasts whose coverage was measured (sent at least 30 s before the end).
    pub measured: u64,
    /// Share of the honest nodes live at sending time (origin excluded) that received it.
    pub coverage: Percentiles,
    /// Share of measured broadcasts that reached every such node.
    pub full_coverage_share: f64,
    /// Milliseconds from the broadcast to each receiver's application event.
    pub latency_ms: Percentiles,
    /// Duplicate copies dropped by the seen-caches, per broadcast, network-wide.
    pub duplicates_per_broadcast: f64,
}

/// Per-node traffic (all incarnations of every honest node, over the whole run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    /// Messages sent per node.
    pub messages_sent: Percentiles,
    /// Messages received per node.
    pub messages_received: Percentiles,
    /// Bytes sent per node (framing and encryption included).
    pub bytes_sent: Percentiles,
    /// Bytes received per node.
    pub bytes_received: Percentiles,
}

/// Unicasts and requests issued by the workload and how they ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    /// Unicasts sent.
    pub unicasts_sent: u64,
    /// Unicasts acknowledged.
    pub unicasts_delivered: u64,
    /// Unicasts reported failed.
    pub unicasts_failed: u64,
    /// Unicasts that reached the receiver's application.
    pub unicasts_received: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Requests answered with data.
    pub requests_answered: u64,
    /// Requests that failed (timeout, disconnection, not found).
    pub requests_failed: u64,
    /// Unicasts the sending node refused (not counted in `unicasts_sent`).
    pub unicasts_refused: u64,
    /// Requests the sending node refused (not counted in `requests_sent`).
    pub requests_refused: u64,
}

/// Memory of the simulated nodes by the core's own accounting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Peak, over samples, of the sum of `Node::buffered_bytes` over all nodes: connection
    /// buffers (partial packets, partial chunked messages, outbound queues, undrained
    /// transmits) and undrained node outputs. Sampled every sample interval, so it misses
    /// the transients within a step (the simulator drains outputs at once); see the two
    /// high-water marks below for those.
    pub peak_buffered_bytes_total: u64,
    /// The largest high-water mark of one node (`Node::peak_buffered_bytes`, which the
    /// core keeps whenever a connection's buffers change).
    pub peak_buffered_bytes_node: u64,
    /// The sum of every live node's high-water mark (an upper bound on the total at any
    /// one instant).
    pub sum_of_node_peaks_bytes: u64,
    /// Peak address book entries of one node (not counted in bytes by the core).
    pub peak_address_book_entries_node: u64,
    /// Peak resident memory of the whole simulator process (Linux `VmHWM`), when known:
    /// every node's full state plus the simulator's own.
    pub process_peak_rss_bytes: Option<u64>,
}

/// Gossip control traffic, summed over honest nodes (`NodeCounters`); all zero with flood
/// gossip but `duplicates`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GossipTotals {
    /// Gossip copies received that were already seen.
    pub duplicates: u64,
    /// Prunes sent (tree gossip).
    pub prunes: u64,
    /// Plain grafts sent after losing a pushing peer (tree gossip).
    pub grafts: u64,
    /// IHave messages sent.
    pub announcements: u64,
    /// Message ids named in them.
    pub ids_announced: u64,
    /// Announced ids asked for with IWant.
    pub ids_wanted: u64,
    /// Of those, asked again of another announcer after a request went unanswered.
    pub want_retries: u64,
    /// Messages sent in answer to IWant.
    pub served: u64,
}

impl From<&silver_p2p_core::node::NodeCounters> for GossipTotals {
    fn from(c: &silver_p2p_core::node::NodeCounters) -> Self {
        GossipTotals {
            duplicates: c.gossip_duplicates,
            prunes: c.gossip_prunes_sent,
            grafts: c.gossip_grafts_sent,
            announcements: c.gossip_announcements_sent,
            ids_announced: c.gossip_ids_announced,
            ids_wanted: c.gossip_ids_wanted,
            want_retries: c.gossip_want_retries,
            served: c.gossip_served,
        }
    }
}

impl GossipTotals {
    /// Adds `o`'s figures to these.
    pub(crate) fn add(&mut self, o: &GossipTotals) {
        self.duplicates += o.duplicates;
        self.prunes += o.prunes;
        self.grafts += o.grafts;
        self.announcements += o.announcements;
        self.ids_announced += o.ids_announced;
        self.ids_wanted += o.ids_wanted;
        self.want_retries += o.want_retries;
        self.served += o.served;
    }
}

/// What the sybil scenario did to honest nodes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SybilFigures {
    /// Fake addresses the sybils sent.
    pub fake_addrs_sent: u64,
    /// Unsolicited addresses honest nodes dropped by rate limit.
    pub honest_addrs_dropped: u64,
    /// Share of fake entries in live honest address books at the end.
    pub fake_share: Percentiles,
    /// Fake entries in honest tried tables (a fake never completes a handshake, so 0).
    pub fake_in_tried: u64,
}

/// The outcome of the liveness phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Liveness {
    /// Whether the network converged within the budget.
    pub converged: bool,
    /// Seconds after the faults stopped at which a probe broadcast reached every live
    /// node.
    pub converged_after_s: Option<f64>,
    /// Live honest nodes at the end.
    pub live_nodes: usize,
    /// Connected components of their graph at the end.
    pub components: usize,
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Initial honest nodes.
    pub nodes: usize,
    /// Hosts ever created (joins and sybils included).
    pub hosts: usize,
    /// Length of the safety phase, seconds.
    pub duration_s: f64,
    /// Simulated seconds actually run (both phases).
    pub simulated_s: f64,
    /// No invariant was violated.
    pub passed: bool,
    /// The command that replays this run.
    pub replay: String,
    /// Digest of the full event trace.
    pub trace_hash: String,
    /// Words in the trace.
    pub trace_len: u64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds the run took (not deterministic).
    pub wall_time_s: f64,
    /// Events per wall-clock second (not deterministic).
    pub events_per_sec: f64,
    /// Time to reach the outbound target.
    pub target_degree: TargetDegree,
    /// Degree distribution at the end.
    pub degree: Degrees,
    /// Broadcast coverage, latency and duplicates.
    pub broadcasts: Broadcasts,
    /// Unicasts and requests.
    pub delivery: Delivery,
    /// Messages and bytes per node.
    pub traffic: Traffic,
    /// Bans imposed by honest nodes (all reasons).
    pub bans: u64,
    /// Redials of persistent peers.
    pub reconnects: u64,
    /// Inbound peers honest nodes evicted to make room.
    pub evictions: u64,
    /// Outbound peers honest nodes replaced for poor health.
    pub replaced_unhealthy: u64,
    /// Gossip control traffic, network-wide.
    pub gossip: GossipTotals,
    /// Dials started and failed, network-wide.
    pub dials: u64,
    /// Dials failed before the handshake completed.
    pub dials_failed: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Memory.
    pub memory: Memory,
    /// Liveness phase.
    pub liveness: Liveness,
    /// Sybil figures, when the scenario has sybils.
    pub sybil: Option<SybilFigures>,
    /// Known core defects seen and tolerated (not violations), by name and count. See the
    /// simulator's README section for each.
    pub known_issues: BTreeMap<String, u64>,
    /// The first workload command a node refused, and why (`None`: none was). Refusals
    /// are not violations, but a workload the nodes refuse (a payload over
    /// `max_message_size`, say) means the run tested less than it was asked to: counted
    /// in `broadcasts.refused`, `delivery.unicasts_refused` and `delivery.requests_refused`.
    pub first_refusal: Option<String>,
    /// Invariant violations (at most 200 listed).
    pub violations: Vec<Violation>,
    /// Total violations.
    pub violation_count: u64,
}

impl Report {
    /// Panics with the seed, the replay command and the violations unless the run passed.
    pub fn assert_ok(&self) {
        if !self.passed {
            panic!("{}", self.failure_text());
        }
    }

    /// The failure message: seed, replay command and violations.
    pub fn failure_text(&self) -> String {
        let mut s = format!(
            "simulation failed: scenario {} seed {}\nreplay: {}\n",
            self.scenario, self.seed, self.replay
        );
        for v in self.violations.iter().take(20) {
            s += &format!(
                "  t={:.3}s [{}] {}{}\n",
                v.at_s,
                v.kind,
                v.node.map(|n| format!("n{n}: ")).unwrap_or_default(),
                v.detail
            );
        }
        if self.violation_count > 20 {
            s += &format!("  … {} violations in all\n", self.violation_count);
        }
        s
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report serializes")
    }
}

/// Peak resident set size of this process, from `/proc/self/status` (Linux only).
pub fn process_peak_rss() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmHWM:")
}

/// The memory this machine can give a new process without swapping, from `MemAvailable`
/// in `/proc/meminfo` (Linux only).
pub fn available_memory() -> Option<u64> {
    proc_bytes("/proc/meminfo", "MemAvailable:")
}

/// A `key  N kB` line of a `/proc` file, in bytes; `None` where there is no such file or
/// line.
fn proc_bytes(path: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Sim {
    /// The summary of the run so far (call after [`Sim::run`]).
    pub fn report(&mut self) -> Report {
        let now = self.now;
        let sc = &self.scenario;
        let secs = |t: silver_p2p_core::Timestamp| t.as_nanos() as f64 / 1e9;
        let honest: Vec<usize> = (0..self.hosts.len())
            .filter(|i| !self.hosts[*i].sybil)
            .collect();
        let target = self
            .hosts
            .first()
            .map(|h| h.config.limits.target_outbound)
            .unwrap_or(0);
        // Time to target.
        let initial: Vec<usize> = honest
            .iter()
            .copied()
            .filter(|i| self.hosts[*i].initial)
            .collect();
        let mut times: Vec<f64> = Vec::new();
        let mut all_at: Option<f64> = Some(0.0);
        for i in &initial {
            let h = &self.hosts[*i];
            match (h.reached_target_at, h.first_start) {
                (Some(r), Some(s)) => {
                    times.push(secs(r) - secs(s));
                    all_at = all_at.map(|a| a.max(secs(r)));
                }
                _ => all_at = None,
            }
        }
        let reached = times.len();
        let target_degree = TargetDegree {
            target,
            nodes: initial.len(),
            reached,
            seconds: Percentiles::of(&mut times),
            all_reached_at_s: if initial.is_empty() { None } else { all_at },
        };
        // Degrees.
        let mut total = Vec::new();
        let mut outb = Vec::new();
        let mut histogram = BTreeMap::new();
        for i in &honest {
            let h = &self.hosts[*i];
            if h.status != HostStatus::Up {
                continue;
            }
            total.push(h.peers.len() as f64);
            outb.push(h.outbound as f64);
            *histogram.entry(h.peers.len()).or_insert(0) += 1;
        }
        let degree = Degrees {
            total: Percentiles::of(&mut total),
            outbound: Percentiles::of(&mut outb),
            histogram,
        };
        // Traffic and counters.
        let mut per: Vec<Totals> = Vec::new();
        let mut bans = 0;
        let mut reconnects = 0;
        let mut dials = 0;
        let mut dials_failed = 0;
        let mut dropped = 0;
        let (mut evictions, mut replaced_unhealthy) = (0, 0);
        let mut gossip = GossipTotals::default();
        for i in &honest {
            let h = &self.hosts[*i];
            let mut t = h.totals.clone();
            if let Some(Actor::Node(n)) = &h.actor {
                t.add_node(n, now);
            }
            bans += t.bans;
            reconnects += t.reconnects;
            dials += t.dials;
            dials_failed += t.dials_failed;
            dropped += t.addrs_dropped;
            evictions += t.evicted;
            replaced_unhealthy += t.replaced_unhealthy;
            gossip.add(&t.gossip);
            per.push(t);
        }
        let col = |f: &dyn Fn(&Totals) -> u64| -> Percentiles {
            let mut v: Vec<f64> = per.iter().map(|t| f(t) as f64).collect();
            Percentiles::of(&mut v)
        };
        let traffic = Traffic {
            messages_sent: col(&|t| t.messages_sent),
            messages_received: col(&|t| t.messages_received),
            bytes_sent: col(&|t| t.bytes_sent),
            bytes_received: col(&|t| t.bytes_received),
        };
        let f = self.ledger.figures.clone();
        let mut cov = f.coverage.clone();
        let full = cov.iter().filter(|c| **c >= 1.0).count();
        let mut lat: Vec<f64> = f.latencies_us.iter().map(|u| *u as f64 / 1000.0).collect();
        let broadcasts = Broadcasts {
            sent: f.sent,
            refused: self.ledger.refused.broadcasts,
            measured: f.measured,
            full_coverage_share: if cov.is_empty() {
                0.0
            } else {
                full as f64 / cov.len() as f64
            },
            coverage: Percentiles::of(&mut cov),
            latency_ms: Percentiles::of(&mut lat),
            duplicates_per_broadcast: if f.sent == 0 {
                0.0
            } else {
                gossip.duplicates as f64 / f.sent as f64
            },
        };
        let l = &self.ledger;
        let delivery = Delivery {
            unicasts_sent: l.unicasts_sent,
            unicasts_delivered: l.unicasts_delivered,
            unicasts_failed: l.unicasts_failed,
            unicasts_received: l.unicasts_received,
            requests_sent: l.requests_sent,
            requests_answered: l.requests_answered,
            requests_failed: l.requests_failed,
            unicasts_refused: l.refused.unicasts,
            requests_refused: l.refused.requests,
        };
        let sybil = sc.sybils.as_ref().map(|_| {
            let mut shares = Vec::new();
            let mut in_tried = 0;
            let mut sent = 0;
            for h in &self.hosts {
                match &h.actor {
                    Some(Actor::Sybil(s)) => sent += s.sent_addrs,
                    Some(Actor::Node(n)) => {
                        let book = n.address_book();
                        let mut fake = 0;
                        for (a, info) in book.iter() {
                            if is_fake(a.ip()) {
                                fake += 1;
                                if info.in_tried {
                                    in_tried += 1;
                                }
                            }
                        }
                        shares.push(fake as f64 / book.len().max(1) as f64);
                    }
                    None => {}
                }
            }
            SybilFigures {
                fake_addrs_sent: sent,
                honest_addrs_dropped: dropped,
                fake_share: Percentiles::of(&mut shares),
                fake_in_tried: in_tried,
            }
        });
        let (components, live) = self.components();
        let liveness = Liveness {
            converged: self.converged_at.is_some(),
            converged_after_s: self.converged_at.map(|t| secs(t) - secs(self.safety_end)),
            live_nodes: live,
            components,
        };
        let wall = self.wall.as_secs_f64();
        Report {
            scenario: sc.name.clone(),
            seed: sc.seed,
            nodes: sc.nodes,
            hosts: self.hosts.len(),
            duration_s: sc.duration.as_secs_f64(),
            simulated_s: secs(now),
            passed: self.violation_count == 0,
            replay: sc.replay_command().unwrap_or_else(|| {
                format!(
                    "rerun scenario '{}' with .seed({}) (library scenario)",
                    sc.name, sc.seed
                )
            }),
            trace_hash: self.trace.hex(),
            trace_len: self.trace.len(),
            events: self.events,
            wall_time_s: wall,
            events_per_sec: if wall > 0.0 {
                self.events as f64 / wall
            } else {
                0.0
            },
            target_degree,
            degree,
            broadcasts,
            delivery,
            traffic,
            bans,
            reconnects,
            evictions,
            replaced_unhealthy,
            gossip,
            dials,
            dials_failed,
            faults: self.counts.clone(),
            memory: Memory {
                peak_buffered_bytes_total: self.peak_buffered_total,
                peak_buffered_bytes_node: self.peak_buffered_node,
                sum_of_node_peaks_bytes: self.peak_buffered_node_sum,
                peak_address_book_entries_node: self.peak_addrbook_node,
                process_peak_rss_bytes: None,
            },
            liveness,
            sybil,
            known_issues: self
                .ledger
                .known_issues
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            first_refusal: self.ledger.refused.first.clone(),
            violations: self.violations.clone(),
            violation_count: self.violation_count,
        }
    }
}

fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} · {} nodes ({} hosts ever) · seed {} · {:.0}s safety + {:.0}s liveness simulated",
            self.scenario,
            self.nodes,
            self.hosts,
            self.seed,
            self.duration_s,
            self.simulated_s - self.duration_s
        )?;
        let t = &self.target_degree;
        writeln!(
            f,
            "target degree ({} outbound): {}/{} nodes reached it; time p50 {:.1}s p90 {:.1}s max {:.1}s; all by {}",
            t.target,
            t.reached,
            t.nodes,
            t.seconds.p50,
            t.seconds.p90,
            t.seconds.max,
            t.all_reached_at_s
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "never".into())
        )?;
        let d = &self.degree;
        writeln!(
            f,
            "degree at end: total min/p50/p90/max {:.0}/{:.0}/{:.0}/{:.0} (mean {:.1}); outbound mean {:.1}",
            d.total.min,
            d.total.p50,
            d.total.p90,
            d.total.max,
            d.total.mean,
            d.outbound.mean
        )?;
        let b = &self.broadcasts;
        writeln!(
            f,
            "broadcasts: {} sent{}, {} measured; coverage mean {:.2}% min {:.2}%, full {:.1}%; {:.1} duplicates each",
            b.sent,
            refused_text(b.refused),
            b.measured,
            b.coverage.mean * 100.0,
            b.coverage.min * 100.0,
            b.full_coverage_share * 100.0,
            b.duplicates_per_broadcast
        )?;
        writeln!(
            f,
            "propagation latency: p50 {:.1}ms p90 {:.1}ms p99 {:.1}ms max {:.1}ms ({} deliveries)",
            b.latency_ms.p50,
            b.latency_ms.p90,
            b.latency_ms.p99,
            b.latency_ms.max,
            b.latency_ms.count
        )?;
        let u = &self.delivery;
        writeln!(
            f,
            "unicasts: {} sent{}, {} delivered, {} failed, {} received; requests: {} sent{}, {} answered, {} failed",
            u.unicasts_sent,
            refused_text(u.unicasts_refused),
            u.unicasts_delivered,
            u.unicasts_failed,
            u.unicasts_received,
            u.requests_sent,
            refused_text(u.requests_refused),
            u.requests_answered,
            u.requests_failed
        )?;
        if let Some(r) = &self.first_refusal {
            writeln!(f, "first refused command: {r}")?;
        }
        let tr = &self.traffic;
        writeln!(
            f,
            "per node: messages sent mean {:.0} max {:.0}; bytes sent mean {} max {}; received mean {}",
            tr.messages_sent.mean,
            tr.messages_sent.max,
            bytes(tr.bytes_sent.mean),
            bytes(tr.bytes_sent.max),
            bytes(tr.bytes_received.mean)
        )?;
        writeln!(
            f,
            "bans {} · reconnects {} · evictions {} · replaced unhealthy {} · dials {} ({} failed)",
            self.bans,
            self.reconnects,
            self.evictions,
            self.replaced_unhealthy,
            self.dials,
            self.dials_failed
        )?;
        let g = &self.gossip;
        if g.announcements + g.prunes + g.grafts > 0 {
            writeln!(
                f,
                "tree gossip: {} prunes, {} grafts, {} announcements naming {} ids, {} ids asked for ({} asked again of another peer), {} served",
                g.prunes, g.grafts, g.announcements, g.ids_announced, g.ids_wanted, g.want_retries, g.served
            )?;
        }
        let x = &self.faults;
        writeln!(
            f,
            "faults: {} stalls, {} resets ({} half-open), {} partitions, {} crashes, {} restarts, {} leaves, {} joins, {} dial faults",
            x.stalls, x.resets, x.half_open, x.partitions, x.crashes, x.restarts, x.leaves, x.joins, x.dial_faults
        )?;
        let m = &self.memory;
        writeln!(
            f,
            "memory (core accounting): peak buffered {} total (sampled), high-water {} per node ({} summed); peak address book {} entries{}",
            bytes(m.peak_buffered_bytes_total as f64),
            bytes(m.peak_buffered_bytes_node as f64),
            bytes(m.sum_of_node_peaks_bytes as f64),
            m.peak_address_book_entries_node,
            m.process_peak_rss_bytes
                .map(|r| format!("; process peak RSS {}", bytes(r as f64)))
                .unwrap_or_default()
        )?;
        if let Some(s) = &self.sybil {
            writeln!(
                f,
                "sybil: {} fake addresses sent, {} dropped by rate limits; fake share of honest books mean {:.1}% max {:.1}%; {} in tried",
                s.fake_addrs_sent,
                s.honest_addrs_dropped,
                s.fake_share.mean * 100.0,
                s.fake_share.max * 100.0,
                s.fake_in_tried
            )?;
        }
        let lv = &self.liveness;
        writeln!(
            f,
            "liveness: {} ({} live nodes, {} component{})",
            match lv.converged_after_s {
                Some(s) => format!("converged {s:.1}s after faults stopped"),
                None => "did not converge".into(),
            },
            lv.live_nodes,
            lv.components,
            if lv.components == 1 { "" } else { "s" }
        )?;
        writeln!(
            f,
            "{} events in {:.2}s wall ({:.0} events/s) · trace {}",
            self.events, self.wall_time_s, self.events_per_sec, self.trace_hash
        )?;
        for (k, v) in &self.known_issues {
            writeln!(f, "known core issue seen (tolerated): {k} × {v}")?;
        }
        if self.passed {
            write!(f, "PASSED: no invariant violated")
        } else {
            write!(f, "{}", self.failure_text())
        }
    }
}

/// " (N refused)" for a summary line, or nothing when none was.
fn refused_text(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} refused)")
    }
}

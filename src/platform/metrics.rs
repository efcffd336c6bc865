//! Process-wide metrics in the Prometheus/OpenMetrics text format
//! (`prometheus-client`): counters that code paths bump as things happen,
//! and gauges that `GET /metrics` refreshes from the database when it is
//! scraped (`http/routes/metrics.rs`).

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub type Labels = Vec<(String, String)>;
pub type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<Labels, Counter>,
    pub http_duration: Family<Labels, Histogram>,
    pub appends: Family<Labels, Counter>,
    pub append_conflicts: Family<Labels, Counter>,
    pub login_failures: Family<Labels, Counter>,
    pub logins_throttled: Family<Labels, Counter>,
    pub consumer_position: Family<Labels, Gauge>,
    pub consumer_lag_events: Family<Labels, Gauge>,
    pub consumer_lag_seconds: Family<Labels, FloatGauge>,
    pub consumer_leading: Family<Labels, Gauge>,
    pub consumer_stuck: Family<Labels, Gauge>,
    pub horizon_holder_age_seconds: FloatGauge,
    pub horizon_holder_pid: Gauge,
    pub jobs_queued: Gauge,
    pub oldest_queued_job_seconds: FloatGauge,
    pub machines_online: Family<Labels, Gauge>,
    pub pool_connections: Family<Labels, Gauge>,
    pub reads: Family<Labels, Counter>,
    pub read_wait: Family<Labels, Histogram>,
    pub heartbeat_cache_hits: Counter,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("warden");
        let http_duration = Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let metrics = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration,
            appends: Family::default(),
            append_conflicts: Family::default(),
            login_failures: Family::default(),
            logins_throttled: Family::default(),
            consumer_position: Family::default(),
            consumer_lag_events: Family::default(),
            consumer_lag_seconds: Family::default(),
            consumer_leading: Family::default(),
            consumer_stuck: Family::default(),
            horizon_holder_age_seconds: FloatGauge::default(),
            horizon_holder_pid: Gauge::default(),
            jobs_queued: Gauge::default(),
            oldest_queued_job_seconds: FloatGauge::default(),
            machines_online: Family::default(),
            pool_connections: Family::default(),
            reads: Family::default(),
            read_wait: Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets())),
            heartbeat_cache_hits: Counter::default(),
        };
        let m = &metrics;
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.http_duration.clone(),
        );
        registry.register(
            "appends",
            "Commands that appended events, by aggregate",
            m.appends.clone(),
        );
        registry.register(
            "append_conflicts",
            "Appends refused for a concurrent change of the same stream, by aggregate",
            m.append_conflicts.clone(),
        );
        registry.register(
            "heartbeat_cache_hits",
            "Project-W heartbeats answered from the heartbeat cache, without a database read",
            m.heartbeat_cache_hits.clone(),
        );
        registry.register(
            "login_failures",
            "Failed password checks, by provider",
            m.login_failures.clone(),
        );
        registry.register(
            "logins_throttled",
            "Password checks refused by the brute-force throttle, by provider",
            m.logins_throttled.clone(),
        );
        registry.register(
            "consumer_position",
            "Log position of each consumer's checkpoint (shared by all instances)",
            m.consumer_position.clone(),
        );
        registry.register(
            "consumer_lag_events",
            "Readable events each consumer has not processed yet",
            m.consumer_lag_events.clone(),
        );
        registry.register(
            "consumer_lag_seconds",
            "Age of the oldest event each consumer has not processed yet",
            m.consumer_lag_seconds.clone(),
        );
        registry.register(
            "consumer_leading",
            "1 when this instance leads the consumer",
            m.consumer_leading.clone(),
        );
        registry.register(
            "consumer_stuck",
            "1 when the consumer stopped at an event this release cannot read",
            m.consumer_stuck.clone(),
        );
        registry.register(
            "log_horizon_holder_age_seconds",
            "Age of the oldest writing transaction in the cluster (it holds every projector back)",
            m.horizon_holder_age_seconds.clone(),
        );
        registry.register(
            "log_horizon_holder_pid",
            "Backend pid of that transaction (0: none)",
            m.horizon_holder_pid.clone(),
        );
        registry.register("jobs_queued", "Jobs waiting for a runner", m.jobs_queued.clone());
        registry.register(
            "oldest_queued_job_seconds",
            "Age of the oldest queued job",
            m.oldest_queued_job_seconds.clone(),
        );
        registry.register(
            "machines_online",
            "Runner machines in contact within runners.online_timeout, by protocol",
            m.machines_online.clone(),
        );
        registry.register(
            "db_pool_connections",
            "This instance's database pool: open and idle connections",
            m.pool_connections.clone(),
        );
        registry.register(
            "replica_reads",
            "Admin and audit reads, by where they went (a replica or the primary)",
            m.reads.clone(),
        );
        registry.register(
            "replica_read_wait_seconds",
            "Time a read waited for a replica to catch up, by where it went",
            m.read_wait.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Everything in the Prometheus text format (0.0.4), which every
    /// scraper and `promtool` read. `prometheus-client` writes OpenMetrics,
    /// which differs only in that a counter's `# HELP`/`# TYPE` name lacks
    /// the `_total` its samples carry; those two lines are renamed.
    pub fn render(&self) -> String {
        let mut open_metrics = String::new();
        prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry)
            .expect("writing to a String cannot fail");
        let counters: std::collections::HashSet<&str> = open_metrics
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut text = String::with_capacity(open_metrics.len() + counters.len() * 16);
        for line in open_metrics.lines() {
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
            });
            match renamed {
                Some(line) => text.push_str(&line),
                None if line == "# EOF" => continue,
                None => text.push_str(line),
            }
            text.push('\n');
        }
        text
    }
}

/// The metrics of this process.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// A label set.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

//! Latency statistics, the ghz-like block per run, and the summary table of ratios
//! against the no-op baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What one load-generator run against one server measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests completed (answered, whatever the answer).
    pub count: u64,
    /// Wall time of the run.
    pub total: Duration,
    /// Completed requests per second, as the load generator reports it.
    pub rps: f64,
    /// Longest request.
    pub slowest: Duration,
    /// Shortest request, when the load generator reports it (wrk does not).
    pub fastest: Option<Duration>,
    /// Mean latency.
    pub average: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Answers by kind (`[HTTP 200]`, `[OK / decision OK]`, ...) → count.
    pub statuses: BTreeMap<String, u64>,
    /// Share of the machine's CPU time that processes other than the bench's own used
    /// during the run (see [`CpuMeter`]).
    pub other_cpu: Option<f64>,
    /// CPU each named process used during the run, in cores (1.0 = one core busy).
    pub process_cpu: Vec<(String, f64)>,
}

/// The name under which [`Stats::process_cpu`] holds the server's own CPU.
pub const SERVER: &str = "server";

impl Stats {
    /// The server's CPU time per answered request, when it was measured.
    pub fn cpu_per_request(&self) -> Option<Duration> {
        let (_, cores) = self.process_cpu.iter().find(|(name, _)| name == SERVER)?;
        let seconds = cores * self.total.as_secs_f64() / self.count as f64;
        Some(Duration::from_secs_f64(seconds))
    }

    /// Statistics from every request's latency (nanoseconds, any order).
    pub fn from_latencies(
        mut nanos: Vec<u64>,
        total: Duration,
        statuses: BTreeMap<String, u64>,
    ) -> Self {
        assert!(!nanos.is_empty(), "a run without a single answered request");
        nanos.sort_unstable();
        let count = nanos.len() as u64;
        let sum: u128 = nanos.iter().map(|&n| u128::from(n)).sum();
        let at = |q: f64| Duration::from_nanos(percentile(&nanos, q));
        Self {
            count,
            total,
            rps: count as f64 / total.as_secs_f64(),
            slowest: Duration::from_nanos(nanos[nanos.len() - 1]),
            fastest: Some(Duration::from_nanos(nanos[0])),
            average: Duration::from_nanos((sum / u128::from(count)) as u64),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            statuses,
            other_cpu: None,
            process_cpu: Vec::new(),
        }
    }
}

/// The run with the median throughput (the lower middle one of an even count).
pub fn median_by_rps(mut runs: Vec<Stats>) -> Stats {
    assert!(!runs.is_empty(), "no runs");
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let middle = (runs.len() - 1) / 2;
    runs.swap_remove(middle)
}

/// The `q`-quantile of sorted values, nearest-rank (as ghz and most tools do).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration the way ghz prints it (`1.71 ms`, `830.12 µs`, `2.75 s`).
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.2} µs", s * 1e6)
    }
}

/// One ghz-like block: `title`, then Summary, Latency distribution, Status distribution.
pub fn block(title: &str, stats: &Stats, status_note: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "--- {title}");
    let _ = writeln!(out, "Summary:");
    let _ = writeln!(out, "  Count:        {}", stats.count);
    let _ = writeln!(out, "  Total:        {}", human(stats.total));
    let _ = writeln!(out, "  Slowest:      {}", human(stats.slowest));
    let fastest = stats
        .fastest
        .map_or("n/a (not reported)".to_string(), human);
    let _ = writeln!(out, "  Fastest:      {fastest}");
    let _ = writeln!(out, "  Average:      {}", human(stats.average));
    let _ = writeln!(out, "  Requests/sec: {:.2}", stats.rps);
    if let Some(other) = stats.other_cpu {
        let warn = if other > 0.05 {
            "  <- competing load: numbers suspect"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  Other processes' CPU during the run: {:.1} % of the machine{warn}",
            other * 100.0
        );
    }
    if !stats.process_cpu.is_empty() {
        let used: Vec<String> = stats
            .process_cpu
            .iter()
            .map(|(name, cores)| format!("{name} {:.0} %", cores * 100.0))
            .collect();
        let _ = writeln!(out, "  CPU (% of one core): {}", used.join(", "));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Latency distribution:");
    for (p, d) in [(50, stats.p50), (90, stats.p90), (99, stats.p99)] {
        let _ = writeln!(out, "  {p} % in {}", human(d));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Status distribution ({status_note}):");
    for (status, n) in &stats.statuses {
        let _ = writeln!(out, "  {status:<36} {n} responses");
    }
    out
}

/// The ghz-like block of the median round (by req/s) of `runs`, titled `title (median
/// round)`, then a line with every round's req/s and p99.
pub fn rounds_block(title: &str, runs: &[Stats], status_note: &str) -> String {
    let all: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.0} req/s p99 {}", r.rps, human(r.p99)))
        .collect();
    let median = median_by_rps(runs.to_vec());
    format!(
        "{}rounds: {}\n",
        block(&format!("{title} (median round)"), &median, status_note),
        all.join("; ")
    )
}

/// What the issue asks of a ratio.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
    /// Shown for information.
    None,
}

/// One line of the summary table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Part and load generator, e.g. `warm, h2load`.
    pub part: String,
    /// What is compared, e.g. `req/s`.
    pub metric: &'static str,
    /// mesh-authz's value (formatted).
    pub mesh: String,
    /// The baseline's value (formatted).
    pub baseline: String,
    /// mesh-authz / baseline.
    pub ratio: f64,
    /// The target for the ratio.
    pub target: Target,
}

impl Row {
    /// Throughput row: mesh-authz's req/s against the baseline's. Each side shows its
    /// median round; the ratio is the median of the per-round ratios (see [`paired`]).
    pub fn rps(part: &str, mesh: &[Stats], baseline: &[Stats], target: Target) -> Self {
        Self {
            part: part.to_string(),
            metric: "req/s",
            mesh: format!("{:.0}", median_by_rps(mesh.to_vec()).rps),
            baseline: format!("{:.0}", median_by_rps(baseline.to_vec()).rps),
            ratio: paired(mesh, baseline, |s| s.rps),
            target,
        }
    }

    /// p50 row: mesh-authz's median latency against the baseline's (median rounds shown,
    /// median of per-round ratios).
    pub fn p50(part: &str, mesh: &[Stats], baseline: &[Stats], target: Target) -> Self {
        Self::latency(part, "p50", |s| s.p50, mesh, baseline, target)
    }

    /// p99 row: mesh-authz's 99th percentile latency against the baseline's (median
    /// rounds shown, median of per-round ratios).
    pub fn p99(part: &str, mesh: &[Stats], baseline: &[Stats], target: Target) -> Self {
        Self::latency(part, "p99", |s| s.p99, mesh, baseline, target)
    }

    fn latency(
        part: &str,
        metric: &'static str,
        pick: fn(&Stats) -> Duration,
        mesh: &[Stats],
        baseline: &[Stats],
        target: Target,
    ) -> Self {
        let median = |runs: &[Stats]| {
            let mut values: Vec<Duration> = runs.iter().map(pick).collect();
            values.sort_unstable();
            values[(values.len() - 1) / 2]
        };
        Self {
            part: part.to_string(),
            metric,
            mesh: human(median(mesh)),
            baseline: human(median(baseline)),
            ratio: paired(mesh, baseline, |s| pick(s).as_secs_f64()),
            target,
        }
    }
}

impl Row {
    /// CPU row: the server's CPU time per check against the baseline's (median rounds by
    /// CPU shown, median of per-round ratios).
    pub fn cpu(part: &str, mesh: &[Stats], baseline: &[Stats], target: Target) -> Self {
        let cpu = |s: &Stats| s.cpu_per_request().map_or(f64::NAN, |d| d.as_secs_f64());
        let median = |runs: &[Stats]| {
            let mut values: Vec<f64> = runs.iter().map(cpu).collect();
            values.sort_by(f64::total_cmp);
            values[(values.len() - 1) / 2]
        };
        Self {
            part: part.to_string(),
            metric: "CPU per check",
            mesh: human(Duration::from_secs_f64(median(mesh).max(0.0))),
            baseline: human(Duration::from_secs_f64(median(baseline).max(0.0))),
            ratio: paired(mesh, baseline, cpu),
            target,
        }
    }
}

/// The median over rounds of `value(mesh round i) / value(baseline round i)`. Round i of
/// each server ran back to back, so a drift of a shared machine's speed (which moves
/// whole rounds by 20 % here) mostly cancels within a pair; the median drops a pair that
/// a burst hit on one side only.
pub fn paired(mesh: &[Stats], baseline: &[Stats], value: impl Fn(&Stats) -> f64) -> f64 {
    assert_eq!(mesh.len(), baseline.len(), "paired rounds");
    assert!(!mesh.is_empty(), "no rounds");
    let mut ratios: Vec<f64> = mesh
        .iter()
        .zip(baseline)
        .map(|(m, b)| value(m) / value(b))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    }
}

/// The summary table: each ratio with the target and PASS/FAIL (reported, never
/// enforced).
pub fn summary(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| part | metric | mesh-authz | no-op baseline | ratio | target | result |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in rows {
        let (target, result) = match row.target {
            Target::AtLeast(t) => (format!("≥ {t}×"), pass(row.ratio >= t)),
            Target::AtMost(t) => (format!("≤ {t}×"), pass(row.ratio <= t)),
            Target::None => ("-".to_string(), "info"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3}× | {target} | {result} |",
            row.part, row.metric, row.mesh, row.baseline, row.ratio
        );
    }
    out
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// Measures how much CPU processes other than the bench's own (this process, its waited-for
/// children such as h2load and wrk, and the given server and Envoy processes) used over a
/// run: a build or another benchmark on the same cores makes the numbers meaningless.
pub struct CpuMeter {
    pids: Vec<u32>,
    machine: (u64, u64),
    ours: u64,
    /// Each pid's own ticks at the start.
    each: Vec<u64>,
    children_at_start: u64,
    started: std::time::Instant,
}

impl CpuMeter {
    /// Starts measuring; `pids` are the bench's other running processes.
    pub fn start(pids: &[u32]) -> Option<Self> {
        Some(Self {
            pids: pids.to_vec(),
            machine: machine_ticks()?,
            ours: ours(pids),
            each: pids
                .iter()
                .map(|pid| process_ticks(&pid.to_string(), false))
                .collect(),
            children_at_start: process_ticks("self", true)
                .saturating_sub(process_ticks("self", false)),
            started: std::time::Instant::now(),
        })
    }

    /// CPU this process's waited-for children (wrk, h2load) used since the start, in cores.
    pub fn children_cores(&self) -> f64 {
        let children = process_ticks("self", true).saturating_sub(process_ticks("self", false));
        let at_start = self.children_at_start;
        children.saturating_sub(at_start) as f64 / 100.0 / self.started.elapsed().as_secs_f64()
    }

    /// CPU the `i`-th pid used since the start, in cores (clock ticks at 100 Hz, Linux's
    /// USER_HZ).
    pub fn cores(&self, i: usize) -> f64 {
        let (Some(pid), Some(start)) = (self.pids.get(i), self.each.get(i)) else {
            return 0.0;
        };
        let ticks = process_ticks(&pid.to_string(), false).saturating_sub(*start);
        ticks as f64 / 100.0 / self.started.elapsed().as_secs_f64()
    }

    /// The other processes' busy time as a share of the machine's time since the start.
    pub fn other_share(&self) -> Option<f64> {
        let (total, busy) = machine_ticks()?;
        let total = total.saturating_sub(self.machine.0).max(1);
        let busy = busy.saturating_sub(self.machine.1);
        let ours = ours(&self.pids).saturating_sub(self.ours);
        Some(busy.saturating_sub(ours) as f64 / total as f64)
    }
}

/// The whole machine's (total, busy) clock ticks, from /proc/stat's `cpu` line.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total, total - idle))
}

/// Clock ticks used by this process with its waited-for children, and by `pids`.
fn ours(pids: &[u32]) -> u64 {
    let own = process_ticks("self", true);
    let others: u64 = pids
        .iter()
        .map(|pid| process_ticks(&pid.to_string(), false))
        .sum();
    own + others
}

/// utime + stime (+ cutime + cstime) of a process from /proc/PID/stat; 0 if unreadable.
fn process_ticks(pid: &str, with_children: bool) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the `(comm)`, which may hold spaces: state is the first, utime the 12th.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let take = if with_children { 4 } else { 2 };
    fields.iter().skip(11).take(take).sum()
}

//! Load bench: mesh-authz against a no-op Check server, measured the ghz way.
//!
//! `cargo bench --bench load` runs every part and prints a ghz-like report per run and a
//! summary of ratios against the no-op baseline with the performance issue's targets
//! (reported, never enforced). `cargo bench --bench load -- warm|cold|rate|soak|manifests|overload|envoy|memory|session|traces` runs
//! some parts; `--quick` makes every part short (a smoke run).
//!
//! - **warm**: h2load (c8, m16, one framed 1.35 KB Istio-like CheckRequest, the one
//!   `benches/ghz/` sends) against three servers: mesh-authz with the built-in quickstart
//!   config as shipped (audit to stdout, redirected to a file; config watching; dynamic
//!   metadata), the same without its `audit:` section, and the no-op baseline. alice's
//!   demo RS256 token already verified, groups from the static table; also a deny variant
//!   (no token, 401). Three rounds per server, rotating the order so that a drift of the
//!   machine hits all alike. Reports the server's CPU per check next to throughput, and
//!   whether the audit file has one line per check answered.
//! - **rate**: h2load at a fixed offered rate, 50 % and 80 % of the no-op's capacity
//!   measured in the same run, against the quickstart as shipped and the no-op: latency
//!   when not saturated.
//! - **soak**: the quickstart as shipped at full load for 60 s; its audit file must hold
//!   one line per check answered, none dropped.
//! - **manifests**: the same h2load runs against `manifests/base/config.yaml` as shipped
//!   (pointed at a fake Gerrit and IdP in this process) and the no-op.
//! - **overload**: twice the quickstart's own capacity offered over 64 connections × 1024
//!   streams: checks decided per second against the capacity, how many were refused or
//!   expired, answers within Envoy's 0.5 s, peak memory.
//! - **cold** and **envoy** run the quickstart as shipped with the `rsa-a` test key in its
//!   JWKS, since they sign their own tokens.
//! - **cold**: a tonic driver with the same shape (8 connections × 16 calls in flight)
//!   sending a distinct RS256 token per request; also the warm request, so that both load
//!   generators show the warm ratio.
//! - **envoy**: Envoy (one worker) with ext_authz to either server, wrk over HTTP/1.1;
//!   nine 3 s rounds per target, alternating. Envoy is pinned to CPU 0 and the rest to the
//!   other CPUs (`LOAD_BENCH_PIN=off` to let the scheduler place them), and each round
//!   reports the CPU Envoy, the Check server and wrk used.
//!
//! Ratios are medians of per-round ratios: round i of mesh-authz and of the baseline ran
//! back to back, so a drift of the shared machine's speed mostly cancels within a pair.
//! - **traces**: the quickstart as shipped (audit on) with OTLP trace export on, every
//!   Check sampled (`OTEL_TRACES_SAMPLER=always_on`), to a collector in a process of its
//!   own, against the same config with export off and the no-op: what traces cost, at
//!   saturation and at a fixed rate of half the traced-off capacity.
//! - **memory**: RSS of mesh-authz with default cache bounds after a million distinct
//!   EdDSA tokens from 100,000 users, groups from a fake Gerrit.
//!
//! Every server, Envoy and the load generators (h2load, wrk) are separate processes; the
//! driver and the fake Gerrit run in this one. Under `cargo test` (no `--bench` argument)
//! the bench does nothing: nothing is timed in tests. Each run reports how much CPU other
//! processes used meanwhile; `LOAD_BENCH_KEEP=1` keeps the temp dir (configs, request
//! bodies, server logs). Envoy comes from `ENVOY_BIN`, `.venv` or `target/envoy-venv`;
//! without it the envoy part is SKIPPED.

#[path = "../common/mod.rs"]
mod common;
mod driver;
mod envoy;
#[path = "../../tests/support/envoy_process.rs"]
mod envoy_process;
mod h2load;
mod memory;
mod report;
mod requests;
mod servers;

use driver::Expect;
use report::{block, CpuMeter, Row, Stats, Target};
use requests::{Signer, ISSUER};
use servers::ServerProcess;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::Bytes;

/// The parts of the bench, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Warm,
    Cold,
    Rate,
    Soak,
    Manifests,
    Overload,
    Envoy,
    Memory,
    Session,
    Traces,
}

const ALL_PARTS: [Part; 10] = [
    Part::Warm,
    Part::Cold,
    Part::Rate,
    Part::Soak,
    Part::Manifests,
    Part::Overload,
    Part::Envoy,
    Part::Memory,
    Part::Session,
    Part::Traces,
];

/// How much each part sends.
#[derive(Debug, Clone, Copy)]
struct Scale {
    h2load: h2load::Settings,
    h2load_warmup: u64,
    /// Warm h2load runs per server, alternating between the servers; the median counts.
    rounds: usize,
    /// Length of each fixed-rate run.
    rate_seconds: u32,
    /// Length of the overload run.
    overload_seconds: u32,
    /// Length of the audit soak at full load.
    soak_seconds: u32,
    driver: driver::Settings,
    driver_requests: usize,
    driver_warmup: usize,
    cold_tokens: usize,
    wrk: envoy::Wrk,
    wrk_warmup_seconds: u32,
    /// wrk runs per target, alternating between the targets; the median counts.
    wrk_rounds: usize,
    memory: memory::Scale,
}

impl Scale {
    /// The issue's settings.
    fn full() -> Self {
        Self {
            h2load: h2load::Settings {
                requests: 200_000,
                connections: 8,
                streams: 16,
            },
            h2load_warmup: 20_000,
            rounds: 3,
            rate_seconds: 5,
            overload_seconds: 30,
            soak_seconds: 60,
            driver: driver::Settings {
                connections: 8,
                concurrency: 16,
            },
            driver_requests: 200_000,
            driver_warmup: 20_000,
            cold_tokens: 40_000,
            wrk: envoy::Wrk {
                connections: 16,
                seconds: 3,
            },
            wrk_warmup_seconds: 2,
            wrk_rounds: 9,
            memory: memory::Scale {
                tokens: 1_000_000,
                users: 100_000,
                step: 100_000,
                warmup_tokens: 10_000,
            },
        }
    }

    /// A smoke run: the same shapes, a tenth or less of the work.
    fn quick() -> Self {
        let full = Self::full();
        Self {
            h2load: full.h2load.with_requests(20_000),
            h2load_warmup: 2_000,
            rounds: 1,
            rate_seconds: 2,
            overload_seconds: 3,
            soak_seconds: 3,
            driver_requests: 20_000,
            driver_warmup: 2_000,
            cold_tokens: 2_000,
            wrk: envoy::Wrk {
                seconds: 3,
                ..full.wrk
            },
            wrk_warmup_seconds: 1,
            wrk_rounds: 1,
            memory: memory::Scale {
                tokens: 20_000,
                users: 2_000,
                step: 10_000,
                warmup_tokens: 1_000,
            },
            ..full
        }
    }
}

/// The pause before each measured run: the previous run's tail settles.
const QUIET: Duration = Duration::from_millis(500);

/// What every part shares.
struct Bench {
    scale: Scale,
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    /// alice's RS256 token, verified once by the warm-up and then from the cache.
    token: String,
    /// The quickstart's demo token for alice (`examples/quickstart/alice.jwt`).
    alice: String,
    /// Summary rows, in order.
    rows: Vec<Row>,
    /// Lines printed under the summary table.
    notes: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == servers::OTLP_SINK_FLAG) {
        servers::serve_otlp_sink();
    }
    if args.iter().any(|a| a == servers::NOOP_FLAG) {
        servers::serve_noop(args.iter().any(|a| a == servers::UNDECODED_FLAG));
    }
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "load bench: nothing to do outside `cargo bench --bench load` (no timing in tests)"
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let parts = parts(&args);
    let started = Instant::now();
    let temp = tempfile::tempdir().expect("a temp dir for configs and logs");
    let dir = temp.path().to_path_buf();
    // LOAD_BENCH_KEEP=1 keeps the configs, request bodies and server logs for a look.
    let _remove_on_exit = if std::env::var_os("LOAD_BENCH_KEEP").is_some() {
        eprintln!("keeping {}", temp.keep().display());
        None
    } else {
        Some(temp)
    };
    let mut bench = Bench {
        scale: if quick { Scale::quick() } else { Scale::full() },
        dir,
        runtime: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime for the driver"),
        token: Signer::rsa_a().sign(&requests::claims(ISSUER, "alice", 0)),
        alice: include_str!("../../examples/quickstart/alice.jwt")
            .trim()
            .to_string(),
        rows: Vec::new(),
        notes: Vec::new(),
    };
    println!("{}", header(&bench, &parts, quick));
    for part in &parts {
        let t = Instant::now();
        match part {
            Part::Warm => warm(&mut bench),
            Part::Cold => cold(&mut bench),
            Part::Rate => rate(&mut bench),
            Part::Overload => overload(&mut bench),
            Part::Manifests => manifests_part(&mut bench),
            Part::Soak => soak(&mut bench),
            Part::Envoy => envoy_part(&mut bench),
            Part::Memory => memory_part(&mut bench),
            Part::Session => session_part(&mut bench),
            Part::Traces => traces_part(&mut bench),
        }
        eprintln!("part {part:?} took {}", report::human(t.elapsed()));
    }
    println!(
        "\n=== Summary (ratio: median over back-to-back rounds of mesh-authz / no-op baseline; the two value columns are each side's median round; targets reported, not enforced)\n"
    );
    println!("{}", report::summary(&bench.rows));
    for note in &bench.notes {
        println!("{note}");
    }
    println!("\nbench time: {}", report::human(started.elapsed()));
}

/// The parts named on the command line (`warm`, `cold`, `envoy`, `memory`), or all.
fn parts(args: &[String]) -> Vec<Part> {
    let named: Vec<Part> = ALL_PARTS
        .into_iter()
        .filter(|p| {
            let name = format!("{p:?}").to_lowercase();
            args.contains(&name)
        })
        .collect();
    if named.is_empty() {
        ALL_PARTS.to_vec()
    } else {
        named
    }
}

/// A command's first output line, or why there is none.
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = [out.stdout, out.stderr].concat();
            let text = String::from_utf8_lossy(&text);
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(e) => format!("unavailable ({e})"),
    }
}

/// The report's head: when, on what, with which tools and commands.
fn header(bench: &Bench, parts: &[Part], quick: bool) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let envoy = envoy::find().map_or_else(|why| why, |path| envoy::version(&path));
    let warm = requests::encode(&requests::check_request(Some(&bench.token)));
    let deny = requests::encode(&requests::check_request(None));
    let s = bench.scale;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# mesh-authz load bench{}",
        if quick { " (--quick)" } else { "" }
    );
    let _ = writeln!(
        out,
        "date:    {}",
        first_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])
    );
    let _ = writeln!(out, "nproc:   {cores}");
    let _ = writeln!(out, "cpu:     {cpu}");
    let _ = writeln!(out, "rustc:   {}", first_line("rustc", &["--version"]));
    let _ = writeln!(out, "h2load:  {}", first_line("h2load", &["--version"]));
    let _ = writeln!(out, "wrk:     {}", first_line("wrk", &["-v"]));
    let _ = writeln!(out, "envoy:   {envoy}");
    let _ = writeln!(out, "parts:   {parts:?}");
    let _ = writeln!(out, "servers: mesh-authz = {} serve --config <temp> (warm, rate, overload: the quickstart as shipped, listening on ephemeral ports; warm also without its audit section; cold, envoy: the same with the rsa-a test key in its JWKS, as the bench signs tokens; memory: a bench-only config with a fake Gerrit, no audit); no-op baseline = this bench binary {} (tonic, multi-thread runtime, TCP_NODELAY, every Check OK with an empty OkHttpResponse)",
        servers::mesh_authz_binary().display(), servers::NOOP_FLAG);
    let _ = writeln!(out, "request: Istio-like CheckRequest, GET {}{}, {} bytes serialized ({} framed) with alice's RS256 token ({} bytes); {} bytes without a token",
        requests::HOST, requests::PATH, warm.len(), warm.len() + 5, bench.token.len(), deny.len());
    let _ = writeln!(out, "commands:");
    let _ = writeln!(
        out,
        "  warm:   {} (after a {}-request warm-up run with the same settings; {} rounds alternating between the servers; ratios are medians of the back-to-back pairs)",
        s.h2load.command_line(),
        s.h2load_warmup,
        s.rounds
    );
    let _ = writeln!(
        out,
        "  rate:   {} (50 % and 80 % of the no-op's capacity, measured in the same run; {} rounds alternating)",
        h2load::Rate { settings: s.h2load, rps: 0, seconds: s.rate_seconds }.command_line(),
        s.rounds
    );
    let _ = writeln!(
        out,
        "  overload: h2load -D {} --rps <2 × capacity / 64> -c 64 -m 1024 (capacity measured first with the warm settings)",
        s.overload_seconds
    );
    let _ = writeln!(out, "  cold:   in-process tonic driver, {} connections × {} calls in flight, {} requests each a distinct RS256 token (and {} rounds of {} warm requests, after {} warm-up)",
        s.driver.connections, s.driver.concurrency, s.cold_tokens, s.rounds, s.driver_requests, s.driver_warmup);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(out, "  envoy:  envoy --concurrency 1 (ext_authz gRPC, failure_mode_allow false, direct_response 200); {} (after a {} s warm-up; {} rounds alternating between the targets; ratios are medians of the back-to-back pairs); {}",
        s.wrk.command_line(), s.wrk_warmup_seconds, s.wrk_rounds, envoy::Placement::from_env(cpus).describe());
    let _ = writeln!(out, "  memory: {} distinct EdDSA tokens from {} users (+{} warm-up), the same driver, fake Gerrit in the bench process, default cache bounds",
        s.memory.tokens, s.memory.users, s.memory.warmup_tokens);
    out
}

impl Bench {
    /// Starts mesh-authz with the quickstart as shipped but for its JWKS, which holds the
    /// `rsa-a` test key instead of the demo key (the bench signs its own tokens with it).
    fn start_quickstart_test_key(&self, part: &str) -> ServerProcess {
        let dir = self.dir.join(part);
        std::fs::create_dir_all(&dir).expect("creating the part's directory");
        let write = |name: &str, content: &str| {
            std::fs::write(dir.join(name), content)
                .unwrap_or_else(|e| panic!("writing {name}: {e}"))
        };
        write("jwks.json", &requests::rsa_a_jwks().to_string());
        write("config.yaml", &servers::quickstart_config(true));
        servers::start_mesh_authz(
            "mesh-authz quickstart (test key), audit on",
            &dir.join("config.yaml"),
            &dir.join("mesh-authz.log"),
            Some(&dir.join("stdout.jsonl")),
        )
    }

    /// Starts mesh-authz with the built-in quickstart config as shipped, its standard
    /// output (the audit lines) going to `part/stdout.jsonl`; or the same without audit.
    fn start_quickstart(&self, part: &str, audit: bool) -> ServerProcess {
        let name = if audit {
            "mesh-authz quickstart, audit on"
        } else {
            "mesh-authz quickstart, audit off"
        };
        self.start_quickstart_with_env(part, audit, name, &[])
    }

    /// Like [`Bench::start_quickstart`], as `name` with `env` added to its environment.
    fn start_quickstart_with_env(
        &self,
        part: &str,
        audit: bool,
        name: &'static str,
        env: &[(&str, String)],
    ) -> ServerProcess {
        let dir = self.dir.join(part);
        std::fs::create_dir_all(&dir).expect("creating the part's directory");
        let write = |name: &str, content: &[u8]| {
            std::fs::write(dir.join(name), content)
                .unwrap_or_else(|e| panic!("writing {name}: {e}"))
        };
        write(
            "jwks.json",
            include_bytes!("../../examples/quickstart/jwks.json"),
        );
        write("config.yaml", servers::quickstart_config(audit).as_bytes());
        servers::start_mesh_authz_with_env(
            name,
            &dir.join("config.yaml"),
            &dir.join("mesh-authz.log"),
            Some(&dir.join("stdout.jsonl")),
            env,
        )
    }

    /// Starts the no-op baseline.
    fn start_noop(&self, part: &str) -> ServerProcess {
        servers::start_noop(&self.dir.join(format!("noop-{part}.log")))
    }

    fn start_noop_undecoded(&self, part: &str) -> ServerProcess {
        servers::start_noop_undecoded(&self.dir.join(format!("noop-undecoded-{part}.log")))
    }

    /// Asserts `server`'s decision on `request` (the no-op allows everything) and returns
    /// it described.
    fn assert_decision(
        &self,
        server: &ServerProcess,
        request: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
        mesh_expects: Expect,
    ) -> String {
        let expect = if server.is_mesh_authz() {
            mesh_expects
        } else {
            Expect::Allow
        };
        let described =
            self.runtime
                .block_on(driver::assert_decision(server.grpc, request, expect));
        format!("{}: {described}", server.name)
    }

    /// Asserts each server's decision on `request`, then warms it up with h2load.
    fn check_and_warm(
        &self,
        servers: &[&ServerProcess],
        request: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
        expect: Expect,
        body: &Path,
    ) {
        for server in servers {
            let decision = self.assert_decision(server, request, expect);
            println!("decision checked first: {decision}");
            self.h2load_warmup(server, body);
        }
    }

    /// h2load: a warm-up run, unwarmed servers only.
    fn h2load_warmup(&self, server: &ServerProcess, body: &Path) {
        let log = self.dir.join("h2load.log");
        let warmup = self.scale.h2load.with_requests(self.scale.h2load_warmup);
        h2load::run(warmup, server.grpc, body, &log);
    }

    /// h2load: one measured run against `server` sending `body`.
    fn h2load(&self, server: &ServerProcess, body: &Path) -> Stats {
        let log = self.dir.join("h2load.log");
        metered(server, || {
            h2load::run(self.scale.h2load, server.grpc, body, &log)
        })
    }

    /// h2load: one run at a fixed rate against `server` sending `body`.
    fn h2load_rate(&self, server: &ServerProcess, rate: h2load::Rate, body: &Path) -> Stats {
        let log = self.dir.join("h2load.log");
        metered(server, || h2load::run_rate(rate, server.grpc, body, &log))
    }

    /// The driver: `total` calls to `server` with `bodies`.
    fn drive(&self, server: &ServerProcess, bodies: &Arc<Vec<Bytes>>, total: usize) -> Stats {
        std::thread::sleep(QUIET);
        let meter = CpuMeter::start(&[server.pid()]);
        let stats = self.runtime.block_on(driver::run(
            self.scale.driver,
            server.grpc,
            bodies.clone(),
            total,
        ));
        Stats {
            other_cpu: meter.and_then(|m| m.other_share()),
            ..stats
        }
    }
}

/// After a quiet pause, `run` with `server`'s CPU (and other processes') measured.
fn metered(server: &ServerProcess, run: impl FnOnce() -> Stats) -> Stats {
    std::thread::sleep(QUIET);
    let meter = CpuMeter::start(&[server.pid()]);
    let stats = run();
    Stats {
        other_cpu: meter.as_ref().and_then(|m| m.other_share()),
        process_cpu: meter
            .map(|m| vec![(report::SERVER.to_string(), m.cores(0))])
            .unwrap_or_default(),
        ..stats
    }
}

/// Writes `request` framed as h2load sends it to `dir/name` and returns the path.
fn body_file(
    dir: &Path,
    name: &str,
    request: &envoy_types::pb::envoy::service::auth::v3::CheckRequest,
) -> PathBuf {
    write_file(dir, name, &requests::frame(&requests::encode(request)))
}

/// Writes `content` to `dir/name` and returns the path.
fn write_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// The warm part: h2load against the quickstart as shipped (audit on), the same without
/// audit, and the no-op baseline; alice's cached demo token (allow) and no token (deny).
fn warm(bench: &mut Bench) {
    println!(
        "\n=== warm: h2load, the built-in quickstart config as shipped (audit to stdout, redirected to a file), alice's demo RS256 token already verified, groups from its static table\n"
    );
    let on = bench.start_quickstart("warm", true);
    let off = bench.start_quickstart("warm-audit-off", false);
    let noop = bench.start_noop("warm");
    let undecoded = bench.start_noop_undecoded("warm");
    let allow = common::istio_check_request(Some(&bench.alice));
    let deny = common::istio_check_request(None);
    let allow_body = body_file(&bench.dir, "allow.bin", &allow);
    let deny_body = body_file(&bench.dir, "deny.bin", &deny);
    let note = "HTTP-level: h2load does not read gRPC trailers; the decision was asserted with a gRPC client first";
    let variants = [
        ("allow", &allow, &allow_body, Expect::Allow, 0.85),
        (
            "deny (no token)",
            &deny,
            &deny_body,
            Expect::Unauthenticated,
            0.90,
        ),
    ];
    for (variant, request, body, expect, rps_target) in variants {
        let servers = [&on, &off, &noop, &undecoded];
        let mut rounds: [Vec<Stats>; 4] = Default::default();
        bench.check_and_warm(&servers, request, expect, body);
        // Rounds rotate the order, so that no server always runs first or after the
        // same one, and a drift of the machine's speed hits all alike.
        for round in 0..bench.scale.rounds {
            for k in 0..servers.len() {
                let i = (round + k) % servers.len();
                rounds[i].push(bench.h2load(servers[i], body));
            }
        }
        for (server, runs) in servers.iter().zip(&rounds) {
            let title = format!("warm {variant}, h2load: {}", server.name);
            println!("{}", report::rounds_block(&title, runs, note));
        }
        let [on_runs, off_runs, noop_runs, undecoded_runs] = &rounds;
        let part = format!("warm {variant}, quickstart, audit on");
        bench.rows.extend([
            Row::rps(&part, on_runs, noop_runs, Target::AtLeast(rps_target)),
            Row::p99(&part, on_runs, noop_runs, Target::AtMost(1.5)),
            Row::cpu(&part, on_runs, noop_runs, Target::AtMost(1.25)),
        ]);
        let part = format!("warm {variant}, quickstart, audit off");
        bench.rows.extend([
            Row::rps(&part, off_runs, noop_runs, Target::None),
            Row::cpu(&part, off_runs, noop_runs, Target::None),
        ]);
        let part = format!("warm {variant}: audit on / audit off (baseline column: audit off)");
        bench
            .rows
            .push(Row::rps(&part, on_runs, off_runs, Target::AtLeast(0.95)));
        let part = format!(
            "warm {variant}, quickstart, audit on (baseline column: a no-op that does not decode the request)"
        );
        bench.rows.extend([
            Row::rps(&part, on_runs, undecoded_runs, Target::None),
            Row::cpu(&part, on_runs, undecoded_runs, Target::None),
        ]);
    }
    bench.notes.push(audit_accounting(bench, &on, "warm"));
}

/// Whether the audit-on server wrote one line per check it answered: its audit lines
/// (after the writer's interval) against `mesh_authz_checks_total`, and the dropped count.
fn audit_accounting(bench: &Bench, server: &ServerProcess, part: &str) -> String {
    std::thread::sleep(Duration::from_millis(500));
    let text = bench.runtime.block_on(servers::metrics_text(server));
    let checks = servers::metric_sum(&text, |name| name.starts_with("mesh_authz_checks_total"));
    let dropped = servers::metric_sum(&text, |name| name == "mesh_authz_audit_dropped_total");
    let stdout = std::fs::read_to_string(bench.dir.join(part).join("stdout.jsonl"))
        .expect("reading the audit-on server's stdout");
    // The first line is the listen addresses, the rest audit lines.
    let lines = stdout.lines().skip(1).count();
    format!(
        "audit ({part}, quickstart audit on): {lines} audit lines for {checks} checks answered, {dropped} dropped (mesh_authz_audit_dropped_total){}",
        if lines as f64 == checks && dropped == 0.0 { "" } else { "  <- LINES LOST" }
    )
}

/// The rate part: h2load at a fixed offered rate, 50 % and 80 % of the no-op's capacity
/// measured in the same run, against the quickstart as shipped and the no-op.
fn rate(bench: &mut Bench) {
    println!(
        "\n=== rate: h2load at a fixed offered rate (50 % and 80 % of the no-op's capacity, measured now), quickstart as shipped (audit on), alice's cached token\n"
    );
    let mesh = bench.start_quickstart("rate", true);
    let noop = bench.start_noop("rate");
    let allow = common::istio_check_request(Some(&bench.alice));
    let body = body_file(&bench.dir, "rate-allow.bin", &allow);
    let servers = [&mesh, &noop];
    bench.check_and_warm(&servers, &allow, Expect::Allow, &body);
    let capacity = bench.h2load(&noop, &body).rps;
    println!("no-op capacity now: {capacity:.0} checks/s");
    let note = "HTTP-level: h2load does not read gRPC trailers; the decision was asserted with a gRPC client first";
    for share in [0.5, 0.8] {
        let rate = h2load::Rate {
            settings: bench.scale.h2load,
            rps: (capacity * share) as u32,
            seconds: bench.scale.rate_seconds,
        };
        let mut rounds: [Vec<Stats>; 2] = Default::default();
        for round in 0..bench.scale.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                rounds[i].push(bench.h2load_rate(servers[i], rate, &body));
            }
        }
        let percent = (share * 100.0) as u32;
        for (server, runs) in servers.iter().zip(&rounds) {
            let title = format!(
                "rate {percent} % ({} checks/s offered), h2load: {}",
                rate.rps, server.name
            );
            println!("{}", report::rounds_block(&title, runs, note));
        }
        let part = format!("rate {percent} % of no-op capacity, quickstart, audit on");
        bench.rows.extend([
            Row::p50(&part, &rounds[0], &rounds[1], Target::AtMost(1.2)),
            Row::p99(&part, &rounds[0], &rounds[1], Target::AtMost(1.5)),
            Row::cpu(&part, &rounds[0], &rounds[1], Target::None),
        ]);
    }
}

/// The soak part: the quickstart as shipped at full load (h2load's warm settings, for a
/// fixed time), then whether its audit file holds one line per check answered.
fn soak(bench: &mut Bench) {
    let seconds = bench.scale.soak_seconds;
    println!("\n=== soak: {seconds} s at full load, quickstart as shipped (audit on)\n");
    let mesh = bench.start_quickstart("soak", true);
    let allow = common::istio_check_request(Some(&bench.alice));
    let body = body_file(&bench.dir, "soak-allow.bin", &allow);
    bench.check_and_warm(&[&mesh], &allow, Expect::Allow, &body);
    let log = bench.dir.join("h2load.log");
    let stats = metered(&mesh, || {
        h2load::run_for(bench.scale.h2load, seconds, mesh.grpc, &body, &log)
    });
    println!(
        "{}",
        report::block(
            &format!("soak, h2load -D {seconds}: mesh-authz quickstart, audit on"),
            &stats,
            "HTTP-level"
        )
    );
    bench.notes.push(audit_accounting(bench, &mesh, "soak"));
}

/// The manifests part: h2load against `manifests/base/config.yaml` as shipped (pointed at
/// the bench's fake Gerrit and IdP) and the no-op, with a warm token of `user-1`, whose
/// groups come from the fake Gerrit and are cached after the first check.
fn manifests_part(bench: &mut Bench) {
    println!(
        "\n=== manifests: h2load, manifests/base/config.yaml as shipped (audit on, groups from a fake Gerrit, cached), a warm RS256 token\n"
    );
    let gerrit = bench.runtime.block_on(memory::FakeGerrit::start());
    let dir = bench.dir.join("manifests");
    std::fs::create_dir_all(&dir).expect("creating the part's directory");
    let token_file = write_file(&dir, "events-token", b"bench-events-token-0123456789");
    let config = write_file(
        &dir,
        "config.yaml",
        servers::manifests_config(&gerrit.url, &token_file).as_bytes(),
    );
    let mesh = servers::start_mesh_authz(
        "mesh-authz manifests config, audit on",
        &config,
        &dir.join("mesh-authz.log"),
        Some(&dir.join("stdout.jsonl")),
    );
    let noop = bench.start_noop("manifests");
    let mut claims = requests::claims("https://idp.example.com", "user-1", 1);
    claims["aud"] = "gerrit".into();
    let token = Signer::rsa_a().sign(&claims);
    let allow = common::istio_check_request(Some(&token));
    let body = body_file(&bench.dir, "manifests-allow.bin", &allow);
    let servers = [&mesh, &noop];
    bench.check_and_warm(&servers, &allow, Expect::Allow, &body);
    let mut rounds: [Vec<Stats>; 2] = Default::default();
    for round in 0..bench.scale.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            rounds[i].push(bench.h2load(servers[i], &body));
        }
    }
    let note = "HTTP-level: h2load does not read gRPC trailers; the decision was asserted with a gRPC client first";
    for (server, runs) in servers.iter().zip(&rounds) {
        let title = format!("manifests allow, h2load: {}", server.name);
        println!("{}", report::rounds_block(&title, runs, note));
    }
    let part = "warm allow, manifests/base config, audit on";
    bench.rows.extend([
        Row::rps(part, &rounds[0], &rounds[1], Target::AtLeast(0.85)),
        Row::p99(part, &rounds[0], &rounds[1], Target::AtMost(1.5)),
        Row::cpu(part, &rounds[0], &rounds[1], Target::AtMost(1.25)),
    ]);
}

/// The overload part: the quickstart as shipped, offered twice its own capacity (measured
/// first) over many connections and streams, as a gateway fleet would when a replica falls
/// behind.
fn overload(bench: &mut Bench) {
    println!(
        "\n=== overload: twice the capacity offered for {} s over 64 connections × 1024 streams, quickstart as shipped (audit on), alice's cached token\n",
        bench.scale.overload_seconds
    );
    let mesh = bench.start_quickstart("overload", true);
    let allow = common::istio_check_request(Some(&bench.alice));
    let body = body_file(&bench.dir, "overload-allow.bin", &allow);
    let decision = bench.assert_decision(&mesh, &allow, Expect::Allow);
    println!("decision checked first: {decision}");
    bench.h2load_warmup(&mesh, &body);
    let capacity = bench.h2load(&mesh, &body).rps;
    println!("capacity now (h2load -c 8 -m 16): {capacity:.0} checks/s");
    let counters = |bench: &Bench| {
        let text = bench.runtime.block_on(servers::metrics_text(&mesh));
        let sum = |prefix: &str| servers::metric_sum(&text, |n| n.starts_with(prefix));
        (
            sum("mesh_authz_checks_total"),
            sum("mesh_authz_checks_shed_total"),
            sum("mesh_authz_checks_expired_total"),
        )
    };
    let before = counters(bench);
    let rate = h2load::Rate {
        settings: h2load::Settings {
            requests: 0,
            connections: 64,
            streams: 1024,
        },
        rps: (2.0 * capacity) as u32,
        seconds: bench.scale.overload_seconds,
    };
    let log = bench.dir.join("overload.log");
    let stats = h2load::run_rate(rate, mesh.grpc, &body, &log);
    let after = counters(bench);
    let within = h2load::share_within(&log, Duration::from_millis(500));
    let seconds = stats.total.as_secs_f64();
    let decided = (after.0 - before.0) / seconds;
    let (_, peak_kib) = mesh.memory_kib();
    println!(
        "{}",
        report::block(
            "overload, h2load: mesh-authz quickstart, audit on",
            &stats,
            "HTTP-level: refused and expired checks are HTTP 200 with a gRPC error status"
        )
    );
    bench.rows.push(Row {
        part: "overload: 2× capacity offered, quickstart, audit on (baseline column: capacity)"
            .into(),
        metric: "decided/s",
        mesh: format!("{decided:.0}"),
        baseline: format!("{capacity:.0}"),
        ratio: decided / capacity,
        target: Target::AtLeast(0.9),
    });
    bench.notes.push(format!(
        "overload: {:.0} checks/s offered for {seconds:.0} s: {decided:.0} decided/s, {:.0} refused (max_concurrent_checks), {:.0} expired (grpc-timeout); {:.1} % of all answers within 0.5 s, p99 {}; peak RSS {} MiB",
        rate.rps as f64,
        after.1 - before.1,
        after.2 - before.2,
        within * 100.0,
        report::human(stats.p99),
        peak_kib / 1024
    ));
}

/// The cold part: the driver with the warm request, then with a distinct RS256 token per
/// request.
fn cold(bench: &mut Bench) {
    println!(
        "\n=== cold: in-process tonic driver ({} connections × {} in flight)\n",
        bench.scale.driver.connections, bench.scale.driver.concurrency
    );
    let n = bench.scale.cold_tokens;
    let t = Instant::now();
    let signer = Signer::rsa_a();
    // One more than sent: the extra token checks the decision without caching a sent one.
    let tokens = signer.sign_many(n + 1, |i| {
        let mut claims = requests::claims(ISSUER, "alice", i as u64 + 1);
        claims["sub"] = format!("alice-{i}").into();
        claims
    });
    let signing = t.elapsed();
    let cold_bodies: Arc<Vec<Bytes>> = Arc::new(
        tokens[..n]
            .iter()
            .map(|t| requests::encode(&requests::check_request(Some(t))))
            .collect(),
    );
    let probe = requests::check_request(Some(&tokens[n]));
    let warm = requests::check_request(Some(&bench.token));
    let warm_bodies = Arc::new(vec![requests::encode(&warm)]);
    println!(
        "signed {} RS256 tokens in {} (all cores)\n",
        n + 1,
        report::human(signing)
    );

    let mesh = bench.start_quickstart_test_key("cold");
    let noop = bench.start_noop("cold");
    let note = "gRPC status / CheckResponse status code, as the driver read them";
    let servers = [&mesh, &noop];
    for server in servers {
        println!(
            "decision checked first: {}",
            bench.assert_decision(server, &warm, Expect::Allow)
        );
        bench.drive(server, &warm_bodies, bench.scale.driver_warmup);
    }
    // Alternating rounds as in the warm part.
    let mut warm_rounds: [Vec<Stats>; 2] = [Vec::new(), Vec::new()];
    for round in 0..bench.scale.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let stats = bench.drive(servers[i], &warm_bodies, bench.scale.driver_requests);
            warm_rounds[i].push(stats);
        }
    }
    for (server, runs) in servers.iter().zip(&warm_rounds) {
        let title = format!("warm allow, driver: {}", server.name);
        println!("{}", report::rounds_block(&title, runs, note));
    }
    let mut cold_results = Vec::new();
    for server in [&mesh, &noop] {
        println!(
            "decision checked first (an unsent token): {}",
            bench.assert_decision(server, &probe, Expect::Allow)
        );
        let stats = bench.drive(server, &cold_bodies, n);
        let title = format!(
            "cold tokens (each request a new RS256 token), driver: {}",
            server.name
        );
        println!("{}", block(&title, &stats, note));
        cold_results.push(stats);
    }
    let one = std::slice::from_ref;
    let (w, c) = (&warm_rounds, &cold_results);
    bench.rows.push(Row::rps(
        "warm allow, driver",
        &w[0],
        &w[1],
        Target::AtLeast(0.8),
    ));
    bench.rows.push(Row::p99(
        "warm allow, driver",
        &w[0],
        &w[1],
        Target::AtMost(1.5),
    ));
    bench.rows.push(Row::rps(
        "cold tokens, driver",
        one(&c[0]),
        one(&c[1]),
        Target::AtLeast(0.3),
    ));
    bench.rows.push(Row::p99(
        "cold tokens, driver",
        one(&c[0]),
        one(&c[1]),
        Target::None,
    ));
}

/// The Envoy part: wrk through Envoy to mesh-authz, to the no-op baseline, and through
/// Envoy without ext_authz (for reference).
fn envoy_part(bench: &mut Bench) {
    println!("\n=== envoy: wrk → Envoy (1 worker, ext_authz gRPC) → Check server\n");
    let binary = match envoy::find() {
        Ok(binary) => binary,
        Err(why) => {
            println!("SKIPPED: {why}");
            bench.notes.push(format!("envoy part SKIPPED: {why}"));
            return;
        }
    };
    let mesh = bench.start_quickstart_test_key("envoy");
    let noop = bench.start_noop("envoy");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = envoy::Placement::from_env(cpus);
    println!("placement: {}", placement.describe());
    placement.pin_other(mesh.pid());
    placement.pin_other(noop.pid());
    let wrk = bench.scale.wrk;
    let note = "HTTP-level, from wrk";
    let targets: [(&str, Option<&ServerProcess>); 3] = [
        ("Envoy + mesh-authz", Some(&mesh)),
        ("Envoy + no-op baseline", Some(&noop)),
        ("Envoy without ext_authz (reference)", None),
    ];
    // One Envoy per target, all started and checked first, then alternating rounds: one
    // wrk run is noisy on two shared cores, and a drift hits every target alike.
    let mut envoys = Vec::new();
    for (name, server) in targets {
        let envoy = bench.runtime.block_on(envoy::Envoy::start(
            &binary,
            server.map(|s| s.grpc),
            &bench.dir,
            &placement,
        ));
        let with_token = bench
            .runtime
            .block_on(envoy::probe(envoy.listener, Some(&bench.token)));
        let without = bench.runtime.block_on(envoy::probe(envoy.listener, None));
        println!("checked first: {name}: HTTP {with_token} with alice's token, HTTP {without} without a token");
        assert_eq!(with_token, 200, "{name}: alice's request must be allowed");
        if server.is_some_and(|s| s.is_mesh_authz()) {
            assert_eq!(
                without, 401,
                "{name}: a request without a token must be refused (401)"
            );
        }
        wrk.run(
            envoy.listener,
            &bench.token,
            bench.scale.wrk_warmup_seconds,
            &placement,
        );
        envoys.push((name, server, envoy));
    }
    let mut rounds: Vec<Vec<Stats>> = vec![Vec::new(); envoys.len()];
    for round in 0..bench.scale.wrk_rounds {
        // Every other round in reverse order, so that no target always follows another.
        let mut order: Vec<usize> = (0..envoys.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let ((_, server, envoy), runs) = (&envoys[i], &mut rounds[i]);
            std::thread::sleep(QUIET);
            let mut pids = vec![envoy.pid()];
            pids.extend(server.map(|s| s.pid()));
            let meter = CpuMeter::start(&pids);
            let stats = wrk.run(envoy.listener, &bench.token, wrk.seconds, &placement);
            let mut process_cpu = Vec::new();
            if let Some(meter) = &meter {
                process_cpu.push(("Envoy".to_string(), meter.cores(0)));
                if let Some(server) = server {
                    process_cpu.push((server.name.to_string(), meter.cores(1)));
                }
                process_cpu.push(("wrk".to_string(), meter.children_cores()));
            }
            runs.push(Stats {
                other_cpu: meter.and_then(|m| m.other_share()),
                process_cpu,
                ..stats
            });
        }
    }
    for ((name, _, envoy), runs) in envoys.iter().zip(&rounds) {
        let title = format!("envoy, wrk: {name}");
        print!("{}", report::rounds_block(&title, runs, note));
        let counters = bench.runtime.block_on(envoy.authz_counters());
        println!("Envoy ext_authz counters at the end: {counters}\n");
    }
    drop(envoys);
    let ratios: Vec<String> = rounds[0]
        .iter()
        .zip(&rounds[1])
        .map(|(m, b)| format!("{:.2}", m.rps / b.rps))
        .collect();
    println!(
        "req/s ratio per round (mesh-authz / no-op, back to back): {}\n",
        ratios.join(" ")
    );
    bench.rows.push(Row::rps(
        "envoy, wrk",
        &rounds[0],
        &rounds[1],
        Target::AtLeast(0.9),
    ));
    bench
        .rows
        .push(Row::p99("envoy, wrk", &rounds[0], &rounds[1], Target::None));
    let alone = report::median_by_rps(rounds[2].clone());
    bench.notes.push(format!(
        "Envoy without ext_authz (same wrk settings): {:.0} req/s, p99 {}.",
        alone.rps,
        report::human(alone.p99)
    ));
}

/// The browser session part: the quickstart as shipped (audit on) with browser sign-in on
/// its routes (a bench-only addition: the quickstart has no IdP), checks by alice's session
/// cookie against checks by her bearer token on the same server and route; then 100,000
/// distinct sessions through it, and its memory.
fn session_part(bench: &mut Bench) {
    println!(
        "\n=== session: h2load, the quickstart with browser sign-in (audit on): alice's session cookie against her bearer token, same server and route\n"
    );
    let dir = bench.dir.join("session");
    std::fs::create_dir_all(&dir).expect("creating the part's directory");
    write_file(&dir, "session-key", common::SESSION_KEY.as_bytes());
    write_file(
        &dir,
        "jwks.json",
        include_bytes!("../../examples/quickstart/jwks.json"),
    );
    let config = write_file(
        &dir,
        "config.yaml",
        common::with_browser_sign_in(&servers::quickstart_config(true)).as_bytes(),
    );
    let mesh = servers::start_mesh_authz(
        "mesh-authz quickstart + browser sign-in, audit on",
        &config,
        &dir.join("mesh-authz.log"),
        Some(&dir.join("stdout.jsonl")),
    );
    let cookie = |user: &str| format!("__Host-mesh-authz={}", common::sealed_session(user));
    let with_headers = |path: &str, headers: &[(&str, &str)]| {
        common::istio::check_request(
            common::istio::Shape::Gateway,
            "GET",
            "gerrit.example.com",
            path,
            headers,
        )
    };
    // The warm part's route and request (team-a, groups injected, dynamic metadata).
    let team_a = "/a/projects/team-a/branches?n=25";
    let alice_cookie = cookie("alice");
    let by_session = with_headers(team_a, &[("cookie", &alice_cookie)]);
    let bearer = format!("Bearer {}", bench.alice);
    let by_token = with_headers(team_a, &[("authorization", &bearer)]);
    let session_body = body_file(&bench.dir, "session-allow.bin", &by_session);
    let token_body = body_file(&bench.dir, "session-bearer.bin", &by_token);
    for (request, body) in [(&by_session, &session_body), (&by_token, &token_body)] {
        let decision = bench.assert_decision(&mesh, request, Expect::Allow);
        println!("decision checked first: {decision}");
        bench.h2load_warmup(&mesh, body);
    }
    let mut rounds: [Vec<Stats>; 2] = Default::default();
    // Twice the other parts' rounds: the two differ by less than one run's noise here.
    for round in 0..bench.scale.rounds * 2 {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let body = if i == 0 { &session_body } else { &token_body };
            rounds[i].push(bench.h2load(&mesh, body));
        }
    }
    let note = "HTTP-level: h2load does not read gRPC trailers; the decision was asserted with a gRPC client first";
    for (what, runs) in ["session cookie", "bearer token"].iter().zip(&rounds) {
        let title = format!("session part, h2load: {what}");
        println!("{}", report::rounds_block(&title, runs, note));
    }
    let part = "warm allow by browser session (baseline column: bearer token, same server)";
    bench.rows.extend([
        Row::rps(part, &rounds[0], &rounds[1], Target::AtLeast(0.95)),
        Row::cpu(part, &rounds[0], &rounds[1], Target::AtMost(1.05)),
    ]);

    // 100,000 distinct sessions, each checked once, on the route for any signed-in user.
    let sessions = bench.scale.memory.users;
    let bodies: Vec<Bytes> = (0..sessions)
        .map(|i| {
            let c = cookie(&format!("session-user-{i}"));
            Bytes::from(prost::Message::encode_to_vec(&with_headers(
                "/c/42",
                &[("cookie", &c)],
            )))
        })
        .collect();
    let (rss_before, _) = mesh.memory_kib();
    let stats = bench.runtime.block_on(driver::run(
        bench.scale.driver,
        mesh.grpc,
        Arc::new(bodies),
        sessions,
    ));
    let (rss, peak) = mesh.memory_kib();
    memory::assert_all_allowed(&stats, "distinct sessions");
    println!(
        "{sessions} distinct sessions: {:.0} checks/s, p99 {:.2} ms",
        stats.rps,
        stats.p99.as_secs_f64() * 1000.0
    );
    bench.notes.push(format!(
        "session: mesh-authz VmRSS {:.1} MiB (peak {:.1} MiB) after {sessions} distinct sessions, {:.1} MiB before (cache_max_entries 100000).",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    ));
}

/// The memory part: RSS after a million distinct tokens with default cache bounds.
fn memory_part(bench: &mut Bench) {
    println!("\n=== memory: mesh-authz with default cache bounds (token_cache 100000, gerrit.cache_max_users 10000)\n");
    let dir = bench.dir.join("memory");
    std::fs::create_dir_all(&dir).expect("creating the memory part's directory");
    let (section, rss) =
        bench
            .runtime
            .block_on(memory::run(bench.scale.memory, bench.scale.driver, &dir));
    println!("{section}");
    bench.notes.push(format!(
        "memory: mesh-authz VmRSS {:.1} MiB after {} distinct tokens from {} users (default cache bounds).",
        rss as f64 / 1024.0,
        bench.scale.memory.tokens,
        bench.scale.memory.users
    ));
}

/// The traces part: the quickstart as shipped (audit on) exporting every Check's spans
/// over OTLP/gRPC to a sink process, against the same with export off, and the no-op.
fn traces_part(bench: &mut Bench) {
    println!(
        "\n=== traces: h2load, the quickstart as shipped (audit on) with OTLP export on (OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_TRACES_SAMPLER=always_on: a Check span and a token span per check; and traceidratio 0.1) against the same with export off\n"
    );
    let sink = servers::start_otlp_sink(&bench.dir.join("otlp-sink.log"));
    let off = bench.start_quickstart("traces-off", true);
    let traced = |part: &str, name: &'static str, sampler: &[(&str, String)]| {
        let mut env = vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", sink.grpc),
        )];
        env.extend(sampler.iter().map(|(k, v)| (*k, v.clone())));
        bench.start_quickstart_with_env(part, true, name, &env)
    };
    let all = traced(
        "traces-all",
        "mesh-authz quickstart, audit on, traces on (100 %)",
        &[("OTEL_TRACES_SAMPLER", "always_on".into())],
    );
    let tenth = traced(
        "traces-tenth",
        "mesh-authz quickstart, audit on, traces on (10 %)",
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio".into()),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1".into()),
        ],
    );
    let noop = bench.start_noop("traces");
    let allow = common::istio_check_request(Some(&bench.alice));
    let body = body_file(&bench.dir, "traces-allow.bin", &allow);
    let servers = [&all, &tenth, &off, &noop];
    bench.check_and_warm(&servers, &allow, Expect::Allow, &body);
    let mut rounds: [Vec<Stats>; 4] = Default::default();
    for round in 0..bench.scale.rounds * 2 {
        for k in 0..servers.len() {
            let i = (round + k) % servers.len();
            rounds[i].push(bench.h2load(servers[i], &body));
        }
    }
    let note = "HTTP-level: h2load does not read gRPC trailers; the decision was asserted with a gRPC client first";
    for (server, runs) in servers.iter().zip(&rounds) {
        let title = format!("traces part, h2load: {}", server.name);
        println!("{}", report::rounds_block(&title, runs, note));
    }
    let [all_runs, tenth_runs, off_runs, noop_runs] = &rounds;
    let part = "warm allow, traces on at 100 % / traces off (baseline column: traces off)";
    bench.rows.extend([
        Row::rps(part, all_runs, off_runs, Target::AtLeast(0.90)),
        Row::cpu(part, all_runs, off_runs, Target::None),
    ]);
    let part = "warm allow, traces on at 10 % / traces off (baseline column: traces off)";
    bench.rows.extend([
        Row::rps(part, tenth_runs, off_runs, Target::None),
        Row::cpu(part, tenth_runs, off_runs, Target::None),
    ]);
    let part = "warm allow, quickstart audit on, traces off";
    bench.rows.extend([
        Row::rps(part, off_runs, noop_runs, Target::None),
        Row::cpu(part, off_runs, noop_runs, Target::None),
    ]);
    // At saturation the collector process takes its share of this machine's two cores
    // from the server and h2load. At a fixed offered rate, as a gateway's authorizer
    // runs, there is room for it: what traces cost a check shows without that.
    let capacity = report::median_by_rps(off_runs.clone()).rps;
    let rate = h2load::Rate {
        settings: bench.scale.h2load,
        rps: (capacity * 0.5) as u32,
        seconds: bench.scale.rate_seconds,
    };
    let pair = [&all, &off];
    let mut at_rate: [Vec<Stats>; 2] = Default::default();
    for round in 0..bench.scale.rounds * 2 {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            at_rate[i].push(bench.h2load_rate(pair[i], rate, &body));
        }
    }
    for (server, runs) in pair.iter().zip(&at_rate) {
        let title = format!(
            "traces part, rate 50 % of traces-off capacity ({} checks/s offered), h2load: {}",
            rate.rps, server.name
        );
        println!("{}", report::rounds_block(&title, runs, note));
    }
    let part = "traces on at 100 % / traces off, at 50 % of traces-off capacity (baseline column: traces off)";
    bench.rows.extend([
        Row::p50(part, &at_rate[0], &at_rate[1], Target::AtMost(1.10)),
        Row::p99(part, &at_rate[0], &at_rate[1], Target::None),
        Row::cpu(part, &at_rate[0], &at_rate[1], Target::AtMost(1.10)),
    ]);
    std::thread::sleep(Duration::from_secs(6));
    for server in [&all, &tenth] {
        let text = bench.runtime.block_on(servers::metrics_text(server));
        let sample = |name: &str| servers::metric_sum(&text, |n| n == name);
        let checks = servers::metric_sum(&text, |name| name.starts_with("mesh_authz_checks_total"));
        bench.notes.push(format!(
            "traces ({}): {checks} checks, {} spans exported, {} dropped (queue full), {} in failed exports",
            server.name,
            sample("mesh_authz_trace_spans_exported_total"),
            sample("mesh_authz_trace_spans_dropped_total"),
            sample("mesh_authz_trace_spans_export_failed_total"),
        ));
    }
    drop(sink);
}

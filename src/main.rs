//! The `mesh-authz` command line: `serve`, `validate`, `check`; and for developers
//! `login`, `logout`, `credential` (git) and `kubectl-credential`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_authz::authorize::{Authorizer, Verdict};
use mesh_authz::config::{self, Config};
use mesh_authz::credential;
use mesh_authz::ext_authz::denial_body;
use mesh_authz::policy::overlap::{self, Finding};
use mesh_authz::policy::HeaderChanges;
use mesh_authz::request::RequestView;
use mesh_authz::telemetry::{self, LogFormat};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mesh-authz",
    version,
    about = "External authorization for Envoy and Istio: JWT identity, Gerrit groups, route policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Envoy's ext_authz Check (gRPC) and the admin port.
    Serve {
        /// Config file; without it, the built-in quickstart config (demo only).
        #[arg(long, short, env = "MESH_AUTHZ_CONFIG")]
        config: Option<PathBuf>,
        /// Log line format.
        #[arg(
            long,
            value_enum,
            default_value = "text",
            env = "MESH_AUTHZ_LOG_FORMAT"
        )]
        log_format: LogFormat,
    },
    /// Check a config file and report every problem; exits non-zero if there is any.
    ///
    /// Unreachable routes are problems; routes that lose some requests to an earlier,
    /// more general route are warnings.
    Validate {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Decide one request without a server and explain the decision.
    ///
    /// Exit status: 0 allowed, 1 denied, 3 cannot decide, 2 bad usage or config.
    Check(CheckArgs),
    /// Sign in for git and kubectl through the gateway (OAuth device grant): prints a
    /// code to approve in a browser, then stores a refresh token (mode 0600).
    Login {
        /// The gateway host, as in the client config (needed when it lists several).
        host: Option<String>,
        /// Client config; default `~/.config/mesh-authz/client.yaml`.
        #[arg(long, env = "MESH_AUTHZ_CLIENT_CONFIG")]
        client_config: Option<PathBuf>,
        /// Do not open a browser; only print the page and the code.
        #[arg(long)]
        no_browser: bool,
    },
    /// Forget the stored sign-in for a gateway.
    Logout {
        /// The gateway host (needed when the client config lists several).
        host: Option<String>,
        /// Client config; default `~/.config/mesh-authz/client.yaml`.
        #[arg(long, env = "MESH_AUTHZ_CLIENT_CONFIG")]
        client_config: Option<PathBuf>,
    },
    /// git's credential helper: `git config --global
    /// credential.https://HOST.helper 'mesh-authz credential'`.
    Credential {
        /// The operation git asks for: get, store or erase.
        operation: String,
        /// Client config; default `~/.config/mesh-authz/client.yaml`.
        #[arg(long, env = "MESH_AUTHZ_CLIENT_CONFIG")]
        client_config: Option<PathBuf>,
    },
    /// kubectl's exec credential plugin (`users[].user.exec` in a kubeconfig).
    KubectlCredential {
        /// The gateway host; default: the cluster's server when the kubeconfig sets
        /// `provideClusterInfo: true`.
        #[arg(long)]
        host: Option<String>,
        /// Client config; default `~/.config/mesh-authz/client.yaml`.
        #[arg(long, env = "MESH_AUTHZ_CLIENT_CONFIG")]
        client_config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Config file; without it, the built-in quickstart config.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Bearer token (use --token-file to keep it out of shell history).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Send the token as git does: the password of HTTP Basic (for routes with
    /// `token_from: [basic]`).
    #[arg(long)]
    basic: bool,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Host (`:authority`).
    #[arg(long)]
    host: String,
    /// Path, optionally with a query string.
    #[arg(long, default_value = "/")]
    path: String,
    /// Extra request header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The calling workload's identity, as Envoy's `source.principal`
    /// (e.g. spiffe://cluster.local/ns/ci/sa/runner).
    #[arg(long)]
    principal: Option<String>,
    /// An Envoy `context_extensions` entry, `key=value` (repeatable), as the Envoy route or
    /// virtual host that sends the request would set it.
    #[arg(long = "context-extension", value_name = "KEY=VALUE")]
    context_extensions: Vec<String>,
}

/// mimalloc rather than the system allocator: a warm Check allocates a few dozen small
/// strings and maps, and with glibc's malloc allocation was a fifth of its instructions
/// (callgrind: 73.6k → 61.7k instructions per Check with mimalloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve { config, log_format } => runtime.block_on(serve(config, log_format)),
        Command::Validate { config } => validate(&config),
        Command::Check(args) => runtime.block_on(check(args)),
        Command::Login {
            host,
            client_config,
            no_browser,
        } => {
            let done = runtime.block_on(credential::commands::login(
                client_config.as_deref(),
                host.as_deref(),
                !no_browser,
            ));
            return credential_exit(done);
        }
        Command::Logout {
            host,
            client_config,
        } => {
            let done = credential::commands::logout(client_config.as_deref(), host.as_deref());
            if let Ok(removed) = &done {
                eprintln!(
                    "{}",
                    if *removed {
                        "Signed out."
                    } else {
                        "Not signed in."
                    }
                );
            }
            return credential_exit(done.map(|_| ()));
        }
        Command::Credential {
            operation,
            client_config,
        } => {
            let outcome = runtime.block_on(credential::commands::git_helper(
                client_config.as_deref(),
                &operation,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
            ));
            return match outcome {
                credential::commands::Outcome::Done => ExitCode::SUCCESS,
                credential::commands::Outcome::Failed(e) => credential_exit(Err(e)),
            };
        }
        Command::KubectlCredential {
            host,
            client_config,
        } => {
            let exec_info = std::env::var("KUBERNETES_EXEC_INFO").ok();
            let done = runtime.block_on(credential::commands::kubectl_plugin(
                client_config.as_deref(),
                host.as_deref(),
                exec_info.as_deref(),
                &mut std::io::stdout().lock(),
            ));
            return credential_exit(done);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The exit of a developer command: its message on stderr, status 1.
fn credential_exit(done: Result<(), credential::CredentialError>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-authz: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-joined, leaving out a cause whose text the message
/// already carries (several errors say their cause in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => config::load(path)?,
        None => config::builtin()?,
    })
}

/// How long shutdown waits for queued spans to reach the collector (the SDK's default).
const TRACE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(path: Option<PathBuf>, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let config = load(path.as_ref())?;
    let traces =
        telemetry::traces::TraceExport::resolve(&config.traces, |name| std::env::var(name).ok())?;
    let export = traces.as_ref().map(|t| t.start()).transpose()?;
    telemetry::init_logging(log_format);
    if let Some(t) = &traces {
        tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, "exporting traces");
    }
    if path.is_none() {
        tracing::warn!(
            "serving the built-in quickstart config: its demo tokens are public, never expose this server"
        );
    }
    for (field, why) in config.timing_warnings() {
        tracing::warn!(field, "{why}");
    }
    let server = mesh_authz::server::start(&config).await?;
    // Printed for scripts and tests that start the server on port 0.
    println!(
        "grpc_listen={} admin_listen={}",
        server.grpc_addr, server.admin_addr
    );
    shutdown_signal().await;
    tracing::info!("signal received");
    server.shutdown().await?;
    if let Some(export) = export {
        // Sends what is queued, as the drained Checks' spans are.
        export.shutdown(TRACE_FLUSH_TIMEOUT).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    match config::load(path) {
        Ok(c) => {
            let file = path.display();
            let routes = c.routes.routes();
            let route = |i: usize| {
                let name = routes.get(i).map_or("", |r| &*r.name);
                format!("routes[{i}] ({name:?})")
            };
            let mut errors = 0;
            for finding in overlap::findings(&c.routes) {
                match finding {
                    // An unreachable route is a config mistake: its policy is never applied.
                    Finding::Unreachable { earlier, later } => {
                        errors += 1;
                        eprintln!(
                            "{file}: {}: unreachable: every request it matches is matched first by {}",
                            route(later),
                            route(earlier)
                        );
                    }
                    // Partial overlap can be intended; the operator decides.
                    Finding::Shadowed {
                        earlier,
                        later,
                        example,
                    } => eprintln!(
                        "{file}: warning: {}: requests such as {example} are decided by {} first",
                        route(later),
                        route(earlier)
                    ),
                    Finding::MidSegmentPrefix { route: i, prefix } => eprintln!(
                        "{file}: warning: {}: prefix {prefix:?} also matches {:?}: use `segment_prefix: {prefix}` for whole segments, or end the prefix with `/`",
                        route(i),
                        format!("{prefix}x"),
                    ),
                }
            }
            for (field, why) in c.timing_warnings() {
                eprintln!("{file}: warning: {field}: {why}");
            }
            if errors > 0 {
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{file}: ok ({} issuer(s), {} route(s))",
                c.issuers.len(),
                routes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = load(args.config.as_ref())?;
    let authorizer = Authorizer::from_config(&config, mesh_authz::server::http_client()?)?;
    if let Some(grants) = authorizer.grants() {
        // Read now, so the decision sees the grants in force (the server reads them at
        // start and on events).
        if let Err(e) = grants.refresh().await {
            eprintln!("warning: the grants file could not be read: {e}");
        }
    }
    for store in authorizer.verifier().stores() {
        if !store.is_loaded() {
            // One fetch, bounded, so a dead IdP gives an answer rather than a hang.
            let fetched = tokio::time::timeout(Duration::from_secs(10), store.refresh()).await;
            if let Ok(Err(e)) = fetched {
                eprintln!("warning: {}: {e}", store.issuer());
            }
        }
    }
    let mut headers = HashMap::new();
    for (number, h) in args.headers.iter().enumerate() {
        // Not repeated in the error: it may be `authorization=Bearer ...` mistyped.
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--header number {}: expected `name: value`", number + 1))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if let Some(t) = &token {
        let value = if args.basic {
            use base64::Engine;
            let pair = format!("git:{t}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        } else {
            format!("Bearer {t}")
        };
        headers.insert("authorization".into(), value);
    }
    let redactor = Redactor::new(&config, &args.path, &headers, token.as_deref());
    let mut context_extensions = HashMap::new();
    for entry in &args.context_extensions {
        let (key, value) = entry
            .split_once('=')
            .with_context(|| format!("--context-extension {entry:?}: expected `key=value`"))?;
        context_extensions.insert(key.to_string(), value.to_string());
    }
    let view = RequestView {
        principal: args.principal.as_deref().unwrap_or(""),
        context_extensions: (&context_extensions).into(),
        ..RequestView::http(&args.method, &args.host, &args.path, &headers)
    };
    let decision = authorizer.explain(&view).await;

    // Every line goes through the redactor: no step may print a credential.
    let say = |line: String| println!("{}", redactor.scrub(&line));
    say(format!(
        "request:  {} {}{}",
        args.method, args.host, redactor.path
    ));
    say(format!("config:   {}", config.source));
    say(format!(
        "route:    {}",
        decision.route.as_ref().map_or("(none)", |r| &r.name)
    ));
    if let Some(rule) = &decision.rule {
        say(format!("rule:     {rule}"));
    }
    if decision.dry_run() {
        say("dry-run:  yes: the server reports this decision and allows the request".into());
        match &decision.dry_run_headers {
            Some(changes) => {
                say("          the server passes it on as it came (Authorization and the route's remove_headers kept), without identity headers:".into());
                print_header_changes(changes, &say);
            }
            None => say("          an allowed request gets its identity headers; Authorization and the route's remove_headers are kept until the route enforces".into()),
        }
    }
    let code = match &decision.verdict {
        Verdict::Allow { headers, .. } => {
            say("decision: ALLOW".into());
            print_header_changes(headers, &say);
            ExitCode::SUCCESS
        }
        Verdict::Deny(denial) => {
            say(format!(
                "decision: DENY (HTTP {})",
                mesh_authz::ext_authz::denied_http_status(denial)
            ));
            say(format!("body:     {}", denial_body(denial, None)));
            ExitCode::from(1)
        }
        Verdict::Answer(answer) => {
            say(format!(
                "decision: BROWSER SIGN-IN answers HTTP {} ({})",
                answer.status, answer.reason
            ));
            if let Some(location) = &answer.location {
                // The IdP URL carries state and nonce: single-use, but not for a terminal.
                let shown = location.split('?').next().unwrap_or(location);
                say(format!("location: {shown}"));
            }
            ExitCode::from(1)
        }
        Verdict::Unavailable(reason) => {
            say(format!(
                "decision: CANNOT DECIDE (gRPC UNAVAILABLE: {reason})"
            ));
            ExitCode::from(3)
        }
    };
    say("why:".into());
    for step in &decision.steps {
        say(format!("  - {step}"));
    }
    Ok(code)
}

fn print_header_changes(changes: &HeaderChanges, say: &impl Fn(String)) {
    if changes.set.is_empty() && changes.remove.is_empty() {
        return;
    }
    say("upstream headers:".into());
    for (name, value) in &changes.set {
        say(format!("  set     {name}: {value}"));
    }
    for name in &changes.remove {
        say(format!("  remove  {name}"));
    }
}

/// Query parameters redacted in `check` output even when no route reads a token from them.
const COMMON_TOKEN_PARAMS: [&str; 4] = ["access_token", "id_token", "refresh_token", "token"];

/// Shorter values are not scrubbed from `check` output: they would garble it, and no
/// credential is that short.
const MIN_SCRUBBED_LEN: usize = 4;

/// Keeps credentials out of `check` output: the path with token-bearing query parameter
/// values replaced, and every credential the request carries (the token, `Authorization`,
/// cookies, headers a route reads a token from, query token values) scrubbed from each
/// line, whatever step would print it.
struct Redactor {
    path: String,
    secrets: Vec<String>,
}

impl Redactor {
    fn new(
        config: &Config,
        path: &str,
        headers: &HashMap<String, String>,
        token: Option<&str>,
    ) -> Self {
        use mesh_authz::authn::TokenSource;
        let mut query_names: Vec<&str> = COMMON_TOKEN_PARAMS.to_vec();
        let mut header_names = vec!["authorization", "proxy-authorization", "cookie"];
        for route in config.routes.routes() {
            for source in &route.token_sources {
                match source {
                    TokenSource::Query(name) => query_names.push(name),
                    TokenSource::Header(name) => header_names.push(name),
                    TokenSource::Bearer | TokenSource::Basic | TokenSource::Cookie(_) => {}
                }
            }
        }
        let mut secrets: Vec<String> = token.into_iter().map(str::to_string).collect();
        for name in header_names {
            let Some(value) = headers.get(name) else {
                continue;
            };
            secrets.push(value.clone());
            // The credential on its own too: after the scheme (`Bearer xyz`), or each
            // cookie's value (`a=1; b=2`). Not the scheme: "Bearer" is no secret.
            match name {
                "authorization" | "proxy-authorization" => {
                    if let Some((scheme, credential)) = value.trim().split_once(' ') {
                        secrets.push(credential.trim().to_string());
                        // Basic's password (a token, on `token_from: [basic]` routes).
                        if scheme.eq_ignore_ascii_case("basic") {
                            use base64::Engine;
                            let decoded = base64::engine::general_purpose::STANDARD
                                .decode(credential.trim())
                                .ok()
                                .and_then(|b| String::from_utf8(b).ok());
                            if let Some((_, password)) =
                                decoded.as_deref().and_then(|d| d.split_once(':'))
                            {
                                secrets.push(password.to_string());
                            }
                        }
                    }
                }
                "cookie" => secrets.extend(
                    value
                        .split([';', ','])
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(_, v)| v.trim().trim_matches('"').to_string()),
                ),
                _ => {}
            }
        }
        let shown = match path.split_once('?') {
            None => path.to_string(),
            Some((bare, query)) => {
                let pairs: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((name, value)) if query_names.contains(&name) => {
                            secrets.push(value.to_string());
                            secrets.push(
                                percent_encoding::percent_decode_str(value)
                                    .decode_utf8_lossy()
                                    .into_owned(),
                            );
                            format!("{name}=[redacted]")
                        }
                        _ => pair.to_string(),
                    })
                    .collect();
                format!("{bare}?{}", pairs.join("&"))
            }
        };
        secrets.retain(|s| s.len() >= MIN_SCRUBBED_LEN);
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            path: shown,
            secrets,
        }
    }

    fn scrub(&self, line: &str) -> String {
        let mut line = line.to_string();
        for secret in &self.secrets {
            if line.contains(secret.as_str()) {
                line = line.replace(secret.as_str(), "[redacted]");
            }
        }
        line
    }
}

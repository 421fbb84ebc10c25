//! `yinyi`: the node binary. `yinyi start` runs a node; `yinyi ctl …` operates a cluster;
//! `yinyi demo` shows a local cluster surviving a leader failure; `yinyi bench` measures it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use yinyi_api::parse_duration;
use yinyi_node::config::{NodeConfig, parse_peers};
use yinyi_node::{bench, bench_api, ctl, demo, server};

#[derive(Parser)]
#[command(
    name = "yinyi",
    version,
    about = "yinyi (银医通): a replicated transaction processor for hospital prepaid accounts"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Start(Box<StartArgs>),
    /// Operate a running cluster.
    Ctl {
        /// Any node of the cluster (host:port).
        #[arg(long, env = "YINYI_NODE", default_value = "127.0.0.1:7101")]
        node: String,
        #[command(flatten)]
        access: AccessArgs,
        #[command(subcommand)]
        command: CtlCmd,
    },
    /// Start a local 3-node cluster, drive transactions through a leader failure, and stop.
    Demo,
    /// Proposals per second and commit latency by number of concurrent proposers.
    Bench {
        /// Concurrency levels to measure, comma-separated.
        #[arg(long, default_value = "1,16,256", value_delimiter = ',')]
        proposers: Vec<usize>,
        /// How long each level runs (e.g. 10s, 500ms).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// A running cluster's nodes (host:port, comma-separated); a local one is started when
        /// absent.
        #[arg(long, value_delimiter = ',')]
        targets: Option<Vec<String>>,
        /// Do not measure leader failover (only with a local cluster).
        #[arg(long)]
        skip_failover: bool,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Run the bank simulator (a front-end processor with its own journal and faults).
    Banksim {
        /// Address to listen on (host:port).
        #[arg(long, env = "YINYI_BANKSIM_LISTEN", default_value = "127.0.0.1:7900")]
        listen: String,
        /// The simulator's journal (replayed at start).
        #[arg(long, env = "YINYI_BANKSIM_JOURNAL", default_value = "banksim.journal")]
        journal: PathBuf,
        /// Every card's opening balance, in yuan.
        #[arg(long, default_value = "100000")]
        initial_balance: String,
        /// Faults from the start: latency=20ms,jitter=10ms,decline=0.03,lost=0.02,drop=0.01,down=5s,
        /// mismatch=0.01 (answers for another amount), confirm=200ms,abandon=0.05 (the last two
        /// for third-party channel orders)
        #[arg(long, default_value = "")]
        faults: String,
        /// The link's fee on each collected line when it settles a day (清分结算), a fraction.
        #[arg(long, default_value = "0")]
        fee_rate: String,
        /// The reserve the link keeps back of a day's collections, a fraction.
        #[arg(long, default_value = "0")]
        reserve_rate: String,
        /// The cluster's nodes (host:port, comma-separated), told of settled channel orders
        /// (with --certs and a credential of role bank, or --insecure).
        #[arg(long, value_delimiter = ',')]
        notify: Vec<String>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Change a running bank simulator's faults (e.g. "decline=0.1,lost=0.02" or "clear").
    BankFaults {
        /// The simulator (host:port).
        #[arg(long, default_value = "127.0.0.1:7900")]
        bank: String,
        spec: String,
    },
    /// What a snapshot of a big state costs: builds a state of ACCOUNTS patients, exports a
    /// snapshot, installs it in a fresh process; prints sizes, times and peak memory.
    SnapshotProbe {
        #[arg(long, default_value_t = 100_000)]
        accounts: u64,
        /// Cash deposits per patient after the first.
        #[arg(long, default_value_t = 4)]
        deposits: u64,
        /// Where the stores and the snapshot go (a temporary directory when absent).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Internal: install this snapshot file into --dir and report.
        #[arg(long, hide = true)]
        install: Option<PathBuf>,
    },
    /// A long history through the real write path (ACCOUNTS patients, ENTRIES journal entries)
    /// on a local cluster, then under load: a node added by `ctl add-node` (snapshot install),
    /// a follower down for DOWN; then a backup after two leader changes restored into a fresh
    /// cluster. Prints sizes, times, peak memory and p99 per phase.
    History(yinyi_node::history::HistoryOptions),
    /// Print the API guide for client vendors (docs/API.md) from the node's own tables.
    ApiGuide,
    /// Requests per second and latency of PayBill and DepositCash through the public API.
    BenchApi {
        /// Concurrent clients, each a kiosk with its own patients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// How long to run (e.g. 10s).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Patients each client serves in turn.
        #[arg(long, default_value_t = 20)]
        patients_per_client: u64,
        /// Deposit once to every patient first and report the leader's live actors and memory.
        #[arg(long)]
        touch_all: bool,
        /// Extra flags for the local cluster's `yinyi start` (e.g. --max-live-actors=200000).
        #[arg(long, value_delimiter = ' ', allow_hyphen_values = true)]
        node_args: Vec<String>,
        /// A running cluster's nodes (host:port, comma-separated); a local one is started when
        /// absent.
        #[arg(long, value_delimiter = ',')]
        targets: Option<Vec<String>>,
        #[command(flatten)]
        access: AccessArgs,
    },
}

/// How a client reaches TLS nodes.
#[derive(Args)]
struct AccessArgs {
    /// A directory of `yinyi ctl certs` output: `ca.pem`, and `IDENTITY.pem` + key for the
    /// internal service.
    #[arg(long, env = "YINYI_CERTS", global = true)]
    certs: Option<PathBuf>,
    /// The certificate in --certs to show (an operator's or a node's).
    #[arg(long, env = "YINYI_IDENTITY", default_value = "admin", global = true)]
    identity: String,
    /// Credential for the public API, ID:SECRET.
    #[arg(long, env = "YINYI_CREDENTIAL", global = true)]
    credential: Option<String>,
    /// Plaintext (a node started --insecure).
    #[arg(long, global = true)]
    insecure: bool,
}

impl AccessArgs {
    fn access(self, node: String) -> Result<ctl::Access> {
        let tls = match (self.insecure, &self.certs) {
            (true, None) => None,
            (true, Some(_)) => bail!("--insecure and --certs contradict each other"),
            (false, None) => bail!(
                "give --certs DIR (ca.pem and an operator certificate; `yinyi ctl certs` makes \
                 them) or --insecure for a node started --insecure"
            ),
            (false, Some(dir)) => {
                let mut files = yinyi_api::TlsFiles::in_dir(dir, Some(&self.identity));
                if files.cert.as_ref().is_some_and(|c| !c.exists()) {
                    files.cert = None;
                    files.key = None;
                }
                Some(files.client()?)
            }
        };
        Ok(ctl::Access {
            node,
            tls,
            credential: self.credential,
        })
    }
}

#[derive(Subcommand)]
enum CredentialCmd {
    /// Print a credential for the nodes' config (`bootstrap_credentials`): the first admin's.
    Bootstrap {
        id: String,
        #[arg(long, default_value = "admin")]
        roles: String,
    },
    /// Create a credential in the cluster; prints its secret once.
    Add {
        id: String,
        /// kiosk, window, mobile, his, admin, auditor, bank (comma-separated).
        #[arg(long)]
        roles: String,
        /// The one terminal it may act for.
        #[arg(long)]
        terminal: Option<String>,
    },
    /// Revoke a credential for good.
    Revoke { id: String },
    /// Every credential, with roles, terminal and state.
    List,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Credentials of terminals, systems and operators.
    Credential {
        #[command(subcommand)]
        command: CredentialCmd,
    },
    /// A backup of the node (--node): a consistent copy of its database in DIR on its machine.
    Backup {
        /// An absolute path on the node's machine that does not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a new cluster's node from a backup (offline; run for each node, then start them).
    Restore {
        /// The backup directory (`ctl backup` made it).
        #[arg(long)]
        backup: PathBuf,
        /// The new node's data directory (it must hold no database yet).
        #[arg(long)]
        data: PathBuf,
        /// Every member of the new cluster: 1=HOST:PORT,2=HOST:PORT,…
        #[arg(long)]
        peers: String,
    },
    /// Make a local CA (when DIR has none) and certificates for nodes and operators.
    Certs {
        /// Where the PEM files go.
        #[arg(long, default_value = "tls")]
        out: PathBuf,
        /// Node certificates node1..nodeN.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// More names or addresses the nodes are reached by (comma-separated).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Operator (console) certificates.
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        operators: Vec<String>,
    },
    /// Leader, term, members, and each node's last log, committed and applied index and digest.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Add a node (ID=HOST:PORT): as a learner until it caught up, then as a voter.
    AddNode { spec: String },
    /// Remove a node from the cluster.
    RemoveNode { id: u64 },
    /// Build a snapshot on the node now.
    Snapshot,
    /// Make the node campaign for leadership now (leadership transfer).
    TransferLeader,
    /// The balance audit (稽核) on every node: balances against journals, the conservation law,
    /// overdraft limits, bank operations, digests. Exits non-zero on any problem.
    AuditBalances,
    /// Dormant accounts (久悬户): no activity for this many months, with their balances.
    Dormant {
        #[arg(long, default_value_t = 12)]
        months: u32,
        /// Accounts listed at most (the totals count them all).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The audit trail of sensitive operations (loss, replacement, refund, withdrawal, account
    /// controls, terminal administration): who, where, what, when, outcome.
    Audit {
        /// From this day (YYYY-MM-DD, China Standard Time) or time (milliseconds since 1970).
        #[arg(long)]
        since: String,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// The day's report: by kind and channel over every terminal, by terminal, shifts (日结)
    /// and cash collections.
    DailyReport {
        /// YYYY-MM-DD (China Standard Time).
        #[arg(long)]
        date: String,
    },
    /// Reconcile a business day with the bank (对账) and print the report.
    Recon {
        /// YYYY-MM-DD (China Standard Time).
        #[arg(long)]
        date: String,
    },
    /// Settlement (清分结算) of the bank link, day by day: what it owes for each day, what it
    /// paid, and every day not matched to the fen.
    Settlement {
        /// YYYY-MM-DD (China Standard Time), the first day.
        #[arg(long)]
        from: String,
        /// The last day (at most 31 days in all); `from` alone when not given.
        #[arg(long)]
        to: Option<String>,
    },
    /// The day's list for the insurance bureau (医保对账): every insured bill settled and every
    /// settlement reversed that day, with its split, and the totals of each part.
    InsuranceReport {
        /// YYYY-MM-DD (China Standard Time).
        #[arg(long)]
        date: String,
    },
    /// The business rules the ledger applies; with all three amounts, sets them (an admin
    /// credential; the operator is $USER; recorded in the audit trail).
    Rules {
        /// No single transaction moves more than this (yuan, e.g. 50000.00).
        #[arg(long, requires_all = ["min_first_deposit", "max_overdraft"])]
        single_txn_limit: Option<String>,
        /// The smallest first deposit when a card is issued with one.
        #[arg(long, requires = "single_txn_limit")]
        min_first_deposit: Option<String>,
        /// The largest overdraft (绿色通道) an account may be given.
        #[arg(long, requires = "single_txn_limit")]
        max_overdraft: Option<String>,
    },
}

/// Every key of the node's configuration; a flag or `YINYI_*` variable overrides the file.
#[derive(Args)]
struct StartArgs {
    /// A TOML file with any of the keys below (names with underscores).
    #[arg(long, env = "YINYI_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id, unique in the cluster.
    #[arg(long, env = "YINYI_ID")]
    id: Option<u64>,
    /// Address to serve gRPC on (host:port).
    #[arg(long, env = "YINYI_LISTEN")]
    listen: Option<String>,
    /// Data directory (RocksDB and snapshots).
    #[arg(long, env = "YINYI_DATA")]
    data: Option<PathBuf>,
    /// Every member at first start: 1=HOST:PORT,2=HOST:PORT,… The lowest id forms the cluster.
    #[arg(long, env = "YINYI_PEERS")]
    peers: Option<String>,
    /// Dial these addresses instead of the members' own over Raft: 2=HOST:PORT,… (proxies in
    /// failure tests, NAT).
    #[arg(long, env = "YINYI_PEER_ROUTES")]
    peer_routes: Option<String>,
    /// Join a running cluster (through `yinyi ctl add-node`) instead of forming one.
    #[arg(long, env = "YINYI_JOIN")]
    join: bool,
    #[arg(long, env = "YINYI_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "YINYI_ELECTION_TIMEOUT_MIN_MS")]
    election_timeout_min_ms: Option<u64>,
    #[arg(long, env = "YINYI_ELECTION_TIMEOUT_MAX_MS")]
    election_timeout_max_ms: Option<u64>,
    #[arg(long, env = "YINYI_INSTALL_SNAPSHOT_TIMEOUT_MS")]
    install_snapshot_timeout_ms: Option<u64>,
    /// Build a snapshot after this many Raft entries since the last one, at least…
    #[arg(long, env = "YINYI_SNAPSHOT_AFTER_ENTRIES")]
    snapshot_after_entries: Option<u64>,
    /// …and once the log written since the last snapshot is this percent of its size (0:
    /// entries alone decide; default 25).
    #[arg(long, env = "YINYI_SNAPSHOT_LOG_PERCENT")]
    snapshot_log_percent: Option<u64>,
    /// MiB of memory for the state's table blocks (RocksDB's block cache; default 256).
    #[arg(long, env = "YINYI_BLOCK_CACHE_MIB")]
    block_cache_mib: Option<u64>,
    /// Log entries kept behind a snapshot before purging.
    #[arg(long, env = "YINYI_LOG_ENTRIES_KEPT_AFTER_SNAPSHOT")]
    log_entries_kept_after_snapshot: Option<u64>,
    /// Bytes of a snapshot sent in one message (1024 to 33554432; default 4 MiB).
    #[arg(long, env = "YINYI_SNAPSHOT_CHUNK_BYTES")]
    snapshot_chunk_bytes: Option<u64>,
    /// Commands packed into one Raft entry at most (1–4096).
    #[arg(long, env = "YINYI_MAX_BATCH_COMMANDS")]
    max_batch_commands: Option<usize>,
    /// Bytes of commands in one Raft entry at most.
    #[arg(long, env = "YINYI_MAX_BATCH_BYTES")]
    max_batch_bytes: Option<usize>,
    /// Raft entries in flight at most.
    #[arg(long, env = "YINYI_MAX_INFLIGHT_ENTRIES")]
    max_inflight_entries: Option<usize>,
    /// Commands queued for batching at most; beyond it callers are told to retry.
    #[arg(long, env = "YINYI_MAX_QUEUED_COMMANDS")]
    max_queued_commands: Option<usize>,
    /// Stop an account or terminal actor idle this long (milliseconds).
    #[arg(long, env = "YINYI_ACTOR_IDLE_TIMEOUT_MS")]
    actor_idle_timeout_ms: Option<u64>,
    /// Live entity actors at most; the least recently used idle ones are stopped beyond it.
    #[arg(long, env = "YINYI_MAX_LIVE_ACTORS")]
    max_live_actors: Option<usize>,
    /// Serve Prometheus metrics over HTTP on this address (host:port).
    #[arg(long, env = "YINYI_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// The bank's front-end processor (host:port); without it bank-card operations are refused.
    #[arg(long, env = "YINYI_BANK_ADDR")]
    bank_addr: Option<String>,
    /// One bank call's timeout in milliseconds.
    #[arg(long, env = "YINYI_BANK_TIMEOUT_MS")]
    bank_timeout_ms: Option<u64>,
    /// When the leader reconciles the previous day with the bank (HH:MM, China Standard Time).
    #[arg(long, env = "YINYI_RECON_DAILY_AT")]
    recon_daily_at: Option<String>,
    /// Seconds after which an unresolved bank operation is reported for manual handling.
    #[arg(long, env = "YINYI_BANK_RESOLUTION_DEADLINE_S")]
    bank_resolution_deadline_s: Option<u64>,
    /// Milliseconds after which an unconfirmed third-party order is closed.
    #[arg(long, env = "YINYI_CHANNEL_ORDER_EXPIRY_MS")]
    channel_order_expiry_ms: Option<u64>,
    /// Seconds a pre-authorization (预授权) is held for its capture; then it is released.
    #[arg(long, env = "YINYI_AUTHORIZATION_EXPIRY_S")]
    authorization_expiry_s: Option<u64>,
    /// The bank link's fee on each collected line, a fraction (0.006 is 0.6%), for settlement.
    #[arg(long, env = "YINYI_BANK_FEE_RATE")]
    bank_fee_rate: Option<String>,
    /// The reserve the bank link keeps back of a day's collections for the next day's refunds,
    /// a fraction (0.05 is 5%), for settlement.
    #[arg(long, env = "YINYI_BANK_RESERVE_RATE")]
    bank_reserve_rate: Option<String>,
    /// The third-party channels a payment may name (comma-separated, e.g. WECHAT,ALIPAY).
    #[arg(long, env = "YINYI_CHANNEL_PROVIDERS")]
    channel_providers: Option<String>,
    /// Run the balance audit (稽核) on this node's state every this many seconds (0: never).
    #[arg(long, env = "YINYI_AUDIT_EVERY_S")]
    audit_every_s: Option<u64>,
    /// Days a request id guards against a retry (at least 1; default 30). Older request
    /// records are let go, except those in the audit trail; the journal is kept.
    #[arg(long, env = "YINYI_REQUEST_RETENTION_DAYS")]
    request_retention_days: Option<u64>,
    /// Requests per second one credential may make on a node (burst twice that; 0: no limit;
    /// default 200). Beyond it: RESOURCE_EXHAUSTED, reason RATE_LIMITED.
    #[arg(long, env = "YINYI_REQUESTS_PER_CREDENTIAL_PER_S")]
    requests_per_credential_per_s: Option<u64>,
    /// Free bytes the data disk needs to start (and to restart after it filled); below it the
    /// node waits for space, reporting `disk_free_bytes`.
    #[arg(long, env = "YINYI_MIN_FREE_DISK_BYTES")]
    min_free_disk_bytes: Option<u64>,
    /// The site's data key (64 hex characters, the same on every node; `yinyi ctl certs`
    /// writes one as data.key): holder names and phones are sealed with it at rest.
    #[arg(long, env = "YINYI_DATA_KEY_FILE")]
    data_key_file: Option<PathBuf>,
    /// The site CA (PEM).
    #[arg(long, env = "YINYI_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM).
    #[arg(long, env = "YINYI_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This node's key (PEM).
    #[arg(long, env = "YINYI_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Plaintext, no certificates: for a local demo or test only.
    #[arg(long, env = "YINYI_INSECURE")]
    insecure: bool,
    /// The bank link (plain TCP, as front-end processors speak it) runs over the bank's
    /// private line: allow a bank address that is not on this machine.
    #[arg(long, env = "YINYI_BANK_PRIVATE_LINE")]
    bank_private_line: bool,
    /// A credential accepted from the config, ID:ROLES:SHA256 (repeatable).
    #[arg(long = "bootstrap-credential", env = "YINYI_BOOTSTRAP_CREDENTIAL")]
    bootstrap_credentials: Vec<String>,
}

impl StartArgs {
    fn into_config(self) -> Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read config {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parse config {}", path.display()))?
            }
            None => NodeConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = v; } )* };
        }
        set!(
            id,
            listen,
            data,
            heartbeat_interval_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            install_snapshot_timeout_ms,
            snapshot_after_entries,
            snapshot_log_percent,
            block_cache_mib,
            log_entries_kept_after_snapshot,
            snapshot_chunk_bytes,
            max_batch_commands,
            max_batch_bytes,
            max_inflight_entries,
            max_queued_commands,
            actor_idle_timeout_ms,
            max_live_actors,
            metrics_listen,
            bank_addr,
            bank_timeout_ms,
            recon_daily_at,
            bank_resolution_deadline_s,
            channel_order_expiry_ms,
            authorization_expiry_s,
            bank_fee_rate,
            bank_reserve_rate,
            channel_providers,
            audit_every_s,
            request_retention_days,
            requests_per_credential_per_s,
            min_free_disk_bytes,
            data_key_file,
            tls_ca,
            tls_cert,
            tls_key
        );
        config.join |= self.join;
        config.insecure |= self.insecure;
        config.bank_private_line |= self.bank_private_line;
        config
            .bootstrap_credentials
            .extend(self.bootstrap_credentials.iter().cloned());
        if let Some(routes) = &self.peer_routes {
            config.peer_routes =
                parse_peers(routes).map_err(|e| anyhow::anyhow!("--peer-routes: {e}"))?;
        }
        if let Some(peers) = &self.peers {
            config.peers = parse_peers(peers).map_err(|e| anyhow::anyhow!("--peers: {e}"))?;
        }
        Ok(config)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Colour only on a terminal: a log file or a collector's pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    if std::env::var("YINYI_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(server::Stopped::Done) => std::process::ExitCode::SUCCESS,
        Ok(server::Stopped::Restart) => {
            // Its disk filled and has space again: the same process starts afresh on its data
            // (same pid, arguments and environment, so a supervisor sees no exit).
            use std::os::unix::process::CommandExt;
            let error = match std::env::current_exe() {
                Ok(exe) => std::process::Command::new(exe)
                    .args(std::env::args_os().skip(1))
                    .exec(),
                Err(e) => e,
            };
            eprintln!("yinyi: could not start again after the disk had space ({error}): exiting");
            // EX_TEMPFAIL: a supervisor that restarts on failure starts it again.
            std::process::ExitCode::from(75)
        }
        Err(e) => {
            // One clear line (with its causes) for operators; no backtrace.
            eprintln!("yinyi: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<server::Stopped> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let command = match cli.command {
        Cmd::Start(args) => {
            init_tracing();
            let stopped = runtime.block_on(server::run(args.into_config()?))?;
            // Blocking tasks (a RocksDB call) get a moment; the process may exec right after.
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            return Ok(stopped);
        }
        other => other,
    };
    runtime
        .block_on(async move {
        match command {
            Cmd::Start(_) => bail!("`start` runs above"),
            Cmd::Ctl {
                node,
                access,
                command,
            } => {
                let access = move || access.access(node);
                match command {
                    CtlCmd::Certs {
                        out,
                        nodes,
                        hosts,
                        operators,
                    } => {
                        let names: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
                        yinyi_node::certs::make(&out, &names, &operators, &hosts)
                    }
                    CtlCmd::Credential { command } => match command {
                        CredentialCmd::Bootstrap { id, roles } => {
                            ctl::credential_bootstrap(&id, &roles)
                        }
                        CredentialCmd::Add {
                            id,
                            roles,
                            terminal,
                        } => {
                            ctl::credential_add(&access()?, &id, &roles, terminal.as_deref()).await
                        }
                        CredentialCmd::Revoke { id } => {
                            ctl::credential_revoke(&access()?, &id).await
                        }
                        CredentialCmd::List => ctl::credential_list(&access()?).await,
                    },
                    CtlCmd::Backup { out } => ctl::backup(&access()?, &out).await,
                    CtlCmd::DailyReport { date } => ctl::daily_report(&access()?, &date).await,
                    CtlCmd::Restore {
                        backup,
                        data,
                        peers,
                    } => {
                        let members =
                            parse_peers(&peers).map_err(|e| anyhow::anyhow!("--peers: {e}"))?;
                        ctl::restore(&backup, &data, &members)
                    }
                    CtlCmd::Status { json } => ctl::status(&access()?, json).await,
                    CtlCmd::AddNode { spec } => ctl::add_node(&access()?, &spec).await,
                    CtlCmd::RemoveNode { id } => ctl::remove_node(&access()?, id).await,
                    CtlCmd::Snapshot => ctl::snapshot(&access()?).await,
                    CtlCmd::TransferLeader => ctl::elect(&access()?).await,
                    CtlCmd::Recon { date } => ctl::recon(&access()?, &date).await,
                    CtlCmd::Settlement { from, to } => {
                        ctl::settlement(&access()?, &from, to.as_deref().unwrap_or("")).await
                    }
                    CtlCmd::InsuranceReport { date } => {
                        ctl::insurance_report(&access()?, &date).await
                    }
                    CtlCmd::Rules {
                        single_txn_limit,
                        min_first_deposit,
                        max_overdraft,
                    } => {
                        let set = single_txn_limit.map(|limit| {
                            yinyi_api::v1::BusinessRules {
                                single_txn_limit: limit,
                                min_first_deposit: min_first_deposit.unwrap_or_default(),
                                max_overdraft: max_overdraft.unwrap_or_default(),
                                set: true,
                            }
                        });
                        ctl::rules(&access()?, set).await
                    }
                    CtlCmd::AuditBalances => ctl::audit_balances(&access()?).await,
                    CtlCmd::Audit { since, limit } => ctl::audit(&access()?, &since, limit).await,
                    CtlCmd::Dormant { months, limit } => {
                        ctl::dormant(&access()?, months, limit).await
                    }
                }
            }
            Cmd::Demo => demo::run().await,
            Cmd::ApiGuide => {
                print!("{}", yinyi_node::guide::render());
                Ok(())
            }
            Cmd::History(options) => yinyi_node::history::run(options).await,
            Cmd::Bench {
                proposers,
                duration,
                targets,
                skip_failover,
                access,
            } => {
                if proposers.is_empty() || proposers.contains(&0) {
                    bail!("--proposers needs positive numbers");
                }
                let tls = match &targets {
                    Some(_) => access.access(String::new())?.tls,
                    None => None,
                };
                bench::run(bench::BenchOptions {
                    proposers,
                    duration,
                    targets,
                    skip_failover,
                    tls,
                })
                .await
            }
            Cmd::Banksim {
                listen,
                journal,
                initial_balance,
                faults,
                fee_rate,
                reserve_rate,
                notify,
                access,
            } => {
                init_tracing();
                let terms = yinyi_ledger::SettlementTerms::parse(&fee_rate, &reserve_rate)
                    .map_err(|e| anyhow::anyhow!("--fee-rate, --reserve-rate: {e}"))?;
                let initial = yinyi_ledger::Money::parse(&initial_balance)
                    .map_err(|e| anyhow::anyhow!("--initial-balance: {e}"))?;
                let mut start_faults = yinyi_bank::Faults::default();
                start_faults
                    .apply_spec(&faults)
                    .map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
                let sim = std::sync::Arc::new(
                    yinyi_bank::BankSim::open(&journal, initial, start_faults)
                        .with_context(|| format!("open the journal {}", journal.display()))?,
                );
                sim.set_settlement_terms(terms);
                if !notify.is_empty() {
                    let access = access.access(String::new())?;
                    let mut config = yinyi_api::ClientConfig::new(notify);
                    config.tls = access.tls;
                    config.credential = access.credential;
                    let client = yinyi_api::Client::new(config)?;
                    sim.on_channel_result(std::sync::Arc::new(move |bank_ref, _state| {
                        let client = client.clone();
                        tokio::spawn(async move {
                            let notice = yinyi_api::v1::ThirdPartyNotice {
                                bank_ref: bank_ref.to_string(),
                                provider: "SIM".into(),
                            };
                            if let Err(e) = client.third_party_notify(notice).await {
                                tracing::warn!(%bank_ref, "channel notification failed: {e}");
                            }
                        });
                    }));
                }
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("listen on {listen}"))?;
                tracing::info!(%listen, faults = %sim.faults().describe(), "bank simulator serving");
                tokio::select! {
                    _ = sim.serve(listener) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                Ok(())
            }
            Cmd::BankFaults { bank, spec } => {
                let client = yinyi_bank::BankClient::new(yinyi_bank::BankClientConfig::new(bank));
                match client
                    .call(&yinyi_bank::Message::SetFaults { spec })
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                {
                    yinyi_bank::Message::FaultsAck { ok: true, text } => {
                        println!("faults now: {text}");
                        Ok(())
                    }
                    yinyi_bank::Message::FaultsAck { ok: false, text } => bail!("refused: {text}"),
                    other => bail!("unexpected answer {}", other.mti()),
                }
            }
            Cmd::SnapshotProbe {
                accounts,
                deposits,
                dir,
                install,
            } => match (install, dir) {
                (Some(snapshot), Some(dir)) => yinyi_node::snapshot_probe::install(&snapshot, &dir),
                (Some(_), None) => bail!("--install needs --dir"),
                (None, Some(dir)) => yinyi_node::snapshot_probe::run(accounts, deposits, &dir),
                (None, None) => {
                    let tmp = tempfile::tempdir()?;
                    yinyi_node::snapshot_probe::run(accounts, deposits, tmp.path())
                }
            },
            Cmd::BenchApi {
                clients,
                duration,
                patients_per_client,
                targets,
                touch_all,
                node_args,
                access,
            } => {
                if clients == 0 || patients_per_client == 0 {
                    bail!("--clients and --patients-per-client must be 1 or more");
                }
                let access = match &targets {
                    Some(_) => {
                        let a = access.access(String::new())?;
                        let mut config = yinyi_api::ClientConfig::new(Vec::new());
                        config.tls = a.tls;
                        config.credential = a.credential;
                        config
                    }
                    None => yinyi_api::ClientConfig::new(Vec::new()),
                };
                bench_api::run(bench_api::ApiBenchOptions {
                    clients,
                    duration,
                    targets,
                    patients_per_client,
                    touch_all,
                    node_args,
                    access,
                })
                .await
            }
        }
    })
    .map(|()| server::Stopped::Done)
}

//! `yinyi start`: opens the node's store, starts Raft, serves gRPC (internal service, health,
//! reflection), forms the cluster when this is the lowest peer id, and shuts down cleanly on
//! SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::time::Instant;
use yinyi_actors::{Actors, BankGateway, SagaConfig};
use yinyi_api::v1::admin_service_server::AdminServiceServer;
use yinyi_api::v1::his_service_server::HisServiceServer;
use yinyi_api::v1::inpatient_service_server::InpatientServiceServer;
use yinyi_api::v1::payment_service_server::PaymentServiceServer;
use yinyi_api::v1::terminal_service_server::TerminalServiceServer;
use yinyi_consensus::{Consensus, MembershipChange};

use crate::api::Gateway;
use crate::api::admin::Admin;
use crate::api::his::His;
use crate::api::payment::Payments;
use crate::api::terminal::Terminals;
use crate::backend::NodeBackend;
use crate::bank_link::NodeBankLink;

use crate::client::ClusterClient;
use crate::config::NodeConfig;

/// How long the forming node waits for every peer before it says so in the log (it keeps
/// waiting: a cluster must not form without its members).
const PEER_WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// How long a stopping leader tries to hand leadership over before it stops anyway.
const HAND_OVER_WITHIN: Duration = Duration::from_secs(3);

/// How long calls in flight may take to finish once storage failed (they cannot succeed).
const STORAGE_FAILED_GRACE: Duration = Duration::from_secs(2);

/// How a node's run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to stop (SIGTERM, Ctrl-C).
    Done,
    /// Its disk filled and has space again: start again on the same data (see [`crate::disk`]).
    Restart,
}

pub async fn run(config: NodeConfig) -> Result<Stopped> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("bad configuration: {e}"))?;
    let listen: std::net::SocketAddr = config
        .listen
        .parse()
        .with_context(|| format!("listen address {:?}", config.listen))?;
    if !config.metrics_listen.is_empty() {
        let addr: std::net::SocketAddr = config
            .metrics_listen
            .parse()
            .with_context(|| format!("metrics address {:?}", config.metrics_listen))?;
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .context("start the Prometheus exporter")?;
        tracing::info!(%addr, "serving Prometheus metrics");
    }
    let tls = config.tls();
    let mut consensus_config = config.consensus();
    if let Some(files) = &tls {
        consensus_config.tls = Some(files.client().context("TLS to the other nodes")?);
    } else {
        tracing::warn!(
            "running insecure: plaintext gRPC, no certificates (local demos and tests only)"
        );
    }
    let limit = consensus_config.rules.single_txn_limit;
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("create the data directory {}", config.data.display()))?;
    crate::disk::wait_for_space(&config.data, config.min_free_disk_bytes).await;
    let consensus = Consensus::start(consensus_config, &config.data).await?;
    tracing::info!(id = config.id, %listen, data = %config.data.display(), "node starting");

    let backend = NodeBackend::new(consensus.clone());
    let (ready_tx, ready_rx) = watch::channel(false);
    tokio::spawn(watch_leadership(consensus.clone(), ready_tx));
    tokio::spawn(crate::observe::raft_gauges(consensus.clone()));
    tokio::spawn(crate::observe::storage_gauges(consensus.clone()));
    let (storage_failed_tx, storage_failed) = watch::channel(None);
    tokio::spawn(crate::disk::watch(
        consensus.clone(),
        config.data.clone(),
        config.min_free_disk_bytes,
        storage_failed_tx,
    ));
    if config.audit_every_s > 0 {
        tokio::spawn(crate::observe::scheduled_audit(
            consensus.clone(),
            Duration::from_secs(config.audit_every_s),
        ));
    }
    let ready_rx_for_recovery = ready_rx.clone();
    let ready_rx_daily = ready_rx.clone();
    let ready_rx_prune = ready_rx.clone();
    let actors = Actors::start(Arc::new(backend.clone()), config.actors(), ready_rx)
        .await
        .map_err(|e| anyhow::anyhow!("start the actors: {e}"))?;
    let bank = if config.bank_addr.is_empty() {
        None
    } else {
        let mut bank_config = yinyi_bank::BankClientConfig::new(config.bank_addr.clone());
        bank_config.call_timeout = Duration::from_millis(config.bank_timeout_ms);
        let terms = config.settlement_terms().map_err(anyhow::Error::msg)?;
        let link = NodeBankLink::new(yinyi_bank::BankClient::new(bank_config), terms);
        let gateway = BankGateway::new(
            Arc::new(backend.clone()),
            actors.clone(),
            Arc::new(link),
            SagaConfig {
                resolution_deadline: Duration::from_secs(config.bank_resolution_deadline_s),
                channel_order_expiry: Duration::from_millis(config.channel_order_expiry_ms),
                authorization_expiry: Duration::from_secs(config.authorization_expiry_s),
                ..SagaConfig::default()
            },
        );
        tokio::spawn(gateway.clone().run_recovery(ready_rx_for_recovery));
        tracing::info!(bank = %config.bank_addr, "bank link configured");
        Some(gateway)
    };
    let has_bank = bank.is_some();
    let sealer = if config.data_key_file.as_os_str().is_empty() {
        tracing::warn!(
            "no --data-key-file: holder names and phones are stored in the clear \
             (in the log, the state, snapshots and backups)"
        );
        None
    } else {
        Some(Arc::new(crate::seal::Sealer::from_file(
            &config.data_key_file,
        )?))
    };
    let gateway = Gateway::new(
        consensus.clone(),
        backend,
        actors.clone(),
        limit,
        bank,
        sealer,
        config.providers().map_err(anyhow::Error::msg)?,
    );
    let (retention, prune_every) = crate::retention::schedule(config.request_retention_days);
    tokio::spawn(crate::retention::run(
        gateway.clone(),
        retention,
        prune_every,
        ready_rx_prune,
    ));
    if has_bank {
        let at = crate::recon::parse_time_of_day(&config.recon_daily_at)
            .map_err(|e| anyhow::anyhow!("recon_daily_at: {e}"))?;
        tokio::spawn(crate::recon::run_daily(gateway.clone(), at, ready_rx_daily));
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<yinyi_consensus::pb::internal_server::InternalServer<
            yinyi_consensus::server::InternalService,
        >>()
        .await;
    health_reporter
        .set_serving::<PaymentServiceServer<Payments>>()
        .await;
    health_reporter.set_serving::<HisServiceServer<His>>().await;
    health_reporter
        .set_serving::<InpatientServiceServer<crate::api::inpatient::Inpatients>>()
        .await;
    health_reporter
        .set_serving::<TerminalServiceServer<Terminals>>()
        .await;
    health_reporter
        .set_serving::<AdminServiceServer<Admin>>()
        .await;
    // Reflection in both versions: `v1`, and `v1alpha` for the clients that know only it
    // (Python's grpcio-reflection, older grpcurl and evans). The google.rpc types are there
    // too, so a tool can print a refusal's ErrorInfo.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(yinyi_api::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(yinyi_api::error::GOOGLE_RPC_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(yinyi_consensus::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("reflection service (v1alpha)")?;
    let reflection = reflection().build_v1().context("reflection service")?;

    // On SIGTERM a leader hands leadership over while it still answers (clients are told
    // where the new leader is), and only then stops serving.
    let hand_over_from = consensus.clone();
    let mut failed_rx = storage_failed.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            // Storage failed: stop serving at once (Raft has stopped; nothing to hand over).
            _ = failed_rx.wait_for(Option::is_some) => return,
        }
        if hand_over_from.is_leader() {
            let began = std::time::Instant::now();
            match hand_over_from.hand_over(HAND_OVER_WITHIN).await {
                Ok(next) => tracing::info!(
                    next,
                    ms = began.elapsed().as_millis() as u64,
                    "leadership handed over"
                ),
                Err(e) => tracing::warn!("leadership not handed over: {e}"),
            }
        }
    };
    let bootstrap = config
        .bootstrap_credentials
        .iter()
        .map(|c| crate::api::auth::parse_bootstrap(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("bootstrap credential: {e}"))?;
    let authenticator = Arc::new(crate::api::auth::Authenticator::new(
        consensus.store().clone(),
        bootstrap,
        config.requests_per_credential_per_s,
    ));
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(files) = &tls {
        builder = builder
            .tls_config(files.server().context("TLS for the API")?)
            .context("TLS for the API")?;
    }
    let payments = Arc::new(Payments {
        gateway: gateway.clone(),
    });
    let server = builder
        .layer(crate::api::auth::AuthLayer::new(authenticator.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(consensus.grpc_service(tls.is_some()))
        .add_service(PaymentServiceServer::from_arc(payments.clone()))
        .add_service(HisServiceServer::new(His {
            gateway: gateway.clone(),
            payments,
        }))
        .add_service(InpatientServiceServer::new(
            crate::api::inpatient::Inpatients {
                gateway: gateway.clone(),
            },
        ))
        .add_service(TerminalServiceServer::new(Terminals {
            gateway: gateway.clone(),
        }))
        .add_service(AdminServiceServer::new(Admin {
            gateway: gateway.clone(),
            authenticator,
        }))
        .serve_with_shutdown(listen, shutdown);

    let members = config.members();
    if !config.join && members.keys().next() == Some(&config.id) {
        let consensus = consensus.clone();
        tokio::spawn(async move { form_cluster(consensus, members).await });
    }

    let mut failed_rx = storage_failed.clone();
    let served = tokio::select! {
        served = server => served,
        // Calls in flight when storage failed cannot succeed: they get a short grace only.
        _ = async {
            let _ = failed_rx.wait_for(Option::is_some).await;
            tokio::time::sleep(STORAGE_FAILED_GRACE).await;
        } => Ok(()),
    };
    tracing::info!("stopping actors and raft");
    actors.stop().await;
    consensus.shutdown().await;
    served.context("gRPC server")?;
    let failure = storage_failed.borrow().clone();
    match failure {
        None => {
            tracing::info!("node stopped");
            Ok(Stopped::Done)
        }
        Some(failure) if failure.disk_full => {
            drop(consensus);
            crate::disk::wait_for_space(&config.data, config.min_free_disk_bytes).await;
            tracing::info!("starting again to catch up");
            Ok(Stopped::Restart)
        }
        Some(failure) => Err(anyhow::anyhow!(
            "storage failed on {} (the disk is not full): {}",
            config.data.display(),
            failure.error
        )),
    }
}

/// The lowest id forms the cluster, once, when every peer answers. A node with state (it was
/// in a cluster before) just rejoins: Raft finds its peers from its own log.
async fn form_cluster(consensus: Consensus, members: std::collections::BTreeMap<u64, String>) {
    if consensus.is_initialized().await {
        tracing::info!("rejoining the cluster from existing state");
        return;
    }
    let addrs: Vec<String> = members.values().cloned().collect();
    let mut client = ClusterClient::new(addrs.clone(), consensus.client_tls().cloned());
    let mut last_log = Instant::now();
    loop {
        let mut all = true;
        for addr in &addrs {
            if client.status(addr).await.is_err() {
                all = false;
            }
        }
        if all {
            break;
        }
        if last_log.elapsed() > PEER_WAIT_LOG_EVERY {
            tracing::info!(?addrs, "waiting for every peer before forming the cluster");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match consensus
        .change_membership(MembershipChange::Initialize { members })
        .await
    {
        Ok(()) => tracing::info!("cluster formed"),
        Err(e) => tracing::info!("not forming the cluster: {e}"),
    }
}

/// Tells the actors whether this node leads *and is ready*: after it became leader, a
/// linearizable read proves it has applied everything committed before its term, so the
/// actors' local reads (duplicate requests, caches) see all of it.
async fn watch_leadership(consensus: Consensus, ready: watch::Sender<bool>) {
    let mut metrics = consensus.raft().metrics();
    loop {
        let leading = consensus.is_leader();
        if leading && !*ready.borrow() {
            match consensus.linearizable_read().await {
                Ok(()) if consensus.is_leader() => {
                    tracing::info!("leading: the actors serve");
                    let _ = ready.send(true);
                }
                _ => {
                    // Not yet: try again shortly (metrics change with every heartbeat).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        } else if !leading && *ready.borrow() {
            tracing::info!("not leading any more: the actors stop");
            let _ = ready.send(false);
        }
        if metrics.changed().await.is_err() {
            let _ = ready.send(false);
            return;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}

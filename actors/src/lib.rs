//! yinyi-actors: the ractor actors that do a leader's work. A Router owns one `AccountActor`
//! per patient account and one `TerminalActor` per kiosk, window or channel, spawned on first
//! use, passivated when idle or beyond a cap, dropped and respawned after a panic, and all
//! stopped when the node stops leading. An entity's actor handles its commands one at a time:
//! it answers a retried request from the stored outcome, refuses early what its cached entity
//! already shows cannot succeed, and otherwise proposes through Raft, where the proposer packs
//! the commands of every actor into batched entries.
//!
//! The actors reach the replicated core only through [`Backend`]; the bank gateway, recovery
//! and reconciliation actors come with the bank link.

mod backend;
mod entity;
pub mod recon;
mod router;
pub mod saga;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::{oneshot, watch};
use yinyi_ledger::{AccountId, Command, Outcome, TerminalId};

pub use backend::{Backend, ProposeFailure};
pub use saga::{BankAnswer, BankGateway, BankLink, BankStatus, SagaConfig};

use entity::Work;
use router::{Router, RouterMsg};

/// How the actors live and die.
#[derive(Debug, Clone)]
pub struct ActorsConfig {
    /// An entity actor idle this long is stopped.
    pub idle_timeout: Duration,
    /// Live entity actors at most; beyond it the least recently used idle ones are stopped.
    pub max_live: usize,
    /// How often idle actors are looked for.
    pub sweep_every: Duration,
}

impl Default for ActorsConfig {
    fn default() -> ActorsConfig {
        ActorsConfig {
            idle_timeout: Duration::from_secs(60),
            max_live: 100_000,
            sweep_every: Duration::from_secs(1),
        }
    }
}

/// Whose actor runs a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityKey {
    Account(AccountId),
    Terminal(TerminalId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Account = 0,
    Terminal = 1,
}

impl Kind {
    pub(crate) fn of(key: &EntityKey) -> Kind {
        match key {
            EntityKey::Account(_) => Kind::Account,
            EntityKey::Terminal(_) => Kind::Terminal,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::Terminal => "terminal",
        }
    }
}

/// Why a command got no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// This node is not (or no longer) the leader: retry elsewhere.
    #[error("this node is not the leader")]
    NotLeader,
    /// The actor stopped or failed, leadership was lost while waiting, or Raft could not
    /// commit: retry with the same request id (it is applied at most once).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Too much queued: retry after a pause.
    #[error("overloaded")]
    Overloaded,
    /// The command cannot be proposed; retrying does not help.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl SubmitError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SubmitError::Invalid(_))
    }
}

/// Live entity actors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounts {
    pub accounts: usize,
    pub terminals: usize,
}

/// Lifetime counts of one kind of entity actor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    pub spawned: u64,
    pub passivated: u64,
    pub restarted: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActorStats {
    pub accounts: KindStats,
    pub terminals: KindStats,
}

/// Counters shared by the router and the handle.
#[derive(Default)]
pub(crate) struct Shared {
    live: [AtomicI64; 2],
    pub(crate) spawned: [AtomicU64; 2],
    pub(crate) passivated: [AtomicU64; 2],
    pub(crate) restarted: [AtomicU64; 2],
}

impl Shared {
    pub(crate) fn set_live(&self, kind: Kind, delta: i64) {
        let now = self.live[kind as usize].fetch_add(delta, Ordering::Relaxed) + delta;
        metrics::gauge!("actors_live", "kind" => kind.name()).set(now as f64);
    }

    fn kind(&self, kind: Kind) -> KindStats {
        let i = kind as usize;
        KindStats {
            spawned: self.spawned[i].load(Ordering::Relaxed),
            passivated: self.passivated[i].load(Ordering::Relaxed),
            restarted: self.restarted[i].load(Ordering::Relaxed),
        }
    }
}

fn stopped() -> SubmitError {
    SubmitError::Unavailable("the entity's actor stopped before answering".into())
}

/// The handle on this node's actors.
pub struct Actors<B: Backend> {
    router: ActorRef<RouterMsg>,
    leader: watch::Receiver<bool>,
    shared: Arc<Shared>,
    _backend: std::marker::PhantomData<fn() -> B>,
}

impl<B: Backend> Clone for Actors<B> {
    fn clone(&self) -> Self {
        Actors {
            router: self.router.clone(),
            leader: self.leader.clone(),
            shared: self.shared.clone(),
            _backend: std::marker::PhantomData,
        }
    }
}

impl<B: Backend> Actors<B> {
    /// Starts the Router. `leader` says whether this node leads *and is ready*: the node
    /// turns it true only once its state holds everything committed before its term.
    pub async fn start(
        backend: Arc<B>,
        config: ActorsConfig,
        leader: watch::Receiver<bool>,
    ) -> Result<Actors<B>, SubmitError> {
        let shared = Arc::new(Shared::default());
        let router = Router {
            backend,
            shared: shared.clone(),
            config,
        };
        let (router, _) = Actor::spawn(None, router, leader.clone())
            .await
            .map_err(|e| SubmitError::Unavailable(format!("cannot start the router: {e}")))?;
        // A lost leadership reaches the router as a message, so it stops every actor.
        let mut watch = leader.clone();
        let to_router = router.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let leading = *watch.borrow_and_update();
                if !leading && to_router.cast(RouterMsg::LeadershipLost).is_err() {
                    return;
                }
            }
            let _ = to_router.cast(RouterMsg::LeadershipLost);
        });
        Ok(Actors {
            router,
            leader,
            shared,
            _backend: std::marker::PhantomData,
        })
    }

    /// Runs `command` on its entity's actor and answers with the outcome.
    pub async fn submit(&self, key: EntityKey, command: Command) -> Result<Outcome, SubmitError> {
        if !*self.leader.borrow() {
            return Err(SubmitError::NotLeader);
        }
        let (reply, answer) = oneshot::channel();
        self.router
            .cast(RouterMsg::Submit {
                key,
                work: Work::One {
                    command: Box::new(command),
                    reply,
                },
            })
            .map_err(|_| SubmitError::Unavailable("the actors are stopped".into()))?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs `commands` on one entity's actor as one batch, proposed together; answers each
    /// command's outcome in order. For bulk work through one terminal (a preload or import).
    pub async fn submit_batch(
        &self,
        key: EntityKey,
        commands: Vec<Command>,
    ) -> Vec<Result<Outcome, SubmitError>> {
        let count = commands.len();
        if !*self.leader.borrow() {
            return vec![Err(SubmitError::NotLeader); count];
        }
        let (reply, answer) = oneshot::channel();
        if self
            .router
            .cast(RouterMsg::Submit {
                key,
                work: Work::Batch { commands, reply },
            })
            .is_err()
        {
            return vec![Err(SubmitError::Unavailable("the actors are stopped".into())); count];
        }
        answer.await.unwrap_or_else(|_| vec![Err(stopped()); count])
    }

    /// Whether this node leads and is ready now (sagas stop driving when it is not).
    pub fn is_leading(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn live(&self) -> LiveCounts {
        let get = |k: Kind| self.shared.live[k as usize].load(Ordering::Relaxed).max(0) as usize;
        LiveCounts {
            accounts: get(Kind::Account),
            terminals: get(Kind::Terminal),
        }
    }

    pub fn stats(&self) -> ActorStats {
        ActorStats {
            accounts: self.shared.kind(Kind::Account),
            terminals: self.shared.kind(Kind::Terminal),
        }
    }

    /// Stops the router and every entity actor.
    pub async fn stop(&self) {
        let _ = self
            .router
            .stop_and_wait(Some("node stopping".into()), Some(Duration::from_secs(5)))
            .await;
    }
}

//! The Router: owns the entity actors of this node (the leader). It spawns an actor on an
//! entity's first command, supervises it (a panicking actor is dropped and respawned on next
//! use), passivates idle ones and keeps their number under the cap, and stops them all when
//! this node stops leading.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;

use crate::backend::Backend;
use crate::entity::{EntityActor, EntityArgs, EntityMsg, Work};
use crate::{ActorsConfig, EntityKey, Kind, Shared, SubmitError};

// Submit is the hot variant and the big one: boxing it would allocate for every command.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RouterMsg {
    Submit {
        key: EntityKey,
        work: Work,
    },
    /// An entity actor finished one command.
    Done {
        key: EntityKey,
    },
    /// Passivate idle actors and enforce the cap.
    Sweep,
    /// This node stopped leading: stop every actor (unless it leads again already).
    LeadershipLost,
}

struct Child {
    actor: ActorRef<EntityMsg>,
    last_used: Instant,
    /// Commands forwarded and not yet done.
    pending: usize,
}

pub(crate) struct Router<B: Backend> {
    pub backend: Arc<B>,
    pub shared: Arc<Shared>,
    pub config: ActorsConfig,
}

pub(crate) struct RouterState {
    children: HashMap<EntityKey, Child>,
    keys: HashMap<ActorId, EntityKey>,
    /// Whether this node leads and is ready; read at every command.
    leading: watch::Receiver<bool>,
}

impl RouterState {
    fn remove(&mut self, key: &EntityKey, shared: &Shared) -> Option<Child> {
        let child = self.children.remove(key)?;
        self.keys.remove(&child.actor.get_id());
        shared.set_live(Kind::of(key), -1);
        Some(child)
    }
}

impl<B: Backend> Router<B> {
    async fn child(
        &self,
        myself: &ActorRef<RouterMsg>,
        state: &mut RouterState,
        key: &EntityKey,
    ) -> Result<ActorRef<EntityMsg>, SubmitError> {
        if let Some(child) = state.children.get(key) {
            return Ok(child.actor.clone());
        }
        let actor = EntityActor {
            backend: self.backend.clone(),
        };
        let args = EntityArgs {
            key: key.clone(),
            router: myself.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, actor, args, myself.get_cell())
            .await
            .map_err(|e| SubmitError::Unavailable(format!("cannot start the actor: {e}")))?;
        let kind = Kind::of(key);
        self.shared.set_live(kind, 1);
        metrics::counter!("actors_spawned_total", "kind" => kind.name()).increment(1);
        self.shared.spawned[kind as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.keys.insert(actor.get_id(), key.clone());
        state.children.insert(
            key.clone(),
            Child {
                actor: actor.clone(),
                last_used: Instant::now(),
                pending: 0,
            },
        );
        Ok(actor)
    }

    fn passivate(&self, state: &mut RouterState, key: &EntityKey) {
        if let Some(child) = state.remove(key, &self.shared) {
            child.actor.stop(Some("passivated".into()));
            let kind = Kind::of(key);
            metrics::counter!("actors_passivated_total", "kind" => kind.name()).increment(1);
            self.shared.passivated[kind as usize]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn sweep(&self, state: &mut RouterState) {
        let mut depth = [0usize; 2];
        for (key, child) in &state.children {
            depth[Kind::of(key) as usize] += child.pending;
        }
        for kind in [Kind::Account, Kind::Terminal] {
            metrics::gauge!("actors_mailbox_depth", "kind" => kind.name())
                .set(depth[kind as usize] as f64);
        }
        let now = Instant::now();
        let mut idle: Vec<(Instant, EntityKey)> = state
            .children
            .iter()
            .filter(|(_, c)| c.pending == 0)
            .map(|(k, c)| (c.last_used, k.clone()))
            .collect();
        idle.sort_by_key(|(at, _)| *at);
        let mut live = state.children.len();
        for (last_used, key) in idle {
            let expired = now.duration_since(last_used) >= self.config.idle_timeout;
            if expired || live > self.config.max_live {
                self.passivate(state, &key);
                live -= 1;
            } else {
                // Sorted oldest first: the rest are younger and the cap holds.
                break;
            }
        }
    }

    fn stop_all(&self, state: &mut RouterState) {
        let keys: Vec<EntityKey> = state.children.keys().cloned().collect();
        for key in keys {
            if let Some(child) = state.remove(&key, &self.shared) {
                child.actor.stop(Some("leadership lost".into()));
            }
        }
    }
}

impl<B: Backend> Actor for Router<B> {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = watch::Receiver<bool>;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        leading: watch::Receiver<bool>,
    ) -> Result<RouterState, ActorProcessingErr> {
        let every = self.config.sweep_every.max(Duration::from_millis(10));
        myself.send_interval(every, || RouterMsg::Sweep);
        Ok(RouterState {
            children: HashMap::new(),
            keys: HashMap::new(),
            leading,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Submit { key, work } => {
                if !*state.leading.borrow() {
                    work.fail(SubmitError::NotLeader);
                    return Ok(());
                }
                let actor = match self.child(&myself, state, &key).await {
                    Ok(actor) => actor,
                    Err(e) => {
                        work.fail(e);
                        return Ok(());
                    }
                };
                if let Some(child) = state.children.get_mut(&key) {
                    child.pending += 1;
                    child.last_used = Instant::now();
                }
                if let Err(e) = actor.send_message(EntityMsg::Run(work)) {
                    // The actor is stopping; the caller retries with the same request id.
                    if let ractor::MessagingErr::SendErr(EntityMsg::Run(work)) = e {
                        work.fail(SubmitError::Unavailable(
                            "the entity's actor is stopping".into(),
                        ));
                    }
                    state.remove(&key, &self.shared);
                }
            }
            RouterMsg::Done { key } => {
                if let Some(child) = state.children.get_mut(&key) {
                    child.pending = child.pending.saturating_sub(1);
                    child.last_used = Instant::now();
                }
            }
            RouterMsg::Sweep => self.sweep(state),
            RouterMsg::LeadershipLost => {
                if !*state.leading.borrow() {
                    self.stop_all(state);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RouterMsg>,
        event: SupervisionEvent,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(key) = state.keys.get(&cell.get_id()).cloned() {
                    tracing::error!(
                        ?key,
                        "entity actor failed: {error}; it restarts on next use"
                    );
                    state.remove(&key, &self.shared);
                    let kind = Kind::of(&key);
                    metrics::counter!("actors_restarted_total", "kind" => kind.name()).increment(1);
                    self.shared.restarted[kind as usize]
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                // Passivated or stopped: already removed; an unexpected stop is removed now.
                if let Some(key) = state.keys.get(&cell.get_id()).cloned() {
                    state.remove(&key, &self.shared);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

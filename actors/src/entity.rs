//! The entity actors: one per patient account and one per terminal. Each handles its commands
//! one at a time, answers a retried request from the stored outcome, refuses early what the
//! ledger's own rules refuse on the state as it is now, and otherwise proposes through Raft.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use yinyi_ledger::{Command, CommandBody, Outcome};

use crate::backend::{Backend, ProposeFailure};
use crate::router::RouterMsg;
use crate::{EntityKey, SubmitError};

pub(crate) type Reply = oneshot::Sender<Result<Outcome, SubmitError>>;
pub(crate) type BatchReply = oneshot::Sender<Vec<Result<Outcome, SubmitError>>>;

/// What a caller asks of an entity: one command, or a batch proposed together (a bulk
/// preload through one terminal: one Raft entry instead of one per command).
pub(crate) enum Work {
    One {
        /// Boxed: a command is several times the size of a batch's vector, and work moves
        /// through the router's and the entity's mailboxes.
        command: Box<Command>,
        reply: Reply,
    },
    Batch {
        commands: Vec<Command>,
        reply: BatchReply,
    },
}

impl Work {
    /// Answers every command of the work with `error`.
    pub(crate) fn fail(self, error: SubmitError) {
        match self {
            Work::One { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Work::Batch { commands, reply } => {
                let _ = reply.send(commands.iter().map(|_| Err(error.clone())).collect());
            }
        }
    }
}

pub(crate) enum EntityMsg {
    Run(Work),
}

pub(crate) struct EntityActor<B: Backend> {
    pub backend: Arc<B>,
}

pub(crate) struct EntityArgs {
    pub key: EntityKey,
    pub router: ActorRef<RouterMsg>,
}

pub(crate) struct EntityState {
    key: EntityKey,
    router: ActorRef<RouterMsg>,
}

/// The commands worth refusing before proposing: paying a bill, which a short balance most
/// often refuses. Sensitive commands (withdrawals, refunds, …) are always proposed, so the
/// audit trail records their refusals too; the rest are decided by `apply` alone.
fn worth_an_early_look(command: &Command) -> bool {
    matches!(command.body, CommandBody::PayBill { .. }) && !command.body.is_sensitive()
}

fn failure(e: ProposeFailure) -> SubmitError {
    match e {
        ProposeFailure::NotLeader => SubmitError::NotLeader,
        ProposeFailure::Unavailable(m) => SubmitError::Unavailable(m),
        ProposeFailure::Overloaded => SubmitError::Overloaded,
        ProposeFailure::Invalid(m) => SubmitError::Invalid(m),
    }
}

impl<B: Backend> EntityActor<B> {
    /// The answer known without proposing: a retry's stored outcome, or the refusal `apply`
    /// would give on the state as it is now (decided by the ledger's own rules, on a fresh
    /// read, never on a cached copy another actor's command may have made stale).
    fn known(&self, command: &Command) -> Option<Outcome> {
        if let Some(record) = self.backend.request(&command.terminal, &command.request) {
            if record.answers(command) {
                metrics::counter!("actors_duplicates_total").increment(1);
                return Some(record.outcome);
            }
            // A reused id: proposed, so `apply` records nothing new and answers REQUEST_ID_REUSED.
            return None;
        }
        if !worth_an_early_look(command) {
            return None;
        }
        self.backend.refusal(command).map(|rejection| {
            metrics::counter!("actors_early_rejections_total", "reason" => rejection.code.as_str())
                .increment(1);
            Outcome::Rejected(rejection)
        })
    }

    async fn run(&self, command: Command) -> Result<Outcome, SubmitError> {
        if let Some(outcome) = self.known(&command) {
            return Ok(outcome);
        }
        self.backend.propose(command).await.map_err(failure)
    }

    /// A batch: retries are answered from their records, the rest proposed at once (the
    /// proposer packs them into as few Raft entries as it can), in the batch's order. No early
    /// refusals: a command may depend on an earlier one of the same batch.
    async fn run_batch(&self, commands: Vec<Command>) -> Vec<Result<Outcome, SubmitError>> {
        let mut answers: Vec<Option<Result<Outcome, SubmitError>>> = Vec::new();
        let mut proposals = Vec::new();
        for command in commands {
            let retry = self
                .backend
                .request(&command.terminal, &command.request)
                .filter(|record| record.answers(&command));
            match retry {
                Some(record) => answers.push(Some(Ok(record.outcome))),
                None => {
                    answers.push(None);
                    proposals.push(self.backend.propose(command));
                }
            }
        }
        let mut proposed = futures::future::join_all(proposals).await.into_iter();
        answers
            .into_iter()
            .map(|known| {
                known.unwrap_or_else(|| {
                    proposed
                        .next()
                        .map(|r| r.map_err(failure))
                        .unwrap_or_else(|| Err(SubmitError::Unavailable("lost proposal".into())))
                })
            })
            .collect()
    }
}

impl<B: Backend> Actor for EntityActor<B> {
    type Msg = EntityMsg;
    type State = EntityState;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<EntityMsg>,
        args: EntityArgs,
    ) -> Result<EntityState, ActorProcessingErr> {
        Ok(EntityState {
            key: args.key,
            router: args.router,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<EntityMsg>,
        message: EntityMsg,
        state: &mut EntityState,
    ) -> Result<(), ActorProcessingErr> {
        let EntityMsg::Run(work) = message;
        // The caller may have given up; its answer is then only in the state.
        match work {
            Work::One { command, reply } => {
                let _ = reply.send(self.run(*command).await);
            }
            Work::Batch { commands, reply } => {
                let _ = reply.send(self.run_batch(commands).await);
            }
        }
        // The router counts this entity's work done (for passivation).
        let _ = state.router.cast(RouterMsg::Done {
            key: state.key.clone(),
        });
        Ok(())
    }
}

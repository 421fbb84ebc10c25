//! The entity actors: one per patient account and one per terminal. Each handles its commands
//! one at a time, answers a retried request from the stored outcome, refuses early what its
//! cached entity already shows cannot succeed, and otherwise proposes through Raft.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use yinyi_ledger::{
    Account, AccountStatus, BillStatus, Command, CommandBody, Outcome, ReasonCode, Rejection,
    Terminal, TerminalStatus,
};

use crate::backend::{Backend, ProposeFailure};
use crate::router::RouterMsg;
use crate::{EntityKey, SubmitError};

pub(crate) type Reply = oneshot::Sender<Result<Outcome, SubmitError>>;
pub(crate) type BatchReply = oneshot::Sender<Vec<Result<Outcome, SubmitError>>>;

/// What a caller asks of an entity: one command, or a batch proposed together (a bulk
/// preload through one terminal: one Raft entry instead of one per command).
pub(crate) enum Work {
    One {
        command: Command,
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

/// What an actor remembers of its entity: refreshed after every outcome.
pub(crate) enum Cache {
    Account(Option<Account>),
    Terminal(Option<Terminal>),
}

pub(crate) struct EntityState {
    key: EntityKey,
    router: ActorRef<RouterMsg>,
    cache: Cache,
}

fn load<B: Backend>(backend: &B, key: &EntityKey) -> Cache {
    match key {
        EntityKey::Account(id) => Cache::Account(backend.account(*id)),
        EntityKey::Terminal(id) => Cache::Terminal(backend.terminal(id)),
    }
}

/// A refusal the cached account already shows, when there is one. It is answered without
/// proposing and is not recorded: nothing happened, so a later retry with the same request id
/// is decided afresh. Only conditions `apply` also refuses are checked; when a command breaks
/// several rules, the reason given here may be another of them than `apply` would name first.
pub fn early_rejection<B: Backend>(
    backend: &B,
    account: &Account,
    command: &Command,
) -> Option<Rejection> {
    let frozen = || {
        Rejection::new(
            ReasonCode::AccountFrozen,
            format!("account {} is frozen", account.id),
        )
    };
    match &command.body {
        CommandBody::PayBill { bill, .. } => {
            if account.status == AccountStatus::Frozen {
                return Some(frozen());
            }
            let bill = backend.bill(bill)?;
            let available = account.balance.checked_add(account.overdraft_limit)?;
            if bill.account == account.id
                && bill.status == BillStatus::Unpaid
                && bill.pending_op.is_none()
                && bill.amount > available
            {
                return Some(Rejection::new(
                    ReasonCode::InsufficientFunds,
                    format!(
                        "bill {} of {} exceeds what account {} can pay ({})",
                        bill.id, bill.amount, account.id, available
                    ),
                ));
            }
            None
        }
        CommandBody::WithdrawCash { amount, .. } => {
            if account.status == AccountStatus::Frozen {
                return Some(frozen());
            }
            match amount {
                Some(amount) if *amount > account.balance && amount.is_positive() => {
                    Some(Rejection::new(
                        ReasonCode::InsufficientFunds,
                        format!(
                            "withdrawal of {amount} exceeds the balance {} of account {}",
                            account.balance, account.id
                        ),
                    ))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A card issued at a terminal that is out of service or retired: refused early, like
/// [`early_rejection`].
fn terminal_rejection(terminal: &Terminal, command: &Command) -> Option<Rejection> {
    let issued_here =
        matches!(command.body, CommandBody::IssueCard { .. }) && command.terminal == terminal.id;
    (issued_here && terminal.status != TerminalStatus::InService).then(|| {
        Rejection::new(
            ReasonCode::TerminalOutOfService,
            format!("terminal {} is {:?}", terminal.id, terminal.status),
        )
    })
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
    /// The answer known without proposing: a retry's stored outcome, or an early refusal.
    fn known(&self, state: &EntityState, command: &Command) -> Option<Outcome> {
        // A retry of a request already decided: its stored outcome, nothing proposed.
        if let Some(record) = self.backend.request(&command.request)
            && record.body == command.body
            && record.terminal == command.terminal
        {
            metrics::counter!("actors_duplicates_total").increment(1);
            return Some(record.outcome);
        }
        let early = match &state.cache {
            Cache::Account(Some(account)) => {
                early_rejection(self.backend.as_ref(), account, command)
            }
            Cache::Terminal(Some(terminal)) => terminal_rejection(terminal, command),
            _ => None,
        };
        early.map(|rejection| {
            metrics::counter!("actors_early_rejections_total", "reason" => rejection.code.as_str())
                .increment(1);
            Outcome::Rejected(rejection)
        })
    }

    async fn run(&self, state: &mut EntityState, command: Command) -> Result<Outcome, SubmitError> {
        if let Some(outcome) = self.known(state, &command) {
            return Ok(outcome);
        }
        let outcome = self.backend.propose(command).await.map_err(failure)?;
        state.cache = load(self.backend.as_ref(), &state.key);
        Ok(outcome)
    }

    /// A batch: what is known is answered, the rest proposed at once (the proposer packs them
    /// into as few Raft entries as it can), in the batch's order.
    async fn run_batch(
        &self,
        state: &mut EntityState,
        commands: Vec<Command>,
    ) -> Vec<Result<Outcome, SubmitError>> {
        let mut answers: Vec<Option<Result<Outcome, SubmitError>>> = Vec::new();
        let mut proposals = Vec::new();
        for command in commands {
            match self.known(state, &command) {
                Some(outcome) => answers.push(Some(Ok(outcome))),
                None => {
                    answers.push(None);
                    proposals.push(self.backend.propose(command));
                }
            }
        }
        let mut proposed = futures::future::join_all(proposals).await.into_iter();
        state.cache = load(self.backend.as_ref(), &state.key);
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
            cache: load(self.backend.as_ref(), &args.key),
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
                let _ = reply.send(self.run(state, command).await);
            }
            Work::Batch { commands, reply } => {
                let _ = reply.send(self.run_batch(state, commands).await);
            }
        }
        // The router counts this entity's work done (for passivation).
        let _ = state.router.cast(RouterMsg::Done {
            key: state.key.clone(),
        });
        Ok(())
    }
}

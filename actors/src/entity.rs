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

pub(crate) enum EntityMsg {
    Run { command: Command, reply: Reply },
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
    async fn run(&self, state: &mut EntityState, command: Command) -> Result<Outcome, SubmitError> {
        // A retry of a request already decided: its stored outcome, nothing proposed.
        if let Some(record) = self.backend.request(&command.request)
            && record.body == command.body
            && record.terminal == command.terminal
        {
            metrics::counter!("actors_duplicates_total").increment(1);
            return Ok(record.outcome);
        }
        let early = match &state.cache {
            Cache::Account(Some(account)) => {
                early_rejection(self.backend.as_ref(), account, &command)
            }
            Cache::Terminal(Some(terminal)) => terminal_rejection(terminal, &command),
            _ => None,
        };
        if let Some(rejection) = early {
            metrics::counter!("actors_early_rejections_total", "reason" => rejection.code.as_str())
                .increment(1);
            return Ok(Outcome::Rejected(rejection));
        }
        let outcome = self.backend.propose(command).await.map_err(failure)?;
        state.cache = load(self.backend.as_ref(), &state.key);
        Ok(outcome)
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
        let EntityMsg::Run { command, reply } = message;
        let answer = self.run(state, command).await;
        // The caller may have given up; its answer is then only in the state.
        let _ = reply.send(answer);
        // The router counts this entity's work done (for passivation).
        let _ = state.router.cast(RouterMsg::Done {
            key: state.key.clone(),
        });
        Ok(())
    }
}

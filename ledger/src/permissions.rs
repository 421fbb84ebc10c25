//! Who may submit what: for every command, the kinds of terminal it may come from. This is the
//! one table of "who may do what" on the ledger's side: `apply` refuses a command from any other
//! kind of terminal (`TERMINAL_NOT_ALLOWED`), and the API acts for a credential only through
//! terminals of its role's kind ([`Role::terminal_kind`]), with its method table tested against
//! this one, so a method a role may call is one the ledger lets that role's terminals do.

use crate::command::{CommandBody, EpisodeFunds, RefundTo};
use crate::credential::Role;
use crate::ids::TerminalKind;
use crate::model::{BankPurpose, External};

/// The kinds of terminal `body` may come from.
pub fn allowed_terminals(body: &CommandBody) -> &'static [TerminalKind] {
    use TerminalKind::*;
    match body {
        CommandBody::IssueCard { .. } | CommandBody::DepositCash { .. } => &[Kiosk, Window],
        CommandBody::StartBankOp {
            purpose, external, ..
        } => match (purpose, external) {
            (BankPurpose::TopUp | BankPurpose::PayBill { .. }, External::BankCard { .. }) => {
                &[Kiosk, Window, Mobile]
            }
            (BankPurpose::TopUp | BankPurpose::PayBill { .. }, External::ThirdParty { .. }) => {
                &[Mobile]
            }
            (BankPurpose::Refund { .. }, _) => &[Window, Kiosk, His],
            (BankPurpose::Withdraw, _) => &[Window, Kiosk],
            (BankPurpose::EpisodeDeposit { .. }, External::BankCard { .. }) => {
                &[Kiosk, Window, Mobile]
            }
            (BankPurpose::EpisodeDeposit { .. }, External::ThirdParty { .. }) => &[Mobile],
            // Started only by the discharge settlement itself, never asked for; holds and
            // captures only by their own commands (`AuthorizePayment`, `CapturePayment`).
            (
                BankPurpose::EpisodeRefund { .. }
                | BankPurpose::Authorization { .. }
                | BankPurpose::Capture { .. },
                _,
            ) => &[],
        },
        // Only the cluster's own sagas settle a bank operation, on the bank's answer: no
        // person and no console can complete a top-up the bank did not approve.
        CommandBody::CompleteBankOp { .. }
        | CommandBody::DeclineBankOp { .. }
        | CommandBody::MarkBankOpInDoubt { .. }
        | CommandBody::ReverseBankOp { .. }
        | CommandBody::PruneRequests { .. }
        | CommandBody::RecordAccess { .. }
        | CommandBody::RecordHisReconciliation { .. }
        | CommandBody::ExpireAuthorization { .. } => &[System],
        CommandBody::PostBill { .. }
        | CommandBody::PostInsuredBill { .. }
        | CommandBody::CancelBill { .. }
        | CommandBody::CancelBillPart { .. }
        | CommandBody::MarkInvoiced { .. }
        | CommandBody::OpenEpisode { .. }
        | CommandBody::PostEpisodeCharges { .. }
        | CommandBody::FinalizeEpisode { .. } => &[His],
        CommandBody::DepositToEpisode {
            from: EpisodeFunds::Cash,
            ..
        } => &[Kiosk, Window],
        CommandBody::DepositToEpisode {
            from: EpisodeFunds::Account { .. },
            ..
        } => &[Kiosk, Window, Mobile],
        CommandBody::SettleEpisode {
            rest_to: RefundTo::Account,
            ..
        } => &[Window, Kiosk],
        CommandBody::SettleEpisode {
            rest_to: RefundTo::Cash,
            ..
        } => &[Window],
        CommandBody::PayBill { .. } => &[Kiosk, Window, Mobile],
        // Mobile payment before the insurance card is read (the outpatient notes' flow).
        CommandBody::AuthorizePayment { .. }
        | CommandBody::CapturePayment { .. }
        | CommandBody::ReleaseAuthorization { .. } => &[Mobile],
        CommandBody::Refund { .. }
        | CommandBody::RefundToAccount { .. }
        | CommandBody::RefundBill {
            to: RefundTo::Account,
            ..
        } => &[Window, Kiosk, His],
        // Cash is paid out only by a person, from a window's open shift.
        CommandBody::RefundBill {
            to: RefundTo::Cash, ..
        } => &[Window],
        CommandBody::WithdrawCash { .. } => &[Window],
        CommandBody::ReportLoss { .. }
        | CommandBody::CancelLoss { .. }
        | CommandBody::ReplaceCard { .. } => &[Window],
        CommandBody::Freeze { .. }
        | CommandBody::Unfreeze { .. }
        | CommandBody::SetOverdraft { .. } => &[Window, Admin],
        CommandBody::RegisterTerminal { .. } | CommandBody::SetTerminalStatus { .. } => &[Admin],
        CommandBody::OpenShift | CommandBody::CloseShift => &[Window],
        CommandBody::CollectCash { .. } => &[Kiosk],
        CommandBody::RecordReconciliation { .. } | CommandBody::RecordMembership { .. } => {
            &[Admin, System]
        }
        CommandBody::PutCredential { .. }
        | CommandBody::RevokeCredential { .. }
        | CommandBody::RevokeBootstrapCredential { .. }
        | CommandBody::Adjust { .. }
        | CommandBody::SetRules { .. } => &[Admin],
    }
}

/// Commands a terminal that is out of service may still submit: closing the shift it had open
/// and emptying its cash box.
pub fn allowed_out_of_service(body: &CommandBody) -> bool {
    matches!(
        body,
        CommandBody::CloseShift | CommandBody::CollectCash { .. }
    )
}

impl Role {
    /// The kind of terminal a credential of this role acts through; `None` for roles that
    /// submit no commands (auditors read; the bank's notifier only notifies).
    pub fn terminal_kind(self) -> Option<TerminalKind> {
        match self {
            Role::Kiosk => Some(TerminalKind::Kiosk),
            Role::Window => Some(TerminalKind::Window),
            Role::Mobile => Some(TerminalKind::Mobile),
            Role::His => Some(TerminalKind::His),
            Role::Admin => Some(TerminalKind::Admin),
            Role::Auditor | Role::Bank => None,
        }
    }

    /// The roles that act through terminals of `kind` (none for the cluster's own `S-`).
    pub fn for_terminal(kind: TerminalKind) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.terminal_kind() == Some(kind))
    }
}
